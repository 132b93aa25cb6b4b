// relay-core's bandwidth buckets (BucketRef: an id, a rate, a burst) as kernel token buckets
// (indices 1..maxBuckets of the kernel path's bucket map). An id gets an index when a binding
// first names it (setBucket: configured and full, as relay-core's bucket starts) and gives it
// back when the last binding naming it ends, so a long-lived relay never runs out.
//
// The indices are shared by every engine of the process (one set of maps); each engine takes
// its own contiguous share of them, so no index is handed out twice and nothing is locked.
// Allocation bucket ids are per engine, and so are user bucket ids while each engine keeps
// its own per-user buckets (relay-core's LocalUserBandwidth).

import type { KernelPath } from "@turnpike/kernel-path";
import type { BucketRef } from "@turnpike/relay-core";

export type BucketKind = "allocation" | "user";

interface Held {
  readonly index: number;
  users: number;
}

export class KernelBuckets {
  private readonly held: Record<BucketKind, Map<number, Held>> = {
    allocation: new Map(),
    user: new Map(),
  };
  private readonly free: number[] = [];
  private next: number;

  /** Indices first .. first + count - 1 are this engine's. */
  constructor(
    private readonly kernel: KernelPath,
    private readonly first: number,
    private readonly count: number,
  ) {
    this.next = first;
  }

  /** The kernel index for `ref` (0: no limit), or undefined when this engine has none left. */
  acquire(kind: BucketKind, ref: BucketRef | undefined): number | undefined {
    if (ref === undefined) return 0;
    const held = this.held[kind].get(ref.id);
    if (held !== undefined) {
      held.users++;
      return held.index;
    }
    const index =
      this.free.pop() ?? (this.next < this.first + this.count ? this.next++ : undefined);
    if (index === undefined) return undefined;
    this.kernel.setBucket(index, {
      bytesPerSecond: ref.bytesPerSecond,
      burstBytes: ref.burstBytes,
    });
    this.held[kind].set(ref.id, { index, users: 1 });
    return index;
  }

  /** A binding naming `ref` ended. */
  release(kind: BucketKind, ref: BucketRef | undefined): void {
    if (ref === undefined) return;
    const held = this.held[kind].get(ref.id);
    if (held === undefined || --held.users > 0) return;
    this.held[kind].delete(ref.id);
    this.free.push(held.index);
  }
}

/** Engine `index` of `count`: its share of the bucket indices 1..total. */
export function bucketShare(
  index: number,
  count: number,
  total: number,
): { first: number; count: number } {
  const first = 1 + Math.floor((index * total) / count);
  const end = 1 + Math.floor(((index + 1) * total) / count);
  return { first, count: end - first };
}
