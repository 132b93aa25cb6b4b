/**
 * RESERVATION-TOKENs across engines (RFC 8656 §7.2). A client redeems a token from another
 * 5-tuple than the one that reserved (the RTCP socket next to the RTP one), and engines that
 * serve one relay together (the relay's worker threads) each see their own share of 5-tuples:
 * the Allocate with the token may reach an engine that did not make the reservation. Such
 * engines share an exchange: the maker publishes each reservation, and the engine the Allocate
 * reaches takes it there, port and quota count together; the token stays single-use (the
 * maker's own redemption and its expiry withdraw it, and whichever comes first wins). The
 * engine that took it tells the maker ("reservation-taken", TurnServer.handleReservationTaken),
 * so the maker stops holding the port and counting the reservation at once.
 *
 * Without an exchange a server redeems only its own reservations (the default).
 */

/** A reservation as its maker publishes it. */
export interface PublishedReservation {
  /** Its RESERVATION-TOKEN (8 bytes). */
  readonly token: Uint8Array;
  readonly family: 4 | 6;
  readonly port: number;
  /** When it lapses, on the maker's clock. */
  readonly expiresAt: number;
  /** Who made it (whose quota counts it). */
  readonly principal: string;
}

/** A reservation as another engine learns it. */
export interface ExchangedReservation {
  /** The engine that made it (told with a "reservation-taken" output once it is taken). */
  readonly engine: number;
  readonly family: 4 | 6;
  /** The reserved port: the Allocate binds exactly this one. */
  readonly port: number;
  /**
   * The redeemer is the maker (the same principal): the reservation's count in the allocation
   * quota becomes the new allocation's. Otherwise take() gave the maker's count back and the
   * redeemer's own must be acquired.
   */
  readonly inherits: boolean;
}

export interface ReservationExchange {
  /**
   * This engine reserved `r.port` under `r.token`. Published again when the port moves (an
   * EVEN-PORT bind retried on another even port, before the token is sent). False: there is no
   * room to publish it (the reservation is refused).
   */
  publish(r: PublishedReservation): boolean;
  /**
   * This engine's reservation `token` ends here (redeemed here, lapsed, cancelled, shutdown):
   * true when it was still published, false when another engine took it meanwhile (its quota
   * count went with it, so this engine must not give the count back).
   */
  withdraw(token: Uint8Array): boolean;
  /** Another engine's live reservation `token`, as `principal` would redeem it; nothing changes. */
  peek(token: Uint8Array, principal: string, now: number): ExchangedReservation | undefined;
  /**
   * Take another engine's live reservation `token` for `principal` (single use): from now on
   * its port is this engine's to bind, and its quota count moved (see `inherits`). Undefined
   * when it is gone, lapsed, or this engine's own.
   */
  take(token: Uint8Array, principal: string, now: number): ExchangedReservation | undefined;
}
