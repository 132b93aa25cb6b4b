/**
 * The relay sockets of an allocation (RFC 8656 §7.2: one relayed transport address per family
 * asked for), which the runtime binds: "open-relay" asks for each, handleRelayBound and
 * handleRelayBindFailed answer. A failed bind is retried on another port (bounded); when every
 * socket has an answer the Allocate succeeds, with ADDRESS-ERROR-CODE (§18.12) for an
 * additional family that could not be had, or fails with 508 when the requested family could
 * not. The Allocate request itself is allocate.ts's; port bookkeeping is relay-port-pool.ts's.
 */

import { AttributeType, ErrorCode } from "../codec/constants.js";
import type { RelayId } from "../ids.js";
import type { Allocation, PortChoice, RelaySocket } from "./allocation.js";
import type { AllocationContext, Allocations } from "./allocations.js";
import type { RelayAddressConfig } from "./options.js";
import type { PinnedPorts } from "./pinned-ports.js";

/** A relay port that fails to bind is retried on another port this many times (then 508). */
const MAX_BIND_ATTEMPTS = 8;

export class RelaySockets {
  readonly #context: AllocationContext;
  readonly #allocations: Allocations;
  readonly #pinned: PinnedPorts;
  #nextRelayId = 1;

  constructor(context: AllocationContext, allocations: Allocations, pinned: PinnedPorts) {
    this.#context = context;
    this.#allocations = allocations;
    this.#pinned = pinned;
  }

  /**
   * A relay socket of `family` on `port` for `allocation`, which the runtime is asked to bind.
   * `choice` says where another port may come from if this one fails: "fixed" (a pinned or
   * reserved port is the port), "even" (EVEN-PORT) or "any".
   */
  open(
    allocation: Allocation,
    family: 4 | 6,
    config: RelayAddressConfig,
    port: number,
    choice: PortChoice,
  ): void {
    const socket: RelaySocket = {
      id: this.#nextRelayId++ as RelayId,
      family,
      protocol: allocation.requestedTransport,
      bindAddress: config.bind,
      advertisedAddress: config.advertised ?? config.bind,
      port,
      attempts: 1,
      choice,
      state: "binding",
      runtimeHandle: -1,
      allocation,
    };
    allocation.relays.push(socket);
    this.#context.data.addRelay(socket);
    this.#openRelay(socket);
  }

  /** The runtime bound relay socket `relay`: the Allocate succeeds once every family answered. */
  bound(relay: RelayId, now: number, runtimeHandle: number): void {
    const socket = this.#context.data.relay(relay);
    if (socket?.state !== "binding") return;
    socket.state = "bound";
    socket.runtimeHandle = runtimeHandle;
    this.#maybeComplete(socket.allocation, now);
  }

  /** The runtime could not bind relay socket `relay`: try another port (bounded), else fail. */
  bindFailed(relay: RelayId, now: number): void {
    const { data, ports } = this.#context;
    const socket = data.relay(relay);
    if (socket?.state !== "binding") return;
    // Another port is picked before the failed one is released, so it is not picked again. A
    // pinned or reserved port is the port: it cannot move. An EVEN-PORT one moves to another
    // even port (RFC 8656 §7.2), and the odd port it reserved moves with it: the
    // RESERVATION-TOKEN, not yet sent, names the port next to the one that binds.
    if (socket.attempts < MAX_BIND_ATTEMPTS && socket.choice !== "fixed") {
      const token = socket.allocation.reservationToken;
      const port =
        socket.choice === "even"
          ? ports.pickEven(socket.family, token !== undefined)
          : ports.pick(socket.family);
      if (port !== undefined) {
        ports.release(socket.family, socket.port);
        if (socket.choice === "even" && token !== undefined) {
          const moved = ports.moveReservation(token, port + 1);
          if (moved !== undefined) this.#context.reservations?.publish(moved);
        }
        socket.port = port;
        socket.attempts++;
        ports.take(socket.family, port);
        this.#openRelay(socket);
        return;
      }
    }
    this.#pinned.releasePort(socket);
    socket.state = "failed";
    data.removeRelay(socket);
    const allocation = socket.allocation;
    if (allocation.relays[0] === socket) {
      // The requested family has no relayed address: the Allocate fails (RFC 8656 §7.2, 508).
      // A pinned or reserved port is never moved, so say which port could not be had.
      const which = allocation.pinnedPort !== undefined ? "pinned" : "reserved";
      failAllocate(
        allocation,
        ErrorCode.InsufficientCapacity,
        socket.choice === "fixed"
          ? `Insufficient Capacity: ${which} port ${socket.port} could not be bound`
          : undefined,
        "bind-failed",
      );
      this.#allocations.delete(allocation, "bind-failed", now);
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
    const reply = allocation.pendingAllocate;
    allocation.pendingAllocate = undefined;
    allocation.state = "active";
    this.#context.stats.allocationsCreated++;
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
    // Pushed into a literal array, not `bound.map(...)`: with `map`, the engine's consumer of
    // this output (relay-server's executeOutput, optimized by then) deoptimized under load on a
    // "wrong map" at `relayed[0]`, most likely an array of another elements kind once V8 had
    // optimized this function and inlined `map`; with the literal it does not (bench/README,
    // "fourth pass").
    const relayed: { family: 4 | 6; address: string; port: number }[] = [];
    for (const r of bound)
      relayed.push({ family: r.family, address: r.advertisedAddress, port: r.port });
    this.#context.emit({
      type: "allocation-created",
      allocation: allocation.id,
      client: allocation.client,
      username: allocation.username,
      relayed,
      transport: allocation.requestedTransport,
      lifetimeSeconds,
    });
  }

  #openRelay(socket: RelaySocket): void {
    this.#context.emit({
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
}

/**
 * An Allocate still waiting for its relay sockets is answered with an error: `phrase` on the
 * wire (the standard one when undefined), `why` for the operator's log (types.ts, Refusal).
 */
export function failAllocate(
  allocation: Allocation,
  code: number,
  phrase: string | undefined,
  why: string,
): void {
  const reply = allocation.pendingAllocate;
  allocation.pendingAllocate = undefined;
  reply?.error(code, undefined, phrase, { reason: why });
}
