/**
 * Pinned relay ports (auth/pinned-username.ts) on the allocation side: which allocation of this
 * server holds each pinned port, the claim every Allocate with a pin makes in PinnedPortOwners
 * (the server's own, or a table engines share), and the takeover by the same principal. Port
 * numbers themselves are relay-port-pool.ts's.
 *
 *   another principal holds the port (any family, any protocol, any engine)   403
 *   the same principal holds it on the same family, in this engine            that allocation
 *                                                                             ends ("taken-over")
 *   ... in another engine                                                     "release-pinned-port"
 *                                                                             for the runtime
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
  /** The allocation of this server holding each pinned port, keyed family * 65536 + port. */
  readonly #holders = new Map<number, Allocation>();
  readonly #owners: PinnedPortOwners;
  readonly #ports: RelayPortPool;
  readonly #emit: Emit;

  constructor(owners: PinnedPortOwners, ports: RelayPortPool, emit: Emit) {
    this.#owners = owners;
    this.#ports = ports;
    this.#emit = emit;
  }

  /**
   * Pinned credentials get exactly their port, on every family asked for, for the allocation
   * `id` about to be made. Refused (403 with a reason phrase saying which rule) when the port is
   * not in the pinned range or another principal holds it. An allocation of the same principal
   * holding it on the same family is stale (a tunnel that restarted or lost its connection): it
   * is ended (`end`), here at once, in another engine by the runtime, so the newer one does not
   * wait out the old lifetime. Returns false when a reply was sent.
   */
  take(
    port: number | undefined,
    families: readonly (4 | 6)[],
    auth: Authenticated,
    id: AllocationId,
    reply: Reply,
    end: (stale: Allocation) => void,
  ): boolean {
    const range = this.#ports.pinned;
    if (port === undefined || !this.#ports.isPinnable(port)) {
      const shown = port === undefined ? "in USERNAME" : String(port);
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        range === undefined
          ? `Forbidden: pinned port ${shown} refused, this relay has no pinned port range`
          : `Forbidden: pinned port ${shown} is outside this relay's pinned range ${range.min}-${range.max}`,
      );
      return false;
    }
    const refuse = (): false => {
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        `Forbidden: pinned port ${port} is held by another user`,
      );
      return false;
    };
    for (const family of families) {
      const holder = this.#holders.get(pinKey(family, port));
      if (holder !== undefined && holder.principal !== auth.principal) return refuse();
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
    const stale = new Set<Allocation>();
    for (const family of families) {
      const key = pinKey(family, port);
      const holder = this.#holders.get(key);
      if (holder === undefined) continue;
      this.#holders.delete(key);
      stale.add(holder);
    }
    for (const holder of stale) end(holder);
    for (const e of elsewhere) {
      this.#emit({
        type: "release-pinned-port",
        engine: e.engine,
        allocation: e.allocation,
        family: e.family,
        port,
        principal: auth.principal,
      });
    }
    return true;
  }

  /** The Allocate that `take` let through failed before its allocation existed (its quota). */
  undo(port: number, families: readonly (4 | 6)[], id: AllocationId): void {
    for (const family of families) this.#owners.release(port, family, id);
  }

  /** The allocation `take` let through exists: it holds the port on `families`. */
  hold(allocation: Allocation, port: number, families: readonly (4 | 6)[]): void {
    for (const family of families) this.#holders.set(pinKey(family, port), allocation);
  }

  /** A relay socket's port was given back: if it was its allocation's pin, so is the claim. */
  released(socket: RelaySocket): void {
    const allocation = socket.allocation;
    if (allocation.pinnedPort !== socket.port) return;
    const key = pinKey(socket.family, socket.port);
    if (this.#holders.get(key) === allocation) this.#holders.delete(key);
    this.#owners.release(socket.port, socket.family, allocation.id);
  }

  /**
   * Another engine took pinned `port` on `family` over for `principal` (its claim names
   * `allocation` of this engine as the stale holder): that allocation ends (`end`), if it
   * still holds the port. "none": it does not (ended meanwhile, or the port was claimed here
   * again since: the newer claim stays).
   */
  releaseFor(
    family: 4 | 6,
    port: number,
    allocation: AllocationId,
    principal: string,
    end: (stale: Allocation) => void,
  ): "released" | "none" {
    const holder = this.#holders.get(pinKey(family, port));
    if (holder === undefined || holder.id !== allocation || holder.principal !== principal) {
      return "none";
    }
    end(holder);
    return "released";
  }
}

function pinKey(family: 4 | 6, port: number): number {
  return family * 65536 + port;
}
