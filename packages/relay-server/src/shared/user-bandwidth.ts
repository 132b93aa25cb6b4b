// Per-user bandwidth limits for every worker at once: relay-core's UserBandwidth
// (relay-core/src/server/bandwidth.ts) backed by shared memory, so a user's bytes per second
// hold for the process whichever workers its allocations live in (relay-core's own buckets
// are per engine: a user with allocations on N workers would get N times its limit).
//
// One token bucket per user with live allocations, in a shared table keyed by the principal's
// keyed hash: its tokens and when they were computed, a user id that is the same in every
// worker (relay-core names it to a kernel data path as the user's bucket, so workers that share
// a kernel map share the kernel bucket too), and per worker how many of its allocations hold it
// (the supervisor clears a dead worker's share). The entry goes with the user's last
// allocation.
//
// The data path does not lock per datagram: a worker leases tokens from the shared bucket in
// chunks and spends them locally (a number in a Float64Array, no allocation), locking again only
// when its lease runs out; what is left goes back when its last allocation of that user ends.
// The lease size, LEASE_SHARE of the burst spread over the workers, within [MIN_LEASE,
// MAX_LEASE]:
//   - it never lets a user exceed its rate: leased tokens are taken from the bucket first;
//   - it bounds the burst beyond the bucket's to one lease per worker (tokens a worker leased,
//     left idle, then spent on top of a bucket that refilled meanwhile): at most a quarter of
//     the burst, or MIN_LEASE per worker with very many workers;
//   - at 1,200-byte datagrams a 16 KiB lease is one lock per 13 datagrams, so at 100 k
//     datagrams a second of one limited user, under 8,000 short critical sections a second.

import type { BandwidthLimit, ByteBucket, UserBandwidth, UserBucket } from "@turnpike/relay-core";
import type { Carver } from "./carve.js";
import type { KeyedHash } from "./keyed-hash.js";
import type { SharedLock } from "./shared-lock.js";
import { SlotTable } from "./slot-table.js";

const LEASE_SHARE = 1 / 4;
const MIN_LEASE = 1024;
const MAX_LEASE = 16 << 10;

/** The lease for `workers` sharing a bucket of `limit` (see above). */
export function leaseBytes(limit: BandwidthLimit, workers: number): number {
  const share = Math.floor((limit.burstBytes * LEASE_SHARE) / workers);
  return Math.min(MAX_LEASE, Math.max(MIN_LEASE, share));
}

// Per slot: principal hash high, low, user id, then one hold count per worker. Floats: tokens,
// when they were computed (ms since the epoch: every worker's clock).
const ID = 2;
const HOLDS = 3;

export function carveUserBandwidth(c: Carver, workers: number, slots: number) {
  return {
    nextId: c.int32(1),
    words: c.int32(slots * (HOLDS + workers)),
    buckets: c.float64(slots * 2),
  };
}

export type UserBandwidthViews = ReturnType<typeof carveUserBandwidth>;

/** A user's share of its bucket in one worker: leased tokens, spent without a lock. */
class LeasedBucket implements ByteBucket {
  /** Bytes leased from the shared bucket and not spent yet. */
  readonly lease = new Float64Array(1);

  constructor(
    private readonly shared: SharedUserBandwidth,
    readonly hi: number,
    readonly lo: number,
  ) {}

  take(bytes: number, now: number): boolean {
    const lease = this.lease;
    if (lease[0]! >= bytes) {
      lease[0]! -= bytes;
      return true;
    }
    return this.shared.topUp(this, bytes, now);
  }

  refund(bytes: number): void {
    this.lease[0]! += bytes;
  }

  charge(bytes: number, now: number): number {
    const lease = this.lease;
    if (lease[0]! >= bytes) {
      lease[0]! -= bytes;
      return 0;
    }
    return this.shared.chargeShared(this, bytes, now);
  }
}

/** No room for the user's bucket (a table sized for every allocation: not expected): refuse. */
const CLOSED: ByteBucket = { take: () => false, refund: () => {}, charge: () => 1000 };

export class SharedUserBandwidth implements UserBandwidth {
  private readonly table: SlotTable;
  private readonly perMs: number;
  private readonly lease: number;
  /** This worker's users: its allocations of each, and their bucket. */
  private readonly local = new Map<string, { user: UserBucket; holds: number }>();

  constructor(
    private readonly limit: BandwidthLimit,
    private readonly workers: number,
    slots: number,
    private readonly views: UserBandwidthViews,
    private readonly worker: number,
    private readonly lock: SharedLock,
    private readonly hash: KeyedHash,
    /** This engine's clock (relay-core's `now`) to the one every worker shares. */
    private readonly wallClock: (now: number) => number,
  ) {
    this.table = new SlotTable(slots, views.words, HOLDS + workers, views.buckets, 2);
    this.perMs = limit.bytesPerSecond / 1000;
    this.lease = leaseBytes(limit, workers);
  }

  acquire(principal: string, now: number): UserBucket {
    const held = this.local.get(principal);
    if (held !== undefined) {
      held.holds++;
      return held.user;
    }
    const [hi, lo] = this.hash.of(principal);
    const t = this.table;
    const nowMs = this.wallClock(now);
    const user = this.lock.locked((): UserBucket => {
      const slot = t.findOrInsert(hi, lo);
      if (slot < 0) return { id: this.nextId(), bucket: CLOSED };
      const at = slot * t.stride;
      if (t.words[at + ID] === 0) {
        t.words[at + ID] = this.nextId();
        t.floats![slot * 2] = this.limit.burstBytes;
        t.floats![slot * 2 + 1] = nowMs;
      }
      t.words[at + HOLDS + this.worker]! += 1;
      return { id: t.words[at + ID]!, bucket: new LeasedBucket(this, hi, lo) };
    });
    this.local.set(principal, { user, holds: 1 });
    return user;
  }

  release(principal: string): void {
    const held = this.local.get(principal);
    if (held === undefined || --held.holds > 0) return;
    this.local.delete(principal);
    const bucket = held.user.bucket;
    if (!(bucket instanceof LeasedBucket)) return;
    const t = this.table;
    this.lock.locked(() => {
      const slot = t.find(bucket.hi, bucket.lo);
      if (slot < 0) return;
      // What is left of the lease goes back.
      const b = t.floats!;
      b[slot * 2] = Math.min(this.limit.burstBytes, b[slot * 2]! + bucket.lease[0]!);
      const at = slot * t.stride;
      t.words[at + HOLDS + this.worker]! -= 1;
      if (this.holders(at) === 0) t.remove(slot);
    });
  }

  /** `bucket`'s lease is short of `bytes`: lease more (true), or refuse (nothing taken). */
  topUp(bucket: LeasedBucket, bytes: number, now: number): boolean {
    const nowMs = this.wallClock(now);
    return this.lock.locked(() => {
      const slot = this.table.find(bucket.hi, bucket.lo);
      if (slot < 0) return false;
      const tokens = this.refill(slot, nowMs);
      const need = bytes - bucket.lease[0]!;
      if (tokens < need) return false;
      const grant = Math.min(tokens, need + this.lease);
      this.table.floats![slot * 2] = tokens - grant;
      bucket.lease[0] = grant - need;
      return true;
    });
  }

  /** Stream bytes beyond `bucket`'s lease: into the shared bucket, into debt if need be. */
  chargeShared(bucket: LeasedBucket, bytes: number, now: number): number {
    const nowMs = this.wallClock(now);
    return this.lock.locked(() => {
      const slot = this.table.find(bucket.hi, bucket.lo);
      if (slot < 0) return 0;
      const tokens = this.refill(slot, nowMs) - (bytes - bucket.lease[0]!);
      bucket.lease[0] = 0;
      this.table.floats![slot * 2] = tokens;
      return tokens >= 0 ? 0 : Math.ceil(-tokens / this.perMs);
    });
  }

  /** Worker `w` died: its allocations hold no bucket any more. The caller holds the lock. */
  clearWorker(w: number): void {
    const t = this.table;
    t.removeWhere((slot) => {
      const at = slot * t.stride;
      t.words[at + HOLDS + w] = 0;
      return this.holders(at) === 0;
    });
  }

  /** The tokens of the bucket in `slot` at `nowMs` (a clock that steps back adds none). */
  private refill(slot: number, nowMs: number): number {
    const b = this.table.floats!;
    const elapsed = nowMs - b[slot * 2 + 1]!;
    if (elapsed > 0) {
      b[slot * 2] = Math.min(this.limit.burstBytes, b[slot * 2]! + elapsed * this.perMs);
      b[slot * 2 + 1] = nowMs;
    }
    return b[slot * 2]!;
  }

  private holders(at: number): number {
    let n = 0;
    for (let w = 0; w < this.workers; w++) n += this.table.words[at + HOLDS + w]!;
    return n;
  }

  /** A user id no other live user has, never 0 (a 31-bit counter; callers hold the lock). */
  private nextId(): number {
    const next = this.views.nextId;
    next[0] = next[0]! >= 0x7fffffff ? 1 : next[0]! + 1;
    return next[0]!;
  }
}
