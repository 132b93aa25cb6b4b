/**
 * Pinned ports (Turnpike's own; RFC 8656 §7.2 leaves the choice of the relayed transport address
 * to the server): credentials that name their relay port (auth/pinned-username.ts) get exactly
 * that port, on every family their Allocate asks for. Which allocation holds each pinned port,
 * whether a new Allocate may take it, and which stale holder of the same principal gives it up.
 * The port numbers themselves are relay-port-pool.ts's.
 */

import { ErrorCode } from "../codec/constants.js";
import type { Allocation, RelaySocket } from "./allocation.js";
import type { Authenticated } from "./authentication.js";
import type { RelayPortPool } from "./relay-port-pool.js";
import type { Reply } from "./responses.js";

export class PinnedPorts {
  /** The allocation holding each pinned port, keyed family * 65536 + port. */
  readonly #holders = new Map<number, Allocation>();
  readonly #ports: RelayPortPool;

  constructor(ports: RelayPortPool) {
    this.#ports = ports;
  }

  /**
   * May an Allocate of `auth` take pinned `port` on `families`? Refused (403 with a reason
   * phrase saying which rule) when the port is not in the pinned range or another user holds
   * it: undefined, the reply sent. Else the allocations of the same user that hold it: they are
   * stale (a tunnel that restarted or lost its connection) and the caller ends them at once, so
   * the newer one does not wait out the old lifetime.
   */
  claim(
    port: number | undefined,
    families: readonly (4 | 6)[],
    auth: Authenticated,
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
    const stale = new Set<Allocation>();
    for (const family of families) {
      const holder = this.#holders.get(pinKey(family, port));
      if (holder === undefined) continue;
      if (holder.principal !== auth.principal) {
        reply.error(
          ErrorCode.Forbidden,
          undefined,
          `Forbidden: pinned port ${port} is held by another user`,
        );
        return undefined;
      }
      stale.add(holder);
    }
    return stale;
  }

  /** `allocation` now holds pinned `port` on `families`. */
  hold(allocation: Allocation, families: readonly (4 | 6)[], port: number): void {
    allocation.pinnedPort = port;
    for (const family of families) this.#holders.set(pinKey(family, port), allocation);
  }

  /** The allocation holding pinned `port` of `family` here, if any. */
  holder(family: 4 | 6, port: number): Allocation | undefined {
    return this.#holders.get(pinKey(family, port));
  }

  /** Give a relay socket's port back (and its pin, if its allocation held one). */
  releasePort(socket: RelaySocket): void {
    this.#ports.release(socket.family, socket.port);
    const key = pinKey(socket.family, socket.port);
    if (this.#holders.get(key) === socket.allocation) this.#holders.delete(key);
  }
}

function pinKey(family: 4 | 6, port: number): number {
  return family * 65536 + port;
}
