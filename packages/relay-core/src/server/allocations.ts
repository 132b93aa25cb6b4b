/**
 * The server's live allocations (RFC 8656 §6) and how they end: deletion by a Refresh with
 * LIFETIME 0 (§8.2; with REQUESTED-ADDRESS-FAMILY, one relayed address of a dual allocation),
 * by expiry (§6: the time-to-expiry reaches zero), with the client's TCP/TLS connection, by
 * revocation, by a pinned port taken over, and at shutdown; the timer that expires what is due
 * (allocations, permissions §9, channels §12, RFC 6062 waits, EVEN-PORT reservations); and
 * discovery. What one allocation holds is allocation.ts's; making one is allocate.ts's and
 * relay-sockets.ts's; the pinned ports pinned-ports.ts's.
 */

import { userOfUsername } from "../auth/pinned-username.js";
import type { TransportAddress } from "../codec/address.js";
import { ErrorCode } from "../codec/constants.js";
import type { AllocationId } from "../ids.js";
import type { RandomSource } from "../rng.js";
import type { Allocation, AllocationRules } from "./allocation.js";
import type { AllocationQuota } from "./allocation-quota.js";
import type { BandwidthLimits } from "./bandwidth.js";
import type { ChannelOffload } from "./channel-offload.js";
import type { DataPath } from "./data-path.js";
import type { Deadlines } from "./deadlines.js";
import type { Lifetimes, RelayAddressConfig } from "./options.js";
import type { PinnedPorts } from "./pinned-ports.js";
import type { RelayPortPool, Reservation } from "./relay-port-pool.js";
import { failAllocate } from "./relay-sockets.js";
import type { ReservationExchange } from "./reservation-exchange.js";
import type { Responder } from "./responses.js";
import type { ServerStats } from "./stats.js";
import type { TcpRelay } from "./tcp-relay.js";
import type { AllocationEndReason, AllocationInfo, Emit } from "./types.js";

/** What the allocation modules share: the settings, and the parts of the server they use. */
export interface AllocationContext {
  readonly relayAddresses: { readonly ip4?: RelayAddressConfig; readonly ip6?: RelayAddressConfig };
  readonly ports: RelayPortPool;
  readonly quota: AllocationQuota;
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
  readonly rules: AllocationRules;
  readonly emit: Emit;
  readonly responder: Responder;
  readonly stats: ServerStats;
  readonly data: DataPath;
  readonly deadlines: Deadlines<Allocation>;
  readonly tcp: TcpRelay;
}

export class Allocations {
  /** Every allocation not yet deleted. */
  readonly #live = new Set<Allocation>();
  readonly #context: AllocationContext;
  readonly #pinned: PinnedPorts;
  /** Refusing new allocations (SIGTERM): 300 with ALTERNATE-SERVER if configured, else 508. */
  draining = false;

  constructor(context: AllocationContext, pinned: PinnedPorts) {
    this.#context = context;
    this.#pinned = pinned;
  }

  /** A new allocation (its Allocate passed every check): live until deleted. */
  add(allocation: Allocation): void {
    this.#context.stats.allocationsActive++;
    this.#live.add(allocation);
  }

  // ---------------------------------------------------------------------------------------
  // Time

  /** Expire allocations, permissions, channels and RFC 6062 waits due at or before `now`. */
  expire(now: number): void {
    const { deadlines, offload, tcp } = this.#context;
    for (let a = deadlines.popDue(now); a !== undefined; a = deadlines.popDue(now)) {
      if (a.deleted) continue;
      if (a.expiresAt <= now) {
        // RFC 8656 §6: an allocation not refreshed in time is deleted with all it holds.
        this.delete(a, "expired", now);
        continue;
      }
      // Before the sweep: a late timer may drop a channel that lapsed and cooled down since,
      // and the runtime's entry for it must end too.
      offload?.sync(a, now);
      a.expire(now);
      tcp.expire(a, now);
      deadlines.schedule(a);
    }
    this.#context.ports.expireReservations(now, this.#reservationEnded);
  }

  /**
   * A reservation lapsed or was cancelled: its count goes back to its maker's quota, unless
   * another engine took it meanwhile (the count went with it).
   */
  readonly #reservationEnded = (r: Reservation): void => {
    if (this.#context.reservations?.withdraw(r.token) !== false) {
      this.#context.quota.release(r.principal);
    }
    this.#context.stats.reservationsActive = this.#context.ports.reservationCount;
  };

  /**
   * TurnServer.handleReservationTaken: another engine took this engine's reservation `token`
   * (ReservationExchange.take); its port is that engine's to bind, and its quota count went with
   * it. Forgotten here at once.
   */
  reservationTaken(token: Uint8Array): void {
    const ports = this.#context.ports;
    ports.cancel(token);
    this.#context.stats.reservationsActive = ports.reservationCount;
  }

  /** The next instant `expire` has work, or undefined. */
  nextTimeout(): number | undefined {
    const next = this.#context.deadlines.next();
    const reservation = this.#context.ports.nextReservationExpiry();
    if (next === undefined) return reservation;
    return reservation !== undefined && reservation < next ? reservation : next;
  }

  // ---------------------------------------------------------------------------------------
  // Ending

  /**
   * RFC 8656 §8.2: a Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME 0 deletes that
   * family's relayed address of a dual allocation; the other lives on. The last family takes
   * the whole allocation with it.
   */
  deleteFamily(allocation: Allocation, family: 4 | 6, now: number): void {
    if (allocation.relays.filter((r) => r.state === "bound").length <= 1) {
      this.delete(allocation, "deleted", now);
      return;
    }
    const { data, deadlines, emit, offload, tcp } = this.#context;
    tcp.closeAll(allocation, family);
    offload?.end(allocation, family);
    const socket = allocation.removeFamily(family);
    if (socket === undefined) return;
    this.#pinned.releasePort(socket);
    if (data.removeRelay(socket)) emit({ type: "close-relay", relay: socket.id });
    deadlines.schedule(allocation);
  }

  delete(allocation: Allocation, reason: AllocationEndReason, now: number): void {
    if (allocation.deleted) return;
    const { data, emit, stats } = this.#context;
    // First, so the runtime reads the entries' counters before close-relay and allocation-ended.
    this.#context.offload?.end(allocation);
    allocation.deleted = true;
    this.#live.delete(allocation);
    this.#context.deadlines.forget(allocation);
    allocation.pendingAllocate = undefined;
    for (const socket of allocation.relays) {
      // A failed socket's port was released when it failed and may belong to someone else now.
      if (socket.state !== "failed") this.#pinned.releasePort(socket);
      if (data.removeRelay(socket)) emit({ type: "close-relay", relay: socket.id });
    }
    if (allocation.state === "binding" && allocation.reservationToken) {
      // The Allocate never succeeded, so nobody learned its RESERVATION-TOKEN: release it.
      const r = this.#context.ports.cancel(allocation.reservationToken);
      if (r !== undefined) this.#reservationEnded(r);
    }
    this.#context.tcp.closeAll(allocation);
    allocation.clear();
    const client = allocation.client;
    if (client.allocation === allocation) client.allocation = undefined;
    if (client.transport === "udp") data.forgetUdpClient(client);
    this.#context.quota.release(allocation.principal);
    if (allocation.bandwidth !== undefined) this.#context.bandwidth.close(allocation.principal);
    stats.allocationsActive--;
    if (allocation.state === "active") {
      emit({
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

  /** TurnServer.releasePinnedPort: the stale holder ends, as allocate.ts ends one here. */
  releasePinnedPort(
    release: { family: 4 | 6; port: number; allocation: AllocationId; principal: string },
    now: number,
  ): "released" | "none" {
    const { family, port, allocation, principal } = release;
    const holder = this.#pinned.holder(family, port, allocation, principal);
    if (holder === undefined) return "none";
    this.delete(holder, "taken-over", now);
    return "released";
  }

  /**
   * End the live allocations `match` picks, for `reason`. Revoked, one still binding its relay
   * is refused too (403); the operator ends only allocations that have their relayed address
   * (what discovery shows). Returns how many ended.
   */
  endWhere(
    match: (allocation: Allocation) => boolean,
    reason: "revoked" | "operator",
    now: number,
  ): number {
    let ended = 0;
    for (const allocation of [...this.#live]) {
      if (!match(allocation)) continue;
      if (allocation.state === "binding") {
        if (reason !== "revoked") continue;
        failAllocate(allocation, ErrorCode.Forbidden, "Forbidden: credentials revoked", "revoked");
      }
      this.delete(allocation, reason, now);
      ended++;
    }
    return ended;
  }

  /** Delete every allocation and reservation (shutdown), giving their quota back. */
  closeAll(now: number): void {
    for (const socket of this.#context.data.relaySockets()) {
      if (!socket.allocation.deleted) this.delete(socket.allocation, "shutdown", now);
    }
    this.#context.ports.cancelAll(this.#reservationEnded);
  }

  // ---------------------------------------------------------------------------------------
  // Discovery

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
