// Limits that hold for the whole process when several workers each run their own relay-core:
// total and per-user allocations, total and per-IP client connections, and the per-source
// rate of unauthenticated answers. They live in one SharedArrayBuffer every worker maps, and
// every change happens under one lock word (Atomics), so a limit is exact whichever worker a
// client lands on: with a per-user limit of 6 and two workers, the seventh allocation of that
// user is refused with 486 on either.
//
// Each worker counts what it holds in tables of its own (a check sums over the workers), so
// when a worker dies the supervisor clears exactly what that worker held, and the limits stay
// exact across a restart. Keys (user names, IP addresses) are hashed to 64 bits (two
// independent 32-bit lanes) in open-addressing tables with linear probing and backward-shift
// deletion: an entry whose count returns to zero is removed at once, so tables never fill with
// tombstones. Two different keys would have to collide in all 64 bits to share a count.
//
// The critical sections are a handful of memory operations; allocations and connections come
// at thousands per second at most, so one lock is plenty.

const EMPTY = 0;
/** A probe run longer than this counts as a full table (bounded work under the lock). */
const MAX_PROBES = 128;

interface Table {
  readonly slots: number;
  /** hashHi, hashLo per slot (hashLo is never 0 for a used slot). */
  readonly keys: Int32Array;
  /** One count per slot. */
  readonly counts: Int32Array;
}

export interface SharedLimitsInit {
  readonly buffer: SharedArrayBuffer;
  readonly workers: number;
  readonly maxAllocations: number;
  readonly maxAllocationsPerUser: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  /** Unauthenticated answers per second per source IP (0 = unlimited); burst twice that. */
  readonly unauthenticatedRate: number;
  readonly userSlots: number;
  readonly ipSlots: number;
  readonly rateSlots: number;
}

/** Enough slots for `entries` keys at half load, within 2^20. */
function slotsFor(entries: number): number {
  let slots = 1024;
  while (slots < entries * 2 && slots < 1 << 20) slots *= 2;
  return slots;
}

// Header (Int32): the lock, then per worker its allocations and its connections.
const LOCK = 0;
const headerInts = (workers: number) => 2 + workers * 2;
const allocationsAt = (w: number) => 2 + w * 2;
const connectionsAt = (w: number) => 3 + w * 2;

const countTableBytes = (slots: number) => slots * 12;
/** Rate buckets: keys (2 x Int32) and two Float64 per slot (tokens, when computed). */
const rateTableBytes = (slots: number) => slots * 8 + slots * 16;

function layout(init: Omit<SharedLimitsInit, "buffer">) {
  const header = Math.ceil((headerInts(init.workers) * 4) / 8) * 8;
  const users = header;
  const ips = users + init.workers * countTableBytes(init.userSlots);
  const rates = ips + init.workers * countTableBytes(init.ipSlots);
  return { users, ips, rates, bytes: rates + rateTableBytes(init.rateSlots) };
}

export function createSharedLimits(options: {
  workers: number;
  maxAllocations: number;
  maxAllocationsPerUser: number;
  maxConnections: number;
  maxConnectionsPerIp: number;
  unauthenticatedRate: number;
  /** Slots per table (a power of two); tests use tiny tables to force collisions. */
  tableSlots?: number;
}): SharedLimitsInit {
  const { tableSlots, ...limits } = options;
  const init = {
    ...limits,
    userSlots: tableSlots ?? slotsFor(Math.min(options.maxAllocations, 1 << 19)),
    ipSlots: tableSlots ?? slotsFor(Math.min(options.maxConnections, 1 << 19)),
    rateSlots: tableSlots ?? 1 << 16,
  };
  return { ...init, buffer: new SharedArrayBuffer(layout(init).bytes) };
}

export type ConnectionVerdict = "ok" | "total" | "per-ip";

/** One thread's view of the shared limits, counting as worker `worker`. */
export class SharedLimits {
  private readonly header: Int32Array;
  private readonly users: Table[] = [];
  private readonly ips: Table[] = [];
  private readonly rateKeys: Int32Array;
  private readonly rateBuckets: Float64Array;

  constructor(
    private readonly init: SharedLimitsInit,
    private readonly worker: number,
  ) {
    const l = layout(init);
    this.header = new Int32Array(init.buffer, 0, headerInts(init.workers));
    for (let w = 0; w < init.workers; w++) {
      this.users.push(
        countTable(init.buffer, l.users + w * countTableBytes(init.userSlots), init.userSlots),
      );
      this.ips.push(
        countTable(init.buffer, l.ips + w * countTableBytes(init.ipSlots), init.ipSlots),
      );
    }
    this.rateKeys = new Int32Array(init.buffer, l.rates, init.rateSlots * 2);
    this.rateBuckets = new Float64Array(
      init.buffer,
      l.rates + init.rateSlots * 8,
      init.rateSlots * 2,
    );
  }

  /**
   * Reserve one allocation for `user`: 0 when granted, 486 (RFC 8656 §7.2, the user's quota)
   * or 508 (the relay's total, or no room left to count the user).
   */
  acquireAllocation(user: string): 0 | 486 | 508 {
    return this.locked(() => {
      if (this.sum(allocationsAt) >= this.init.maxAllocations) return 508;
      const [hi, lo] = hash64(user);
      if (sumOf(this.users, hi, lo) >= this.init.maxAllocationsPerUser) return 486;
      const own = this.users[this.worker]!;
      const slot = findOrInsert(own, hi, lo);
      if (slot < 0) return 508;
      own.counts[slot]! += 1;
      this.header[allocationsAt(this.worker)]! += 1;
      return 0;
    });
  }

  releaseAllocation(user: string): void {
    this.locked(() => {
      const [hi, lo] = hash64(user);
      const own = this.users[this.worker]!;
      const slot = find(own, hi, lo);
      if (slot < 0) return;
      this.header[allocationsAt(this.worker)]! -= 1;
      if (--own.counts[slot]! <= 0) remove(own, slot);
    });
  }

  /**
   * A new client connection from `source` (an IPv4 address or an IPv6 /64): a slot of
   * --max-connections, and one of the source's not-yet-authenticated connections
   * (--max-connections-per-ip; 0 = no per-source cap).
   */
  admitConnection(source: string): ConnectionVerdict {
    return this.locked(() => {
      if (this.sum(connectionsAt) >= this.init.maxConnections) return "total";
      const [hi, lo] = hash64(source);
      const perSource = this.init.maxConnectionsPerIp;
      if (perSource > 0 && sumOf(this.ips, hi, lo) >= perSource) return "per-ip";
      const own = this.ips[this.worker]!;
      const slot = findOrInsert(own, hi, lo);
      if (slot < 0) return "total";
      own.counts[slot]! += 1;
      this.header[connectionsAt(this.worker)]! += 1;
      return "ok";
    });
  }

  /** The connection closed; `counted`: it still counted against its source. */
  releaseConnection(source: string, counted: boolean): void {
    this.locked(() => {
      this.header[connectionsAt(this.worker)]! -= 1;
      if (counted) this.countSource(source, -1);
    });
  }

  /**
   * The connection authenticated (-1: it no longer counts against its source) or lost its
   * allocation (+1: it counts again; never refused for that).
   */
  recountSource(source: string, delta: 1 | -1): void {
    this.locked(() => this.countSource(source, delta));
  }

  private countSource(source: string, delta: number): void {
    const [hi, lo] = hash64(source);
    const own = this.ips[this.worker]!;
    const slot = delta > 0 ? findOrInsert(own, hi, lo) : find(own, hi, lo);
    if (slot < 0) return;
    own.counts[slot]! += delta;
    if (own.counts[slot]! <= 0) remove(own, slot);
  }

  /**
   * One token of `source`'s bucket at `nowMs` (a clock every worker shares: ms since the
   * epoch); false = over the limit. The same rule as relay-core's SourceRateLimiter.
   */
  allowUnauthenticated(source: string, nowMs: number): boolean {
    const rate = this.init.unauthenticatedRate;
    if (rate <= 0) return true;
    const burst = rate * 2;
    return this.locked(() => {
      const keys = this.rateKeys;
      const b = this.rateBuckets;
      const mask = this.init.rateSlots - 1;
      const [hi, lo] = hash64(source);
      let slot = -1;
      let free = -1;
      for (let i = 0, s = (lo >>> 0) & mask; i < MAX_PROBES; i++, s = (s + 1) & mask) {
        if (keys[s * 2 + 1] === EMPTY) {
          free = s;
          break;
        }
        if (keys[s * 2] === hi && keys[s * 2 + 1] === lo) {
          slot = s;
          break;
        }
      }
      if (slot < 0) {
        // New source; with no free slot near its home (a spray of sources), it takes over its
        // home slot: the evicted source starts full again next time, as with the single
        // engine's limiter. Entries are never removed, so probe runs stay intact.
        slot = free >= 0 ? free : (lo >>> 0) & mask;
        keys[slot * 2] = hi;
        keys[slot * 2 + 1] = lo;
        b[slot * 2] = burst;
        b[slot * 2 + 1] = nowMs;
      } else if (nowMs > b[slot * 2 + 1]!) {
        b[slot * 2] = Math.min(burst, b[slot * 2]! + ((nowMs - b[slot * 2 + 1]!) * rate) / 1000);
        b[slot * 2 + 1] = nowMs;
      }
      if (b[slot * 2]! < 1) return false;
      b[slot * 2]! -= 1;
      return true;
    });
  }

  /** Process-wide totals (for tests and metrics). */
  totals(): { allocations: number; connections: number } {
    return this.locked(() => ({
      allocations: this.sum(allocationsAt),
      connections: this.sum(connectionsAt),
    }));
  }

  /** Forget everything worker `w` held: it died, and its engine, sockets and clients with it. */
  clearWorker(w: number): void {
    this.locked(() => {
      this.header[allocationsAt(w)] = 0;
      this.header[connectionsAt(w)] = 0;
      for (const t of [this.users[w]!, this.ips[w]!]) {
        t.keys.fill(0);
        t.counts.fill(0);
      }
    });
  }

  private sum(at: (w: number) => number): number {
    let total = 0;
    for (let w = 0; w < this.init.workers; w++) total += this.header[at(w)]!;
    return total;
  }

  private locked<T>(fn: () => T): T {
    const h = this.header;
    // Node allows Atomics.wait on every thread; the wait is short (a few memory operations).
    while (Atomics.compareExchange(h, LOCK, 0, 1) !== 0) Atomics.wait(h, LOCK, 1, 1);
    try {
      return fn();
    } finally {
      Atomics.store(h, LOCK, 0);
      Atomics.notify(h, LOCK, 1);
    }
  }
}

function countTable(buffer: SharedArrayBuffer, offset: number, slots: number): Table {
  return {
    slots,
    keys: new Int32Array(buffer, offset, slots * 2),
    counts: new Int32Array(buffer, offset + slots * 8, slots),
  };
}

function find(t: Table, hi: number, lo: number): number {
  const mask = t.slots - 1;
  for (let i = 0, s = (lo >>> 0) & mask; i < MAX_PROBES; i++, s = (s + 1) & mask) {
    const klo = t.keys[s * 2 + 1]!;
    if (klo === EMPTY) return -1;
    if (klo === lo && t.keys[s * 2] === hi) return s;
  }
  return -1;
}

function findOrInsert(t: Table, hi: number, lo: number): number {
  const mask = t.slots - 1;
  for (let i = 0, s = (lo >>> 0) & mask; i < MAX_PROBES; i++, s = (s + 1) & mask) {
    const klo = t.keys[s * 2 + 1]!;
    if (klo === lo && t.keys[s * 2] === hi) return s;
    if (klo === EMPTY) {
      t.keys[s * 2] = hi;
      t.keys[s * 2 + 1] = lo;
      t.counts[s] = 0;
      return s;
    }
  }
  return -1;
}

function sumOf(tables: readonly Table[], hi: number, lo: number): number {
  let total = 0;
  for (const t of tables) {
    const s = find(t, hi, lo);
    if (s >= 0) total += t.counts[s]!;
  }
  return total;
}

/**
 * Backward-shift deletion (Knuth's Algorithm R): each later entry of the probe run moves into
 * the hole unless its home lies cyclically between the hole and where it sits.
 */
function remove(t: Table, slot: number): void {
  const mask = t.slots - 1;
  let hole = slot;
  for (let next = (hole + 1) & mask; t.keys[next * 2 + 1] !== EMPTY; next = (next + 1) & mask) {
    const home = (t.keys[next * 2 + 1]! >>> 0) & mask;
    if (((hole - home) & mask) < ((next - home) & mask)) {
      t.keys[hole * 2] = t.keys[next * 2]!;
      t.keys[hole * 2 + 1] = t.keys[next * 2 + 1]!;
      t.counts[hole] = t.counts[next]!;
      hole = next;
    }
  }
  t.keys[hole * 2] = 0;
  t.keys[hole * 2 + 1] = EMPTY;
  t.counts[hole] = 0;
}

/** Two independent 32-bit lanes over the UTF-16 code units; the low lane is never 0. */
export function hash64(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  a ^= a >>> 13;
  a = Math.imul(a, 0xc2b2ae35);
  a ^= a >>> 16;
  return [b | 0, a | 1];
}
