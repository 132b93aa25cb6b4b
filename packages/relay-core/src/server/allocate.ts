/**
 * Allocate requests (RFC 8656 §7.2): an allocation already on the 5-tuple (437, or the same
 * success again for a retransmission), draining (300 or 508), REQUESTED-TRANSPORT (and RFC 6062
 * §5.1 for TCP allocations), DONT-FRAGMENT, RESERVATION-TOKEN, REQUESTED-ADDRESS-FAMILY and
 * ADDITIONAL-ADDRESS-FAMILY, EVEN-PORT; then pinned ports (pinned-ports.ts), the quotas (486 per
 * principal, 508 for the server), the ports (pinned, reserved, even with the next one reserved,
 * or any) and the new allocation, whose relay sockets relay-sockets.ts opens: the success goes
 * out once they are bound.
 */

import { constantTimeEqual } from "../auth/constant-time.js";
import type { Principal } from "../auth/credentials.js";
import { pinOfUsername } from "../auth/pinned-username.js";
import {
  hasAttribute,
  readAddressFamily,
  readBytes,
  readEvenPort,
  readRequestedTransport,
  readUint32,
} from "../codec/attributes.js";
import {
  AttributeType,
  ErrorCode,
  MessageClass,
  Method,
  TransportProtocol,
} from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { StunMessageBuilder } from "../codec/message-builder.js";
import type { AllocationId } from "../ids.js";
import {
  Allocation,
  type ClientEndpoint,
  type ClientRecord,
  desiredLifetime,
  type PortChoice,
} from "./allocation.js";
import type { AllocationContext, Allocations } from "./allocations.js";
import type { Authenticated } from "./authentication.js";
import type { RelayAddressConfig } from "./options.js";
import type { PinnedPorts } from "./pinned-ports.js";
import type { Reservation } from "./relay-port-pool.js";
import type { RelaySockets } from "./relay-sockets.js";
import type { ExchangedReservation } from "./reservation-exchange.js";
import type { Reply } from "./responses.js";

export class AllocateRequests {
  readonly #context: AllocationContext;
  readonly #allocations: Allocations;
  readonly #sockets: RelaySockets;
  readonly #pinned: PinnedPorts;
  #nextAllocationId = 1;

  constructor(
    context: AllocationContext,
    allocations: Allocations,
    sockets: RelaySockets,
    pinned: PinnedPorts,
  ) {
    this.#context = context;
    this.#allocations = allocations;
    this.#sockets = sockets;
    this.#pinned = pinned;
  }

  handle(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    auth: Authenticated,
    reply: Reply,
    now: number,
  ): void {
    const context = this.#context;
    const existing = client?.allocation;
    if (existing !== undefined) {
      if (constantTimeEqual(existing.transactionId, msg.transactionId)) {
        // A retransmission: the success again, or silence while the relay port is binding.
        if (existing.allocateResponse) {
          context.responder.transmit(
            endpoint,
            existing.allocateResponse,
            Method.Allocate,
            MessageClass.SuccessResponse,
            0,
          );
        }
        return;
      }
      reply.error(ErrorCode.AllocationMismatch);
      return;
    }
    if (this.#allocations.draining) {
      const alt = context.alternateServer;
      const why = { reason: "draining" };
      if (alt) {
        const fill = (b: StunMessageBuilder) => b.address(AttributeType.AlternateServer, alt);
        reply.error(ErrorCode.TryAlternate, fill, undefined, why);
      } else reply.error(ErrorCode.InsufficientCapacity, undefined, undefined, why);
      return;
    }
    const transport = readRequestedTransport(msg);
    if (transport === undefined) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (transport !== TransportProtocol.Udp && transport !== TransportProtocol.Tcp) {
      reply.error(ErrorCode.UnsupportedTransportProtocol);
      return;
    }
    const relayProtocol = transport === TransportProtocol.Tcp ? "tcp" : "udp";
    if (
      relayProtocol === "tcp" &&
      (endpoint.transport === "udp" ||
        hasAttribute(msg, AttributeType.DontFragment) ||
        hasAttribute(msg, AttributeType.EvenPort) ||
        hasAttribute(msg, AttributeType.ReservationToken))
    ) {
      // RFC 6062 §5.1: TCP allocations are made over TCP/TLS, without the UDP-only attributes.
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (hasAttribute(msg, AttributeType.DontFragment)) {
      // RFC 8656 §7.2: a server that cannot set DF treats DONT-FRAGMENT as unknown.
      reply.error(ErrorCode.UnknownAttribute, (b) =>
        b.unknownAttributes([AttributeType.DontFragment]),
      );
      return;
    }
    const evenPort = readEvenPort(msg);
    const reservationToken = readBytes(msg, AttributeType.ReservationToken);
    const requestedFamily = readAddressFamily(msg, AttributeType.RequestedAddressFamily);
    const additionalFamily = readAddressFamily(msg, AttributeType.AdditionalAddressFamily);
    if (
      requestedFamily === "invalid" ||
      additionalFamily === "invalid" ||
      (reservationToken !== undefined && evenPort !== undefined) ||
      (reservationToken !== undefined && reservationToken.length !== 8) ||
      (requestedFamily !== undefined && additionalFamily !== undefined) ||
      (reservationToken !== undefined &&
        (requestedFamily !== undefined || additionalFamily !== undefined)) ||
      additionalFamily === 4
    ) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const pin = pinOfUsername(auth.username);
    if (pin !== undefined && reservationToken !== undefined) {
      // The pinned port is the port: a RESERVATION-TOKEN names another one.
      reply.error(
        ErrorCode.BadRequest,
        undefined,
        "Bad Request: pinned credentials take no RESERVATION-TOKEN",
      );
      return;
    }
    if (pin?.port !== undefined && evenPort !== undefined) {
      // RFC 8656 §7.2: satisfy EVEN-PORT or refuse with 508. An even pinned port satisfies it
      // (coturn's uclient asks for one on every Allocate); the next port is never reserved, as
      // it may be another user's pin.
      const why =
        pin.port % 2 !== 0
          ? `pinned port ${pin.port} is odd`
          : evenPort.reserveNext
            ? "pinned credentials cannot reserve the next port"
            : undefined;
      if (why !== undefined) {
        reply.error(
          ErrorCode.InsufficientCapacity,
          undefined,
          `Insufficient Capacity: EVEN-PORT refused, ${why}`,
        );
        return;
      }
    }
    let families: (4 | 6)[];
    const familyErrors: { family: 4 | 6; code: number }[] = [];
    let reservation: Reservation | undefined;
    /** Another engine's reservation (RFC 8656 §7.2 from another 5-tuple, across workers). */
    let exchanged: ExchangedReservation | undefined;
    const ports = context.ports;
    if (reservationToken !== undefined) {
      reservation = ports.reservation(reservationToken, now);
      if (reservation === undefined) {
        exchanged = context.reservations?.peek(reservationToken, auth.principal, now);
      }
      const family = reservation?.family ?? exchanged?.family;
      if (family === undefined) {
        reply.error(ErrorCode.InsufficientCapacity);
        return;
      }
      families = [family];
    } else if (additionalFamily === 6) {
      // RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY asks for IPv4 plus IPv6.
      if (!context.relayAddresses.ip4) {
        reply.error(ErrorCode.AddressFamilyNotSupported);
        return;
      }
      // Without an IPv6 relay the IPv4 allocation still succeeds, and ADDRESS-ERROR-CODE 440
      // says why IPv6 is missing (RFC 8656 §7.2, §18.12).
      if (context.relayAddresses.ip6) families = [4, 6];
      else {
        families = [4];
        familyErrors.push({ family: 6, code: ErrorCode.AddressFamilyNotSupported });
      }
    } else {
      const family = requestedFamily ?? 4;
      if (!this.#relayConfig(family)) {
        reply.error(ErrorCode.AddressFamilyNotSupported);
        return;
      }
      families = [family];
    }
    const id = this.#nextAllocationId++ as AllocationId;
    if (pin !== undefined) {
      const stale = this.#pinned.claim(pin.port, families, auth, id, reply);
      if (stale === undefined) return;
      for (const holder of stale) this.#allocations.delete(holder, "taken-over", now);
    }
    // Quotas: RFC 8656 §7.2 486 per user (principal), 508 for the whole server. Taken here,
    // given back when the allocation is deleted (or below, if no port is free). A reservation
    // counts as an allocation of the principal that made it, from that Allocate until it is
    // redeemed or lapses: redeemed by the same principal, its count becomes the allocation's;
    // by another, the redeemer's own is taken and the maker's given back (for another engine's
    // reservation, by the exchange when it is taken).
    const quota = context.quota;
    const inherits =
      reservation !== undefined
        ? reservation.principal === auth.principal
        : exchanged?.inherits === true;
    if (!inherits && !this.#acquire(auth.principal, reply)) {
      if (pin?.port !== undefined) this.#pinned.undo(pin.port, families, id);
      return;
    }
    const redeeming = reservation !== undefined || exchanged !== undefined;
    const reserving = pin === undefined && !redeeming && evenPort?.reserveNext;
    if (reserving) {
      // RFC 8656 §7.2: EVEN-PORT that cannot be satisfied (the next port cannot be reserved)
      // is refused with 508; so is one more reservation than the range allows.
      if (!ports.canReserve(families[0]!)) {
        quota.release(auth.principal);
        refuseReservation(reply);
        return;
      }
      if (!this.#acquire(auth.principal, reply, "the reserved port counts as an allocation")) {
        quota.release(auth.principal);
        return;
      }
    }
    // Ports: the pinned one, from a reservation, an even port (with its partner reserved), or
    // any free one of the dynamic range.
    const chosen: number[] = [];
    let newReservationToken: Uint8Array | undefined;
    if (pin?.port !== undefined) {
      for (const family of families) {
        ports.take(family, pin.port);
        chosen.push(pin.port);
      }
    } else if (redeeming) {
      const port = this.#redeem(reservationToken!, reservation, auth.principal, now);
      if (port === undefined) {
        // Single use: another engine took it a moment ago.
        if (!inherits) quota.release(auth.principal);
        reply.error(ErrorCode.InsufficientCapacity);
        return;
      }
      if (!inherits && reservation !== undefined) quota.release(reservation.principal);
      chosen.push(port);
    } else {
      for (const family of families) {
        const port =
          evenPort !== undefined && family === families[0]
            ? ports.pickEven(family, evenPort.reserveNext)
            : ports.pick(family);
        if (port === undefined) {
          for (let i = 0; i < chosen.length; i++) ports.release(families[i]!, chosen[i]!);
          quota.release(auth.principal);
          if (reserving) quota.release(auth.principal);
          reply.error(ErrorCode.InsufficientCapacity, undefined, undefined, {
            reason: "no-free-port",
          });
          return;
        }
        ports.take(family, port);
        chosen.push(port);
      }
      if (reserving) {
        newReservationToken = new Uint8Array(8);
        context.random.fillBytes(newReservationToken);
        const [family, port] = [families[0]!, chosen[0]! + 1];
        const expiresAt = now + context.lifetimes.reservation * 1000;
        const made = { token: newReservationToken, family, port, expiresAt };
        if (context.reservations?.publish({ ...made, principal: auth.principal }) === false) {
          for (let i = 0; i < chosen.length; i++) ports.release(families[i]!, chosen[i]!);
          quota.release(auth.principal);
          quota.release(auth.principal);
          refuseReservation(reply);
          return;
        }
        ports.reserve(newReservationToken, family, port, expiresAt, auth.principal);
        context.stats.reservationsActive = ports.reservationCount;
      }
    }
    const record = context.data.recordFor(endpoint, client);
    const allocation = new Allocation(
      id,
      record,
      auth.username,
      auth.principal,
      auth.key,
      now,
      desiredLifetime(readUint32(msg, AttributeType.Lifetime), context.lifetimes),
      Uint8Array.from(msg.transactionId),
      relayProtocol,
      context.rules,
    );
    allocation.reservationToken = newReservationToken;
    allocation.bandwidth = context.bandwidth.open(allocation.id, auth.principal, now);
    for (const e of familyErrors) allocation.familyErrors.push(e);
    if (pin?.port !== undefined) this.#pinned.hold(allocation, families, pin.port);
    allocation.pendingAllocate = reply;
    record.allocation = allocation;
    this.#allocations.add(allocation);
    for (let i = 0; i < families.length; i++) {
      const family = families[i]!;
      // Pinned and RESERVATION-TOKEN ports are the port; an EVEN-PORT one is any even port.
      const choice: PortChoice =
        pin !== undefined || (i === 0 && redeeming)
          ? "fixed"
          : i === 0 && evenPort !== undefined
            ? "even"
            : "any";
      this.#sockets.open(allocation, family, this.#relayConfig(family)!, chosen[i]!, choice);
    }
    context.deadlines.schedule(allocation);
  }

  /**
   * One allocation of `principal`'s quota (RFC 8656 §7.2): true when granted; else 486 (its
   * quota) or 508 (the server's) was answered, with `why` after the reason phrase if given.
   */
  #acquire(principal: Principal, reply: Reply, why?: string): boolean {
    const code = this.#context.quota.acquire(principal);
    if (code === 0) return true;
    const error = code === 486 ? ErrorCode.AllocationQuotaReached : ErrorCode.InsufficientCapacity;
    const phrase = code === 486 ? "Allocation Quota Reached" : "Insufficient Capacity";
    reply.error(error, undefined, why === undefined ? undefined : `${phrase}: ${why}`, {
      reason: code === 486 ? "user-quota" : "relay-capacity",
    });
    return false;
  }

  /**
   * The port of reservation `token` for this Allocate, or undefined when it is gone: this
   * engine's own (`reservation`: withdrawn from the exchange first, since another engine may
   * have taken it meanwhile, and then its count moved with it) or another engine's, taken from
   * the exchange (its count moved by the exchange; the maker is told).
   */
  #redeem(
    token: Uint8Array,
    reservation: Reservation | undefined,
    principal: Principal,
    now: number,
  ): number | undefined {
    const { ports, reservations: exchange, stats, emit } = this.#context;
    if (reservation !== undefined) {
      const ours = exchange === undefined || exchange.withdraw(token);
      if (ours) ports.redeem(token);
      else ports.cancel(token);
      stats.reservationsActive = ports.reservationCount;
      return ours ? reservation.port : undefined;
    }
    const taken = exchange?.take(token, principal, now);
    if (taken === undefined) return undefined;
    ports.take(taken.family, taken.port);
    emit({ type: "reservation-taken", engine: taken.engine, token: Uint8Array.from(token) });
    return taken.port;
  }

  #relayConfig(family: 4 | 6): RelayAddressConfig | undefined {
    const { ip4, ip6 } = this.#context.relayAddresses;
    return family === 4 ? ip4 : ip6;
  }
}

/** RFC 8656 §7.2: EVEN-PORT R=1 that cannot be satisfied is refused with 508. */
function refuseReservation(reply: Reply): void {
  reply.error(
    ErrorCode.InsufficientCapacity,
    undefined,
    "Insufficient Capacity: EVEN-PORT refused, no port can be reserved now",
  );
}
