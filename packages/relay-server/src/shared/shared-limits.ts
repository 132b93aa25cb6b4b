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
// The limits themselves live in the buffer too, stamped with the configuration generation that
// set them (a reload, SIGHUP): every engine applies each generation it is given, and a write
// of an older generation over a newer one is refused under the lock, so the limits hold what
// the newest configuration says whichever engine applied it first. A single engine
// (--workers 1) uses the same buffer with one worker's tables.
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

/** The limits a configuration sets for the whole process (--max-allocations, ...). */
export interface ProcessLimits {
  readonly maxAllocations: number;
  readonly maxAllocationsPerUser: number;
  readonly maxConnections: number;
  /** 0 = no per-source cap. */
  readonly maxConnectionsPerIp: number;
  /** Unauthenticated answers per second per source IP (0 = unlimited); burst twice that. */
  readonly unauthenticatedRate: number;
}

/** What a thread needs to map the limits: the buffer and its layout (limits are inside it). */
export interface SharedLimitsInit {
  readonly buffer: SharedArrayBuffer;
  readonly workers: number;
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

// Header (Int32): the lock, the generation of the limits and the limits, then per worker its
// allocations and its connections.
const LOCK = 0;
const GENERATION = 1;
const MAX_ALLOCATIONS = 2;
const MAX_ALLOCATIONS_PER_USER = 3;
const MAX_CONNECTIONS = 4;
const MAX_CONNECTIONS_PER_IP = 5;
const UNAUTHENTICATED_RATE = 6;
const PER_WORKER = 7;
const headerInts = (workers: number) => PER_WORKER + workers * 2;
const allocationsAt = (w: number) => PER_WORKER + w * 2;
const connectionsAt = (w: number) => PER_WORKER + 1 + w * 2;

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

/**
 * The buffer, its tables sized for `limits` (each count table at most half full when every
 * allocation or connection has a key of its own), and `limits` in force as `generation`.
 */
export function createSharedLimits(
  options: ProcessLimits & {
    workers: number;
    /** The configuration generation these limits belong to (default 0). */
    generation?: number;
    /** Slots per table (a power of two); tests use tiny tables to force collisions. */
    tableSlots?: number;
  },
): SharedLimitsInit {
  const { tableSlots, generation, workers, ...limits } = options;
  const sizes = {
    workers,
    userSlots: tableSlots ?? slotsFor(Math.min(limits.maxAllocations, 1 << 19)),
    ipSlots: tableSlots ?? slotsFor(Math.min(limits.maxConnections, 1 << 19)),
    rateSlots: tableSlots ?? 1 << 16,
  };
  const init = { ...sizes, buffer: new SharedArrayBuffer(layout(sizes).bytes) };
  writeLimits(new Int32Array(init.buffer, 0, headerInts(workers)), limits, generation ?? 0);
  return init;
}

function writeLimits(header: Int32Array, limits: ProcessLimits, generation: number): void {
  header[GENERATION] = generation;
  header[MAX_ALLOCATIONS] = limits.maxAllocations;
  header[MAX_ALLOCATIONS_PER_USER] = limits.maxAllocationsPerUser;
  header[MAX_CONNECTIONS] = limits.maxConnections;
  header[MAX_CONNECTIONS_PER_IP] = limits.maxConnectionsPerIp;
  header[UNAUTHENTICATED_RATE] = limits.unauthenticatedRate;
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
   * The limits of configuration `generation` from now on, for every engine; refused (false)
   * when a newer generation's limits are already in force. Allocations and connections over a
   * lowered limit stay: the limit refuses new ones until enough have ended.
   */
  setLimits(limits: ProcessLimits, generation: number): boolean {
    return this.locked(() => {
      if (generation <= this.header[GENERATION]!) return false;
      writeLimits(this.header, limits, generation);
      return true;
    });
  }

  /** The limits in force and their generation. */
  limits(): ProcessLimits & { readonly generation: number } {
    return this.locked(() => {
      const h = this.header;
      return {
        generation: h[GENERATION]!,
        maxAllocations: h[MAX_ALLOCATIONS]!,
        maxAllocationsPerUser: h[MAX_ALLOCATIONS_PER_USER]!,
        maxConnections: h[MAX_CONNECTIONS]!,
        maxConnectionsPerIp: h[MAX_CONNECTIONS_PER_IP]!,
        unauthenticatedRate: h[UNAUTHENTICATED_RATE]!,
      };
    });
  }

  /**
   * Reserve one allocation for `user`: 0 when granted, 486 (RFC 8656 §7.2, the user's quota)
   * or 508 (the relay's total, or no room left to count the user).
   */
  acquireAllocation(user: string): 0 | 486 | 508 {
    return this.locked(() => {
      if (this.sum(allocationsAt) >= this.header[MAX_ALLOCATIONS]!) return 508;
      const [hi, lo] = hash64(user);
      if (sumOf(this.users, hi, lo) >= this.header[MAX_ALLOCATIONS_PER_USER]!) return 486;
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
      if (this.sum(connectionsAt) >= this.header[MAX_CONNECTIONS]!) return "total";
      const [hi, lo] = hash64(source);
      const perSource = this.header[MAX_CONNECTIONS_PER_IP]!;
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
    const rate = Atomics.load(this.header, UNAUTHENTICATED_RATE);
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
