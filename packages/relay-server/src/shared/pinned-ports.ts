// Who owns each pinned relay port, for every worker at once: relay-core's PinnedPortOwners
// (relay-core/src/server/pinned-port-owners.ts) in shared memory. A pinned port is a customer's
// endpoint: one principal holds it, on both families and both protocols, whichever worker its
// allocations live in; relay-core refuses every other principal with 403 and lets the same one
// take it over. Each worker binds its own sockets, and a UDP and a TCP socket on one port never
// collide in the kernel, so without this table another principal's TCP allocation on the other
// worker got a port held over UDP (and its peers' connections).
//
// One entry per port of the pinned range, indexed by the port itself (no hashing): the
// principal (its keyed 64-bit hash: principals are authenticated, and a pin is minted by the
// platform) and, per family, the holding worker and its allocation id. A claim by the same
// principal passes the family's holder to the claimer and names the old one, which relay-core
// asks its worker to end (the "release-pinned-port" output, worker-link.ts); a release only
// clears the claim its own allocation still has. A dead worker's holders are cleared.

import type { AllocationId, PinnedPortClaim, PinnedPortOwners } from "@turnpike/relay-core";
import type { Carver } from "./carve.js";
import type { KeyedHash } from "./keyed-hash.js";
import type { SharedLock } from "./shared-lock.js";

export interface PinnedPortRange {
  readonly min: number;
  readonly max: number;
}

// Per port: principal hash high, low; holder worker + 1 for IPv4, for IPv6 (0: none). And the
// holders' allocation ids as doubles (relay-core's ids count past 2^31).
const STRIDE = 4;

export function carvePinnedPorts(c: Carver, range: PinnedPortRange) {
  const ports = range.max - range.min + 1;
  return { owners: c.int32(ports * STRIDE), allocations: c.float64(ports * 2) };
}

export type PinnedPortsViews = ReturnType<typeof carvePinnedPorts>;

export class SharedPinnedPorts implements PinnedPortOwners {
  constructor(
    private readonly range: PinnedPortRange,
    private readonly views: PinnedPortsViews,
    private readonly worker: number,
    private readonly lock: SharedLock,
    private readonly hash: KeyedHash,
  ) {}

  claim(port: number, family: 4 | 6, principal: string, allocation: AllocationId): PinnedPortClaim {
    if (port < this.range.min || port > this.range.max) return "held-by-other";
    const [hi, lo] = this.hash.of(principal);
    const { owners, allocations } = this.views;
    const at = (port - this.range.min) * STRIDE;
    const holderAt = at + (family === 4 ? 2 : 3);
    const allocationAt = (port - this.range.min) * 2 + (family === 4 ? 0 : 1);
    return this.lock.locked((): PinnedPortClaim => {
      if (owners[at + 2] === 0 && owners[at + 3] === 0) {
        owners[at] = hi;
        owners[at + 1] = lo;
      } else if (owners[at] !== hi || owners[at + 1] !== lo) {
        return "held-by-other";
      }
      const before = owners[holderAt]!;
      const beforeAllocation = allocations[allocationAt]!;
      owners[holderAt] = this.worker + 1;
      allocations[allocationAt] = allocation;
      if (before === 0 || before === this.worker + 1) return "claimed";
      return { engine: before - 1, allocation: beforeAllocation as AllocationId };
    });
  }

  release(port: number, family: 4 | 6, allocation: AllocationId): void {
    if (port < this.range.min || port > this.range.max) return;
    const { owners, allocations } = this.views;
    const at = (port - this.range.min) * STRIDE;
    const holderAt = at + (family === 4 ? 2 : 3);
    const allocationAt = (port - this.range.min) * 2 + (family === 4 ? 0 : 1);
    this.lock.locked(() => {
      if (owners[holderAt] !== this.worker + 1 || allocations[allocationAt] !== allocation) return;
      owners[holderAt] = 0;
      if (owners[at + 2] === 0 && owners[at + 3] === 0) owners.fill(0, at, at + STRIDE);
    });
  }

  /** Worker `w` died: its allocations hold nothing any more. The caller holds the lock. */
  clearWorker(w: number): void {
    const owners = this.views.owners;
    for (let at = 0; at < owners.length; at += STRIDE) {
      if (owners[at + 2] === w + 1) owners[at + 2] = 0;
      if (owners[at + 3] === w + 1) owners[at + 3] = 0;
      if (owners[at + 2] === 0 && owners[at + 3] === 0) owners.fill(0, at, at + STRIDE);
    }
  }
}
