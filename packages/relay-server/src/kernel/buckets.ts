// relay-core's bandwidth buckets (BucketRef: an id, a rate, a burst) as kernel token buckets
// (indices 1..KERNEL_MAX_BUCKETS of the kernel path's bucket map). An id gets an index when a
// binding first names it (setBucket: configured and full, as relay-core's bucket starts) and
// gives it back when the last binding naming it ends, so a long-lived relay never runs out.
//
// The indices are shared by every engine of the process (one set of maps):
//
//   allocation buckets  ids are per engine: each engine takes its own contiguous share of
//                       1..ALLOCATION_BUCKETS and hands them out without a lock;
//   user buckets        ids are the same in every engine (the workers share one per-user bucket:
//                       shared/user-bandwidth.ts; one engine has only its own), so a user's
//                       bindings in every worker must be charged to one kernel bucket: a table
//                       in shared memory, under its own lock, maps the id to an index above
//                       ALLOCATION_BUCKETS and counts per engine the bindings naming it (the
//                       supervisor clears a dead worker's count).

import type { KernelPath } from "@turnpike/kernel-path";
import type { BucketRef } from "@turnpike/relay-core";
import { lockOwnerOfWorker, SharedLock } from "../shared/shared-lock.js";

/** The kernel bucket indices: allocation buckets below, user buckets above. */
export const KERNEL_MAX_BUCKETS = 65536;
const USER_BUCKETS = 8192;
const ALLOCATION_BUCKETS = KERNEL_MAX_BUCKETS - USER_BUCKETS;

export type BucketKind = "allocation" | "user";

interface Held {
  readonly index: number;
  users: number;
}

/** Engine `index` of `count`: its share of the allocation bucket indices 1..total. */
export function bucketShare(
  index: number,
  count: number,
  total = ALLOCATION_BUCKETS,
): { first: number; count: number } {
  const first = 1 + Math.floor((index * total) / count);
  const end = 1 + Math.floor(((index + 1) * total) / count);
  return { first, count: end - first };
}

export class KernelBuckets {
  private readonly held = new Map<number, Held>();
  private readonly free: number[] = [];
  private next: number;
  private readonly share: { first: number; count: number };

  constructor(
    private readonly kernel: KernelPath,
    /** This engine and how many there are (one engine: 0 of 1). */
    engine: { readonly index: number; readonly count: number },
    private readonly users: UserBuckets,
  ) {
    this.share = bucketShare(engine.index, engine.count);
    this.next = this.share.first;
  }

  /** The kernel index for `ref` (0: no limit), or undefined when none is left for it. */
  acquire(kind: BucketKind, ref: BucketRef | undefined): number | undefined {
    if (ref === undefined) return 0;
    if (kind === "user") return this.users.acquire(ref);
    const held = this.held.get(ref.id);
    if (held !== undefined) {
      held.users++;
      return held.index;
    }
    const end = this.share.first + this.share.count;
    const index = this.free.pop() ?? (this.next < end ? this.next++ : undefined);
    if (index === undefined) return undefined;
    this.kernel.setBucket(index, {
      bytesPerSecond: ref.bytesPerSecond,
      burstBytes: ref.burstBytes,
    });
    this.held.set(ref.id, { index, users: 1 });
    return index;
  }

  /** A binding naming `ref` ended. */
  release(kind: BucketKind, ref: BucketRef | undefined): void {
    if (ref === undefined) return;
    if (kind === "user") {
      this.users.release(ref);
      return;
    }
    const held = this.held.get(ref.id);
    if (held === undefined || --held.users > 0) return;
    this.held.delete(ref.id);
    this.free.push(held.index);
  }
}

// The user table: word 0 the lock; then per entry its id (0 free, -1 freed: probing goes on
// past it) and, per engine, how many of that engine's bindings name it.
const FREED = -1;

/** The shared memory of the user table for `engines` engines. */
export function userBucketTable(engines: number): SharedArrayBuffer {
  return new SharedArrayBuffer((1 + USER_BUCKETS * (1 + engines)) * Int32Array.BYTES_PER_ELEMENT);
}

/** User bucket ids to kernel indices, for every engine of the process (see the header). */
export class UserBuckets {
  private readonly words: Int32Array;
  private readonly lock: SharedLock;
  private readonly stride: number;

  constructor(
    table: SharedArrayBuffer,
    private readonly engines: number,
    /** This thread: an engine's index, or `engines` for the supervisor. */
    private readonly engine: number,
    /** Who configures a bucket first seen (the supervisor has no use for it). */
    private readonly kernel: KernelPath | undefined,
  ) {
    this.words = new Int32Array(table);
    this.lock = new SharedLock(this.words.subarray(0, 1), lockOwnerOfWorker(engine));
    this.stride = 1 + engines;
  }

  acquire(ref: BucketRef): number | undefined {
    let fresh = false;
    const entry = this.lock.locked(() => {
      const found = this.find(ref.id, true);
      if (found === undefined) return undefined;
      const at = 1 + found * this.stride;
      if (this.words[at] !== ref.id) {
        this.words[at] = ref.id;
        fresh = true;
      }
      this.words[at + 1 + this.engine]! += 1;
      return found;
    });
    if (entry === undefined) return undefined;
    const index = ALLOCATION_BUCKETS + 1 + entry;
    if (fresh) {
      this.kernel?.setBucket(index, {
        bytesPerSecond: ref.bytesPerSecond,
        burstBytes: ref.burstBytes,
      });
    }
    return index;
  }

  release(ref: BucketRef): void {
    this.lock.locked(() => {
      const found = this.find(ref.id, false);
      if (found === undefined) return;
      const at = 1 + found * this.stride;
      if (this.words[at + 1 + this.engine]! > 0) this.words[at + 1 + this.engine]! -= 1;
      this.freeIfUnheld(at);
    });
  }

  /** Engine `engine` is gone (the supervisor): what it held, given back. */
  releaseEngine(engine: number): void {
    this.lock.releaseHeldBy(lockOwnerOfWorker(engine));
    this.lock.locked(() => {
      for (let e = 0; e < USER_BUCKETS; e++) {
        const at = 1 + e * this.stride;
        if (this.words[at]! <= 0) continue;
        this.words[at + 1 + engine] = 0;
        this.freeIfUnheld(at);
      }
    });
  }

  private freeIfUnheld(at: number): void {
    for (let e = 0; e < this.engines; e++) if (this.words[at + 1 + e] !== 0) return;
    this.words[at] = FREED;
  }

  /** The entry holding `id` (or, `insert`ing, the first reusable one on its probe path). */
  private find(id: number, insert: boolean): number | undefined {
    let reusable: number | undefined;
    const start = Math.imul(id, 0x9e3779b1) >>> 0;
    for (let i = 0; i < USER_BUCKETS; i++) {
      const e = (start + i) % USER_BUCKETS;
      const word = this.words[1 + e * this.stride]!;
      if (word === id) return e;
      if (word === FREED) reusable ??= e;
      else if (word === 0) return insert ? (reusable ?? e) : undefined;
    }
    return insert ? reusable : undefined;
  }
}
