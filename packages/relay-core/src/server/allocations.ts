/**
 * The server's allocations (RFC 8656 §7): Allocate (§7.2: transport, families, EVEN-PORT and
 * RESERVATION-TOKEN, pinned ports, quotas), the relay sockets the runtime binds for them and
 * what a failed bind does, deletion (Refresh with LIFETIME 0, expiry, a closed connection,
 * revocation, shutdown), and the timer that expires what is due. Port bookkeeping is
 * relay-port-pool.ts's; what one allocation holds is allocation.ts's.
 */

import { constantTimeEqual } from "../auth/constant-time.js";
import type { Principal } from "../auth/credentials.js";
import { pinOfUsername, userOfUsername } from "../auth/pinned-username.js";
import type { TransportAddress } from "../codec/address.js";
import {
  AttributeType,
  ErrorCode,
  MessageClass,
  Method,
  TransportProtocol,
} from "../codec/constants.js";
import {
  hasAttribute,
  readAddressFamily,
  readBytes,
  readEvenPort,
  readRequestedTransport,
  readUint32,
  type StunMessage,
} from "../codec/message.js";
import type { AllocationId, RelayId } from "../ids.js";
import type { RandomSource } from "../rng.js";
import {
  Allocation,
  type AllocationRules,
  type ClientEndpoint,
  type ClientRecord,
  desiredLifetime,
  type PortChoice,
  type RelaySocket,
} from "./allocation.js";
import type { AllocationQuota } from "./allocation-quota.js";
import type { Authenticated } from "./authentication.js";
import type { BandwidthLimits } from "./bandwidth.js";
import type { ChannelOffload } from "./channel-offload.js";
import type { DataPath } from "./data-path.js";
import type { Deadlines } from "./deadlines.js";
import type { Lifetimes, RelayAddressConfig } from "./options.js";
import type { PinnedPortOwners } from "./pinned-port-owners.js";
import { PinnedPorts } from "./pinned-ports.js";
import type { RelayPortPool, Reservation } from "./relay-port-pool.js";
import type { ExchangedReservation, ReservationExchange } from "./reservation-exchange.js";
import type { Reply, Responder } from "./responses.js";
import type { ServerStats } from "./stats.js";
import type { TcpRelay } from "./tcp-relay.js";
import type { AllocationEndReason, AllocationInfo, Emit } from "./types.js";

/** A relay port that fails to bind is retried on another port this many times (then 508). */
const MAX_BIND_ATTEMPTS = 8;

export interface AllocationsOptions {
  readonly relayAddresses: { readonly ip4?: RelayAddressConfig; readonly ip6?: RelayAddressConfig };
  readonly ports: RelayPortPool;
  readonly quota: AllocationQuota;
  /** Who owns each pinned port: this server alone, or engines sharing a relay. */
  readonly pinnedOwners: PinnedPortOwners;
  /** RESERVATION-TOKENs redeemable in other engines of the same relay; undefined: only here. */
  readonly reservations: ReservationExchange | undefined;
  readonly random: RandomSource;
  readonly lifetimes: Lifetimes;
  /** Sent with 300 Try Alternate while draining (RFC 8489 §10). */
  readonly alternateServer: TransportAddress | undefined;
  /** Channel offload outputs, when the runtime asked for them (TurnServerOptions). */
  readonly offload: ChannelOffload | undefined;
  /** Bandwidth limits: the buckets each allocation's relayed bytes are charged to. */
  readonly bandwidth: BandwidthLimits;
}

export class Allocations {
  /** Every allocation not yet deleted. */
  readonly #live = new Set<Allocation>();
  /** Allocates waiting for their relay sockets to bind, and the reply to send then. */
  readonly #pending = new Map<Allocation, Reply>();
  readonly #pinned: PinnedPorts;
  readonly #options: AllocationsOptions;
  readonly #rules: AllocationRules;
  readonly #emit: Emit;
  readonly #responder: Responder;
  readonly #stats: ServerStats;
  readonly #data: DataPath;
  readonly #deadlines: Deadlines<Allocation>;
  readonly #tcp: TcpRelay;
  #nextRelayId = 1;
  #nextAllocationId = 1;
  /** Refusing new allocations (SIGTERM): 300 with ALTERNATE-SERVER if configured, else 508. */
  draining = false;

  constructor(
    options: AllocationsOptions,
    rules: AllocationRules,
    emit: Emit,
    responder: Responder,
    stats: ServerStats,
    data: DataPath,
    deadlines: Deadlines<Allocation>,
    tcp: TcpRelay,
  ) {
    this.#options = options;
    this.#rules = rules;
    this.#emit = emit;
    this.#responder = responder;
    this.#stats = stats;
    this.#data = data;
    this.#deadlines = deadlines;
    this.#tcp = tcp;
    this.#pinned = new PinnedPorts(options.pinnedOwners, options.ports, emit);
  }

  // ---------------------------------------------------------------------------------------
  // Allocate (RFC 8656 §7.2)

  allocate(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    auth: Authenticated,
    reply: Reply,
    now: number,
  ): void {
    const existing = client?.allocation;
    if (existing !== undefined) {
      if (constantTimeEqual(existing.transactionId, msg.transactionId)) {
        // A retransmission: the success again, or silence while the relay port is binding.
        if (existing.allocateResponse) {
          this.#responder.transmit(
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
    if (this.draining) {
      const alt = this.#options.alternateServer;
      if (alt)
        reply.error(ErrorCode.TryAlternate, (b) => b.address(AttributeType.AlternateServer, alt));
      else reply.error(ErrorCode.InsufficientCapacity);
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
    const ports = this.#options.ports;
    const exchange = this.#options.reservations;
    if (reservationToken !== undefined) {
      reservation = ports.reservation(reservationToken, now);
      if (reservation === undefined) {
        exchanged = exchange?.peek(reservationToken, auth.principal, now);
      }
      const family = reservation?.family ?? exchanged?.family;
      if (family === undefined) {
        reply.error(ErrorCode.InsufficientCapacity);
        return;
      }
      families = [family];
    } else if (additionalFamily === 6) {
      // RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY asks for IPv4 plus IPv6.
      if (!this.#options.relayAddresses.ip4) {
        reply.error(ErrorCode.AddressFamilyNotSupported);
        return;
      }
      // Without an IPv6 relay the IPv4 allocation still succeeds, and ADDRESS-ERROR-CODE 440
      // says why IPv6 is missing (RFC 8656 §7.2, §14.11).
      if (this.#options.relayAddresses.ip6) families = [4, 6];
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
    const endStale = (stale: Allocation) => this.delete(stale, "taken-over", now);
    if (pin !== undefined && !this.#pinned.take(pin.port, families, auth, id, reply, endStale)) {
      return;
    }
    // Quotas: RFC 8656 §7.2 486 per user (principal), 508 for the whole server. Taken here,
    // given back when the allocation is deleted (or below, if no port is free). A reservation
    // counts as an allocation of the principal that made it, from that Allocate until it is
    // redeemed or lapses: redeemed by the same principal, its count becomes the allocation's;
    // by another, the redeemer's own is taken and the maker's given back (for another engine's
    // reservation, by the exchange when it is taken).
    const quota = this.#options.quota;
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
        reply.error(
          ErrorCode.InsufficientCapacity,
          undefined,
          "Insufficient Capacity: EVEN-PORT refused, no port can be reserved now",
        );
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
          reply.error(ErrorCode.InsufficientCapacity);
          return;
        }
        ports.take(family, port);
        chosen.push(port);
      }
      if (reserving) {
        newReservationToken = new Uint8Array(8);
        this.#options.random.fillBytes(newReservationToken);
        const expiresAt = now + this.#options.lifetimes.reservation * 1000;
        const [family, port] = [families[0]!, chosen[0]! + 1];
        if (
          exchange?.publish(newReservationToken, family, port, expiresAt, auth.principal) === false
        ) {
          for (let i = 0; i < chosen.length; i++) ports.release(families[i]!, chosen[i]!);
          quota.release(auth.principal);
          quota.release(auth.principal);
          reply.error(
            ErrorCode.InsufficientCapacity,
            undefined,
            "Insufficient Capacity: EVEN-PORT refused, no port can be reserved now",
          );
          return;
        }
        ports.reserve(newReservationToken, family, port, expiresAt, auth.principal);
        this.#stats.reservationsActive = ports.reservationCount;
      }
    }
    const record = this.#data.recordFor(endpoint, client);
    const allocation = new Allocation(
      id,
      record,
      auth.username,
      auth.principal,
      auth.key,
      now,
      desiredLifetime(readUint32(msg, AttributeType.Lifetime), this.#options.lifetimes),
      Uint8Array.from(msg.transactionId),
      relayProtocol,
      this.#rules,
    );
    allocation.reservationToken = newReservationToken;
    allocation.bandwidth = this.#options.bandwidth.open(allocation.id, auth.principal, now);
    allocation.familyErrors.push(...familyErrors);
    if (pin?.port !== undefined) {
      allocation.pinnedPort = pin.port;
      this.#pinned.hold(allocation, pin.port, families);
    }
    this.#pending.set(allocation, reply);
    record.allocation = allocation;
    this.#stats.allocationsActive++;
    this.#live.add(allocation);
    families.forEach((family, i) => {
      const config = this.#relayConfig(family)!;
      // Pinned and RESERVATION-TOKEN ports are the port; an EVEN-PORT one is any even port.
      const choice: PortChoice =
        pin !== undefined || (i === 0 && redeeming)
          ? "fixed"
          : i === 0 && evenPort !== undefined
            ? "even"
            : "any";
      const socket: RelaySocket = {
        id: this.#nextRelayId++ as RelayId,
        family,
        protocol: relayProtocol,
        bindAddress: config.bind,
        advertisedAddress: config.advertised ?? config.bind,
        port: chosen[i]!,
        attempts: 1,
        choice,
        state: "binding",
        runtimeHandle: -1,
        allocation,
      };
      allocation.relays.push(socket);
      this.#data.addRelay(socket);
      this.#openRelay(socket);
    });
    this.#deadlines.schedule(allocation);
  }

  /**
   * One allocation of `principal`'s quota (RFC 8656 §7.2): true when granted; else 486 (its
   * quota) or 508 (the server's) was answered, with `why` after the reason phrase if given.
   */
  #acquire(principal: Principal, reply: Reply, why?: string): boolean {
    const code = this.#options.quota.acquire(principal);
    if (code === 0) return true;
    const error = code === 486 ? ErrorCode.AllocationQuotaReached : ErrorCode.InsufficientCapacity;
    const phrase = code === 486 ? "Allocation Quota Reached" : "Insufficient Capacity";
    reply.error(error, undefined, why === undefined ? undefined : `${phrase}: ${why}`);
    return false;
  }

  /**
   * The port of reservation `token` for this Allocate, or undefined when it is gone: this
   * engine's own (`reservation`: withdrawn from the exchange first, since another engine may
   * have taken it meanwhile; then its count moved with it) or another engine's, taken from the
   * exchange (its count moved by the exchange).
   */
  #redeem(
    token: Uint8Array,
    reservation: Reservation | undefined,
    principal: Principal,
    now: number,
  ): number | undefined {
    const ports = this.#options.ports;
    const exchange = this.#options.reservations;
    if (reservation !== undefined) {
      const ours = exchange === undefined || exchange.withdraw(token);
      if (ours) ports.redeem(token);
      else ports.cancel(token);
      this.#stats.reservationsActive = ports.reservationCount;
      return ours ? reservation.port : undefined;
    }
    const taken = exchange?.take(token, principal, now);
    if (taken === undefined) return undefined;
    ports.take(taken.family, taken.port);
    this.#emit({ type: "reservation-taken", engine: taken.engine, token: Uint8Array.from(token) });
    return taken.port;
  }

  /**
   * Another engine took this engine's reservation `token` (ReservationExchange.take): its port
   * is that engine's to bind, and its quota count went with it. Forgotten here at once.
   */
  reservationTaken(token: Uint8Array): void {
    const ports = this.#options.ports;
    ports.cancel(token);
    this.#stats.reservationsActive = ports.reservationCount;
  }

  /** The runtime bound relay socket `relay`: the Allocate succeeds once every family answered. */
  relayBound(relay: RelayId, now: number, runtimeHandle: number): void {
    const socket = this.#data.relay(relay);
    if (socket?.state !== "binding") return;
    socket.state = "bound";
    socket.runtimeHandle = runtimeHandle;
    this.#maybeComplete(socket.allocation, now);
  }

  /** The runtime could not bind relay socket `relay`: try another port (bounded), else fail. */
  relayBindFailed(relay: RelayId, now: number): void {
    const socket = this.#data.relay(relay);
    if (socket?.state !== "binding") return;
    // Another port is picked before the failed one is released, so it is not picked again. A
    // pinned or reserved port is the port: it cannot move. An EVEN-PORT one moves to another
    // even port (RFC 8656 §7.2), and the odd port it reserved moves with it: the
    // RESERVATION-TOKEN, not yet sent, names the port next to the one that binds.
    const ports = this.#options.ports;
    if (socket.attempts < MAX_BIND_ATTEMPTS && socket.choice !== "fixed") {
      const token = socket.allocation.reservationToken;
      const port =
        socket.choice === "even"
          ? ports.pickEven(socket.family, token !== undefined)
          : ports.pick(socket.family);
      if (port !== undefined) {
        ports.release(socket.family, socket.port);
        if (socket.choice === "even" && token !== undefined) {
          const r = ports.moveReservation(token, port + 1);
          if (r !== undefined) {
            this.#options.reservations?.publish(token, r.family, r.port, r.expiresAt, r.principal);
          }
        }
        socket.port = port;
        socket.attempts++;
        ports.take(socket.family, port);
        this.#openRelay(socket);
        return;
      }
    }
    this.#releasePort(socket);
    socket.state = "failed";
    this.#data.removeRelay(socket);
    const allocation = socket.allocation;
    if (allocation.relays[0] === socket) {
      // The requested family has no relayed address: the Allocate fails (RFC 8656 §7.2, 508).
      // A pinned port is never moved, so say which port could not be had.
      this.#fail(
        allocation,
        ErrorCode.InsufficientCapacity,
        allocation.pinnedPort === undefined
          ? undefined
          : `Insufficient Capacity: pinned port ${allocation.pinnedPort} could not be bound`,
      );
      this.delete(allocation, "bind-failed", now);
      return;
    }
    // The additional family failed: the allocation goes on with ADDRESS-ERROR-CODE (§7.2).
    allocation.familyErrors.push({ family: socket.family, code: ErrorCode.InsufficientCapacity });
    this.#maybeComplete(allocation, now);
  }

  /** When every relay socket has an answer, send the Allocate success (RFC 8656 §7.2). */
  #maybeComplete(allocation: Allocation, now: number): void {
    if (allocation.state !== "binding") return;
    if (allocation.relays.some((r) => r.state === "binding")) return;
    const reply = this.#pending.get(allocation);
    this.#pending.delete(allocation);
    allocation.state = "active";
    this.#stats.allocationsCreated++;
    const lifetimeSeconds = Math.round((allocation.expiresAt - now) / 1000);
    const bound = allocation.relays.filter((r) => r.state === "bound");
    if (reply) {
      allocation.allocateResponse = reply.success((b) => {
        for (const r of bound) {
          b.xorAddress(AttributeType.XorRelayedAddress, {
            family: r.family,
            address: r.advertisedAddress,
            port: r.port,
          });
        }
        for (const e of allocation.familyErrors) b.addressErrorCode(e.family, e.code);
        b.uint32(AttributeType.Lifetime, lifetimeSeconds);
        if (allocation.reservationToken) {
          b.bytes(AttributeType.ReservationToken, allocation.reservationToken);
        }
        b.xorAddress(AttributeType.XorMappedAddress, allocation.client);
      });
    }
    this.#emit({
      type: "allocation-created",
      allocation: allocation.id,
      client: allocation.client,
      username: allocation.username,
      relayed: bound.map((r) => ({ family: r.family, address: r.advertisedAddress, port: r.port })),
      transport: allocation.requestedTransport,
      lifetimeSeconds,
    });
  }

  /** An Allocate still waiting for its relay sockets is answered with an error. */
  #fail(allocation: Allocation, code: number, reason?: string): void {
    const reply = this.#pending.get(allocation);
    this.#pending.delete(allocation);
    reply?.error(code, undefined, reason);
  }

  #relayConfig(family: 4 | 6): RelayAddressConfig | undefined {
    return family === 4 ? this.#options.relayAddresses.ip4 : this.#options.relayAddresses.ip6;
  }

  #openRelay(socket: RelaySocket): void {
    this.#emit({
      type: "open-relay",
      relay: socket.id,
      family: socket.family,
      protocol: socket.protocol,
      bindAddress: socket.bindAddress,
      port: socket.port,
      pinnedFor:
        socket.allocation.pinnedPort === socket.port ? socket.allocation.principal : undefined,
    });
  }

  // ---------------------------------------------------------------------------------------
  // Pinned ports (pinned-ports.ts)

  /**
   * Another engine of the same relay took pinned `port` over for `principal` and names
   * `allocation` of this one as the stale holder: it ends at once ("taken-over"), if it still
   * holds the port. "none": it does not.
   */
  releasePinnedPort(
    family: 4 | 6,
    port: number,
    allocation: AllocationId,
    principal: string,
    now: number,
  ): "released" | "none" {
    return this.#pinned.releaseFor(family, port, allocation, principal, (stale) =>
      this.delete(stale, "taken-over", now),
    );
  }

  /** Give a relay socket's port back (and its pin, if this allocation held one). */
  #releasePort(socket: RelaySocket): void {
    this.#options.ports.release(socket.family, socket.port);
    this.#pinned.released(socket);
  }

  // ---------------------------------------------------------------------------------------
  // Time

  /** Expire allocations, permissions, channels and RFC 6062 waits due at or before `now`. */
  expire(now: number): void {
    for (let a = this.#deadlines.popDue(now); a !== undefined; a = this.#deadlines.popDue(now)) {
      if (a.deleted) continue;
      if (a.expiresAt <= now) {
        // RFC 8656 §7: an allocation not refreshed in time is deleted with all it holds.
        this.delete(a, "expired", now);
        continue;
      }
      // Before the sweep: a late timer may drop a channel that lapsed and cooled down since,
      // and the runtime's entry for it must end too.
      this.#options.offload?.sync(a, now);
      a.expire(now);
      this.#tcp.expire(a, now);
      this.#deadlines.schedule(a);
    }
    this.#options.ports.expireReservations(now, this.#reservationEnded);
  }

  /**
   * A reservation lapsed or was cancelled: its count goes back to its maker's quota, unless
   * another engine took it meanwhile (the count went with it).
   */
  readonly #reservationEnded = (r: Reservation): void => {
    if (this.#options.reservations?.withdraw(r.token) !== false) {
      this.#options.quota.release(r.principal);
    }
    this.#stats.reservationsActive = this.#options.ports.reservationCount;
  };

  /** The next instant `expire` has work, or undefined. */
  nextTimeout(): number | undefined {
    const next = this.#deadlines.next();
    const reservation = this.#options.ports.nextReservationExpiry();
    if (next === undefined) return reservation;
    return reservation !== undefined && reservation < next ? reservation : next;
  }

  // ---------------------------------------------------------------------------------------
  // Ending

  /**
   * RFC 8656 §7.3: a Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME 0 deletes that
   * family's relayed address of a dual allocation; the other lives on. The last family takes
   * the whole allocation with it.
   */
  deleteFamily(allocation: Allocation, family: 4 | 6, now: number): void {
    if (allocation.relays.filter((r) => r.state === "bound").length <= 1) {
      this.delete(allocation, "deleted", now);
      return;
    }
    this.#tcp.closeAll(allocation, family);
    this.#options.offload?.end(allocation, family);
    const socket = allocation.removeFamily(family);
    if (socket === undefined) return;
    this.#releasePort(socket);
    if (this.#data.removeRelay(socket)) this.#emit({ type: "close-relay", relay: socket.id });
    this.#deadlines.schedule(allocation);
  }

  delete(allocation: Allocation, reason: AllocationEndReason, now: number): void {
    if (allocation.deleted) return;
    // First, so the runtime reads the entries' counters before close-relay and allocation-ended.
    this.#options.offload?.end(allocation);
    allocation.deleted = true;
    this.#live.delete(allocation);
    this.#deadlines.forget(allocation);
    this.#pending.delete(allocation);
    for (const socket of allocation.relays) {
      // A failed socket's port was released when it failed and may belong to someone else now.
      if (socket.state !== "failed") this.#releasePort(socket);
      if (this.#data.removeRelay(socket)) this.#emit({ type: "close-relay", relay: socket.id });
    }
    if (allocation.state === "binding" && allocation.reservationToken) {
      // The Allocate never succeeded, so nobody learned its RESERVATION-TOKEN: release it.
      const r = this.#options.ports.cancel(allocation.reservationToken);
      if (r !== undefined) this.#reservationEnded(r);
    }
    this.#tcp.closeAll(allocation);
    allocation.clear();
    const client = allocation.client;
    if (client.allocation === allocation) client.allocation = undefined;
    if (client.transport === "udp") this.#data.forgetUdpClient(client);
    this.#options.quota.release(allocation.principal);
    if (allocation.bandwidth !== undefined) this.#options.bandwidth.close(allocation.principal);
    this.#stats.allocationsActive--;
    if (allocation.state === "active") {
      this.#emit({
        type: "allocation-ended",
        allocation: allocation.id,
        client: allocation.client,
        reason,
        transport: allocation.requestedTransport,
        families: allocation.relays.filter((r) => r.state === "bound").map((r) => r.family),
        lifetimeSeconds: Math.max(0, (now - allocation.createdAt) / 1000),
      });
    }
  }

  /**
   * End the live allocations of the principals `isRevoked` names ("revoked"); one still
   * binding its relay gets 403. Returns how many ended.
   */
  revoke(isRevoked: (principal: Principal) => boolean, now: number): number {
    let ended = 0;
    for (const allocation of [...this.#live]) {
      if (!isRevoked(allocation.principal)) continue;
      if (allocation.state === "binding") {
        this.#fail(allocation, ErrorCode.Forbidden, "Forbidden: credentials revoked");
      }
      this.delete(allocation, "revoked", now);
      ended++;
    }
    return ended;
  }

  /** Delete every allocation and reservation (shutdown), giving their quota back. */
  closeAll(now: number): void {
    for (const socket of this.#data.relaySockets()) {
      if (!socket.allocation.deleted) this.delete(socket.allocation, "shutdown", now);
    }
    this.#options.ports.cancelAll(this.#reservationEnded);
  }

  /**
   * Every allocation that has its relayed address (Allocate answered), for discovery: who holds
   * which relayed address, from where, for which peers. No secret is in it. O(allocations):
   * for an operator's request, never the data path.
   */
  describe(now: number): AllocationInfo[] {
    const out: AllocationInfo[] = [];
    for (const a of this.#live) {
      if (a.state !== "active" || a.expiresAt <= now) continue;
      const peers: string[] = [];
      for (const p of a.permissions.values()) if (p.expiresAt > now) peers.push(p.address);
      const client = a.client;
      out.push({
        id: a.id,
        username: a.username,
        user: userOfUsername(a.username),
        pinnedPort: a.pinnedPort,
        transport: a.requestedTransport,
        client: {
          transport: client.transport,
          listener: client.listener,
          connection: client.connection,
          family: client.family,
          address: client.address,
          port: client.port,
          ip4: client.ip4,
          ip6: client.ip6,
        },
        relayed: a.relays
          .filter((r) => r.state === "bound")
          .map((r) => ({ family: r.family, address: r.advertisedAddress, port: r.port })),
        peers,
        createdAt: a.createdAt,
        expiresAt: a.expiresAt,
      });
    }
    return out;
  }
}
