/**
 * Pinned ports (Turnpike's own; RFC 8656 §7.2 leaves the choice of the relayed transport address
 * to the server): credentials that name their relay port (auth/pinned-username.ts) get exactly
 * that port, on every family their Allocate asks for. Which allocation of this server holds
 * each pinned port, the claim every such Allocate makes in PinnedPortOwners (this server's own,
 * or a table engines serving one relay share: pinned-port-owners.ts), and which stale holder of
 * the same principal gives it up:
 *
 *   another principal holds the port (any family, any protocol, any engine)   403
 *   the same principal holds it on the same family, in this engine            the caller ends it
 *   ... in another engine                                                     "release-pinned-port"
 *                                                                             for the runtime
 *
 * The port numbers themselves are relay-port-pool.ts's.
 */

import { ErrorCode } from "../codec/constants.js";
import type { AllocationId } from "../ids.js";
import type { Allocation, RelaySocket } from "./allocation.js";
import type { Authenticated } from "./authentication.js";
import type { PinnedPortOwners } from "./pinned-port-owners.js";
import type { RelayPortPool } from "./relay-port-pool.js";
import type { Reply } from "./responses.js";
import type { Emit } from "./types.js";

export class PinnedPorts {
  /** The allocation holding each pinned port, keyed family * 65536 + port. */
  readonly #holders = new Map<number, Allocation>();
  readonly #ports: RelayPortPool;
  readonly #owners: PinnedPortOwners;
  readonly #emit: Emit;

  constructor(ports: RelayPortPool, owners: PinnedPortOwners, emit: Emit) {
    this.#ports = ports;
    this.#owners = owners;
    this.#emit = emit;
  }

  /**
   * May an Allocate of `auth`, to be allocation `id`, take pinned `port` on `families`? Refused
   * (403 with a reason phrase saying which rule) when the port is not in the pinned range or
   * another principal holds it, on any family, in any engine: undefined, the reply sent. Else
   * the port is claimed for `id`, and the allocations of the same principal that hold it in
   * this engine are returned: they are stale (a tunnel that restarted or lost its connection)
   * and the caller ends them at once, so the newer one does not wait out the old lifetime. A
   * stale holder in another engine is named in a "release-pinned-port" output.
   */
  claim(
    port: number | undefined,
    families: readonly (4 | 6)[],
    auth: Authenticated,
    id: AllocationId,
    reply: Reply,
  ): Set<Allocation> | undefined {
    const ports = this.#ports;
    if (port === undefined || !ports.isPinnable(port)) {
      const range = ports.pinned;
      const shown = port === undefined ? "in USERNAME" : String(port);
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        range === undefined
          ? `Forbidden: pinned port ${shown} refused, this relay has no pinned port range`
          : `Forbidden: pinned port ${shown} is outside this relay's pinned range ${range.min}-${range.max}`,
      );
      return undefined;
    }
    const refuse = () => {
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        `Forbidden: pinned port ${port} is held by another user`,
      );
      return undefined;
    };
    const stale = new Set<Allocation>();
    for (const family of families) {
      const holder = this.#holders.get(pinKey(family, port));
      if (holder === undefined) continue;
      if (holder.principal !== auth.principal) return refuse();
      stale.add(holder);
    }
    const claimed: (4 | 6)[] = [];
    const elsewhere: { family: 4 | 6; engine: number; allocation: AllocationId }[] = [];
    for (const family of families) {
      const claim = this.#owners.claim(port, family, auth.principal, id);
      if (claim === "held-by-other") {
        this.undo(port, claimed, id);
        return refuse();
      }
      claimed.push(family);
      if (claim !== "claimed") elsewhere.push({ family, ...claim });
    }
    for (const e of elsewhere) {
      this.#emit({ type: "release-pinned-port", ...e, port, principal: auth.principal });
    }
    return stale;
  }

  /** The Allocate `claim` let through failed before its allocation existed (its quota). */
  undo(port: number, families: readonly (4 | 6)[], id: AllocationId): void {
    for (const family of families) this.#owners.release(port, family, id);
  }

  /** `allocation` now holds pinned `port` on `families`. */
  hold(allocation: Allocation, families: readonly (4 | 6)[], port: number): void {
    allocation.pinnedPort = port;
    for (const family of families) this.#holders.set(pinKey(family, port), allocation);
  }

  /**
   * The allocation holding pinned `port` of `family` here, if it is `id` of `principal` (another
   * engine names it as the stale holder of a port it took over).
   */
  holder(family: 4 | 6, port: number, id: AllocationId, principal: string): Allocation | undefined {
    const holder = this.#holders.get(pinKey(family, port));
    return holder?.id === id && holder.principal === principal ? holder : undefined;
  }

  /** Give a relay socket's port back (and its pin and claim, if its allocation held one). */
  releasePort(socket: RelaySocket): void {
    this.#ports.release(socket.family, socket.port);
    const allocation = socket.allocation;
    if (allocation.pinnedPort !== socket.port) return;
    const key = pinKey(socket.family, socket.port);
    if (this.#holders.get(key) === allocation) this.#holders.delete(key);
    this.#owners.release(socket.port, socket.family, allocation.id);
  }
}

function pinKey(family: 4 | 6, port: number): number {
  return family * 65536 + port;
}
