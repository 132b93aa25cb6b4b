// Limits that hold for the whole process when several workers each run their own relay-core:
// total and per-user allocations, total and per-IP client connections, and the per-source
// rate of unauthenticated answers. They live in shared memory every worker maps, and every
// change happens under the one shared lock (shared-lock.ts), so a limit is exact whichever
// worker a client lands on: with a per-user limit of 6 and two workers, the seventh allocation
// of that user is refused with 486 on either.
//
// Each worker counts what it holds in tables of its own (a check sums over the workers), so
// when a worker dies the supervisor clears exactly what that worker held, and the limits stay
// exact across a restart. Keys (user names, IP addresses) are hashed to 64 bits with a keyed
// hash (keyed-hash.ts) into open-addressing tables (slot-table.ts); two different keys would
// have to collide in all 64 bits to share a count, and a client cannot pick keys that do.
//
// The limits themselves live in the shared memory too, stamped with the configuration generation
// that set them (a reload, SIGHUP): every engine applies each generation it is given, and a
// write of an older generation over a newer one is refused under the lock, so the limits hold
// what the newest configuration says whichever engine applied it first. A single engine
// (--workers 1) uses the same memory with one worker's tables.
//
// A table with no room for a key refuses (fails closed): an allocation gets 508, a connection
// is closed, an unauthenticated request gets no answer. Count tables are sized at twice what
// their limit lets in, so that takes a miracle; the rate buckets are a cache of recent sources
// where a full bucket is as good as none, so only sources seen in the last two seconds (the
// time a bucket takes to refill) hold a slot, and a flood of new ones beyond the table is
// refused instead of evicting someone's bucket (which would hand that source a fresh burst).

import type { Carver } from "./carve.js";
import type { KeyedHash } from "./keyed-hash.js";
import type { SharedLock } from "./shared-lock.js";
import { MAX_PROBES, SlotTable } from "./slot-table.js";

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

export interface LimitsOptions extends ProcessLimits {
  readonly workers: number;
  /** Slots per table (a power of two); tests use tiny tables to force collisions. */
  readonly tableSlots?: number;
}

/** What a thread needs to map the limits (the limits themselves are in the memory). */
export interface LimitsLayout {
  readonly workers: number;
  readonly userSlots: number;
  readonly ipSlots: number;
  readonly rateSlots: number;
}

/** Enough slots for `entries` keys at half load, within 2^20. */
export function slotsFor(entries: number): number {
  let slots = 1024;
  while (slots < entries * 2 && slots < 1 << 20) slots *= 2;
  return slots;
}

/**
 * Tables sized for the limits: each count table at most half full when every allocation or
 * connection has a key of its own.
 */
export function limitsLayout(options: LimitsOptions): LimitsLayout {
  const { tableSlots, workers } = options;
  return {
    workers,
    userSlots: tableSlots ?? slotsFor(Math.min(options.maxAllocations, 1 << 19)),
    ipSlots: tableSlots ?? slotsFor(Math.min(options.maxConnections, 1 << 19)),
    rateSlots: tableSlots ?? 1 << 16,
  };
}

// Count tables: hash high, low, count. Rate buckets: hash high, low; tokens, when computed.
const COUNT_STRIDE = 3;

/** The arrays of the limits, carved the same way in every thread. */
export function carveLimits(c: Carver, l: LimitsLayout) {
  return {
    /** The generation of the limits, the limits, then per worker its allocations, connections. */
    header: c.int32(PER_WORKER + l.workers * 2),
    users: Array.from({ length: l.workers }, () => c.int32(l.userSlots * COUNT_STRIDE)),
    ips: Array.from({ length: l.workers }, () => c.int32(l.ipSlots * COUNT_STRIDE)),
    rateKeys: c.int32(l.rateSlots * 2),
    rateBuckets: c.float64(l.rateSlots * 2),
  };
}

export type LimitsViews = ReturnType<typeof carveLimits>;

const GENERATION = 0;
const MAX_ALLOCATIONS = 1;
const MAX_ALLOCATIONS_PER_USER = 2;
const MAX_CONNECTIONS = 3;
const MAX_CONNECTIONS_PER_IP = 4;
const UNAUTHENTICATED_RATE = 5;
const PER_WORKER = 6;
const allocationsAt = (w: number) => PER_WORKER + w * 2;
const connectionsAt = (w: number) => PER_WORKER + w * 2 + 1;

/** Write `limits` of configuration `generation` into a header (the caller holds the lock). */
export function writeLimits(header: Int32Array, limits: ProcessLimits, generation: number): void {
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
  private readonly users: SlotTable[];
  private readonly ips: SlotTable[];
  private readonly rates: SlotTable;

  constructor(
    private readonly layout: LimitsLayout,
    views: LimitsViews,
    /** This thread's worker index (the supervisor's view counts nothing). */
    private readonly worker: number,
    private readonly lock: SharedLock,
    private readonly hash: KeyedHash,
  ) {
    this.header = views.header;
    this.users = views.users.map((t) => new SlotTable(layout.userSlots, t, COUNT_STRIDE));
    this.ips = views.ips.map((t) => new SlotTable(layout.ipSlots, t, COUNT_STRIDE));
    this.rates = new SlotTable(layout.rateSlots, views.rateKeys, 2, views.rateBuckets, 2);
  }

  /**
   * The limits of configuration `generation` from now on, for every engine; refused (false)
   * when a newer generation's limits are already in force. Allocations and connections over a
   * lowered limit stay: the limit refuses new ones until enough have ended.
   */
  setLimits(limits: ProcessLimits, generation: number): boolean {
    return this.lock.locked(() => {
      if (generation <= this.header[GENERATION]!) return false;
      writeLimits(this.header, limits, generation);
      return true;
    });
  }

  /** The limits in force and their generation. */
  limits(): ProcessLimits & { readonly generation: number } {
    return this.lock.locked(() => {
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
    const [hi, lo] = this.hash.of(user);
    return this.lock.locked(() => {
      if (this.sum(allocationsAt) >= this.header[MAX_ALLOCATIONS]!) return 508;
      if (sumOf(this.users, hi, lo) >= this.header[MAX_ALLOCATIONS_PER_USER]!) return 486;
      if (!this.count(this.users[this.worker]!, hi, lo, 1)) return 508;
      this.header[allocationsAt(this.worker)]! += 1;
      return 0;
    });
  }

  releaseAllocation(user: string): void {
    const [hi, lo] = this.hash.of(user);
    this.lock.locked(() => this.moveAllocation(hi, lo, this.worker, undefined));
  }

  /**
   * One allocation of the user hashed (hi, lo) counted by worker `from` is now counted by worker
   * `to` (undefined: it ended). The caller holds the lock (reservations.ts moves a reservation's
   * count with it). Nothing happens when `from` counts none.
   */
  moveAllocation(hi: number, lo: number, from: number, to: number | undefined): void {
    if (!this.count(this.users[from]!, hi, lo, -1)) return;
    this.header[allocationsAt(from)]! -= 1;
    if (to !== undefined && this.count(this.users[to]!, hi, lo, 1)) {
      this.header[allocationsAt(to)]! += 1;
    }
  }

  /**
   * A new client connection from `source` (an IPv4 address or an IPv6 /64): a slot of
   * --max-connections, and one of the source's not-yet-authenticated connections
   * (--max-connections-per-ip; 0 = no per-source cap).
   */
  admitConnection(source: string): ConnectionVerdict {
    const [hi, lo] = this.hash.of(source);
    return this.lock.locked(() => {
      if (this.sum(connectionsAt) >= this.header[MAX_CONNECTIONS]!) return "total";
      const verdict = this.countSource(hi, lo);
      if (verdict === "ok") this.header[connectionsAt(this.worker)]! += 1;
      return verdict;
    });
  }

  /**
   * A connection from a trusted load balancer (--proxy-protocol), before its PROXY header names
   * the client: a slot of --max-connections only (the balancer is not one source); its client
   * is counted by admitSource once known.
   */
  admitUnidentified(): ConnectionVerdict {
    return this.lock.locked(() => {
      if (this.sum(connectionsAt) >= this.header[MAX_CONNECTIONS]!) return "total";
      this.header[connectionsAt(this.worker)]! += 1;
      return "ok";
    });
  }

  /** The PROXY header named the client of an admitUnidentified connection: its source's cap. */
  admitSource(source: string): ConnectionVerdict {
    const [hi, lo] = this.hash.of(source);
    return this.lock.locked(() => this.countSource(hi, lo));
  }

  /** One more not-yet-authenticated connection of a source, unless at its cap (lock held). */
  private countSource(hi: number, lo: number): ConnectionVerdict {
    const perSource = this.header[MAX_CONNECTIONS_PER_IP]!;
    if (perSource > 0 && sumOf(this.ips, hi, lo) >= perSource) return "per-ip";
    return this.count(this.ips[this.worker]!, hi, lo, 1) ? "ok" : "total";
  }

  /** The connection closed; `counted`: it still counted against its source. */
  releaseConnection(source: string, counted: boolean): void {
    const [hi, lo] = this.hash.of(source);
    this.lock.locked(() => {
      this.header[connectionsAt(this.worker)]! -= 1;
      if (counted) this.count(this.ips[this.worker]!, hi, lo, -1);
    });
  }

  /**
   * The connection authenticated (-1: it no longer counts against its source) or lost its
   * allocation (+1: it counts again; never refused for that).
   */
  recountSource(source: string, delta: 1 | -1): void {
    const [hi, lo] = this.hash.of(source);
    this.lock.locked(() => this.count(this.ips[this.worker]!, hi, lo, delta));
  }

  /** Add `delta` to the key's count in `t` (removed at 0); false when it found no room or no entry. */
  private count(t: SlotTable, hi: number, lo: number, delta: number): boolean {
    const slot = delta > 0 ? t.findOrInsert(hi, lo) : t.find(hi, lo);
    if (slot < 0) return false;
    const at = slot * COUNT_STRIDE + 2;
    t.words[at]! += delta;
    if (t.words[at]! <= 0) t.remove(slot);
    return true;
  }

  /**
   * One token of `source`'s bucket at `nowMs` (a clock every worker shares: ms since the
   * epoch); false = over the limit, or a new source with no room for its bucket. The same rule
   * as relay-core's SourceRateLimiter.
   */
  allowUnauthenticated(source: string, nowMs: number): boolean {
    const rate = Atomics.load(this.header, UNAUTHENTICATED_RATE);
    if (rate <= 0) return true;
    const burst = rate * 2;
    const [hi, lo] = this.hash.of(source);
    return this.lock.locked(() => {
      const t = this.rates;
      const b = t.floats!;
      const level = (s: number) =>
        Math.min(burst, b[s * 2]! + (Math.max(0, nowMs - b[s * 2 + 1]!) * rate) / 1000);
      // Its own bucket, or the first slot of the run that is empty or whose bucket is full
      // again (as good as no bucket: overwriting it loses nothing). Entries are never removed,
      // so probe runs stay intact.
      let slot = -1;
      let free = -1;
      for (let i = 0, s = t.home(lo); i < MAX_PROBES; i++, s = (s + 1) & t.mask) {
        if (t.isEmpty(s)) {
          if (free < 0) free = s;
          break;
        }
        if (t.matches(s, hi, lo)) {
          slot = s;
          break;
        }
        if (free < 0 && level(s) >= burst) free = s;
      }
      if (slot < 0) {
        if (free < 0) return false; // a flood of sources, and this one is new: refused
        slot = free;
        t.claim(slot, hi, lo);
        b[slot * 2] = burst;
        b[slot * 2 + 1] = nowMs;
      } else {
        b[slot * 2] = level(slot);
        b[slot * 2 + 1] = Math.max(nowMs, b[slot * 2 + 1]!);
      }
      if (b[slot * 2]! < 1) return false;
      b[slot * 2]! -= 1;
      return true;
    });
  }

  /** Process-wide totals (for tests and metrics). */
  totals(): { allocations: number; connections: number } {
    return this.lock.locked(() => ({
      allocations: this.sum(allocationsAt),
      connections: this.sum(connectionsAt),
    }));
  }

  /**
   * Forget everything worker `w` held: it died, and its engine, sockets and clients with it.
   * The caller holds the lock (shared-state.ts clears every table at once).
   */
  clearWorker(w: number): void {
    this.header[allocationsAt(w)] = 0;
    this.header[connectionsAt(w)] = 0;
    this.users[w]!.clear();
    this.ips[w]!.clear();
  }

  private sum(at: (w: number) => number): number {
    let total = 0;
    for (let w = 0; w < this.layout.workers; w++) total += this.header[at(w)]!;
    return total;
  }
}

function sumOf(tables: readonly SlotTable[], hi: number, lo: number): number {
  let total = 0;
  for (const t of tables) {
    const s = t.find(hi, lo);
    if (s >= 0) total += t.words[s * COUNT_STRIDE + 2]!;
  }
  return total;
}
