/**
 * Who owns each pinned relay port (auth/pinned-username.ts). A pinned port is a customer's
 * endpoint: it belongs to one principal at a time, whatever the family and the protocol (UDP or
 * RFC 6062 TCP) of the allocations holding it. Another principal asking for it gets 403; the
 * same principal takes it over (a tunnel that came back: its stale allocation ends), per family,
 * so a service exposed on an IPv4 and an IPv6 relay address with one pin keeps both.
 *
 * A server owns its pins by itself (LocalPinnedPortOwners). Engines that serve one relay
 * together (the relay's worker threads, each a TurnServer) inject one table they share, so the
 * rule holds whichever engine an Allocate reaches; such a table names the other engine's
 * holder, which the server asks the runtime to end ("release-pinned-port").
 */
import type { AllocationId } from "../ids.js";

/**
 * The answer to a claim: "claimed" (the port is this allocation's on that family from now on;
 * a holder of the same principal in this very engine is the server's to end), "held-by-other"
 * (another principal holds it, on some family: refused), or the holder of the same principal in
 * another engine, whose claim passed to this allocation: that allocation must end there.
 */
export type PinnedPortClaim =
  | "claimed"
  | "held-by-other"
  | { readonly engine: number; readonly allocation: AllocationId };

export interface PinnedPortOwners {
  /** Claim pinned `port` on `family` for `allocation` of `principal` (see PinnedPortClaim). */
  claim(port: number, family: 4 | 6, principal: string, allocation: AllocationId): PinnedPortClaim;
  /**
   * `allocation` no longer holds `port` on `family` (it ended, or its Allocate failed). Nothing
   * changes when another allocation claimed it since.
   */
  release(port: number, family: 4 | 6, allocation: AllocationId): void;
}

/** The owners of one server on its own. */
export class LocalPinnedPortOwners implements PinnedPortOwners {
  readonly #ports = new Map<
    number,
    { readonly principal: string; readonly holders: Map<4 | 6, AllocationId> }
  >();

  claim(port: number, family: 4 | 6, principal: string, allocation: AllocationId): PinnedPortClaim {
    const owner = this.#ports.get(port);
    if (owner === undefined) {
      this.#ports.set(port, { principal, holders: new Map([[family, allocation]]) });
      return "claimed";
    }
    if (owner.principal !== principal) return "held-by-other";
    owner.holders.set(family, allocation);
    return "claimed";
  }

  release(port: number, family: 4 | 6, allocation: AllocationId): void {
    const owner = this.#ports.get(port);
    if (owner?.holders.get(family) !== allocation) return;
    owner.holders.delete(family);
    if (owner.holders.size === 0) this.#ports.delete(port);
  }
}
