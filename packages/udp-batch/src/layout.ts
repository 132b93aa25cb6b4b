// The memory layout JavaScript shares with the native module (native/layout.h), and the check
// that both sides agree on it.
//
// The native module hands its layout over at load (`layout`: every constant of layout.h, and
// the drop reasons' names). JavaScript uses two kinds of values from it:
// - constants it needs before any module loads or on the per-packet path: the exported ones
//   (HEADROOM, SLOT_SIZE, RX_*, MAX_TAGS, the drop reasons as a type) and the tx queue's
//   offsets that `BatchIo.queue` writes per packet. They are compiled in below and must equal
//   the native values;
// - where the counters sit in `stats` (ST_*, C_*), read from the native layout at load.
// `checkLayout` checks both; index.ts refuses a module that fails it, with the reason, exactly
// as it refuses one that did not build, and the relay runs on node:dgram.

export const HEADROOM = 4;
export const MAX_DATAGRAM = 65535;
export const SLOT_SIZE = 65544;

export const RX_STRIDE = 8;
export const RX_HANDLE = 0;
export const RX_LENGTH = 1;
export const RX_PORT = 2;
export const RX_FAMILY = 3;
export const RX_ADDR = 4;
/** Set in the family word for an IPv6 source with a scope id (link-local). */
export const RX_SCOPED = 0x100;

export const TX_STRIDE = 12;
export const TX_HANDLE = 0;
export const TX_ARENA = 1;
export const TX_OFFSET = 2;
export const TX_LENGTH = 3;
export const TX_PORT = 4;
export const TX_FAMILY = 5;
export const TX_ADDR = 6;
export const TX_TAG = 10;
export const TX_OVERHEAD = 11;
export const ARENA_RX = 0;
export const ARENA_TX = 1;
export const CTL_TX_COUNT = 0;
export const CTL_TX_BYTES = 1;

export const MAX_TAGS = 16;

// splicePipeCounters' output (native/splice_pipe.c): A is the pipe's first socket.
export const SPLICE_A_TO_B_BYTES = 0;
export const SPLICE_B_TO_A_BYTES = 1;
export const SPLICE_A_TO_B_CHUNKS = 2;
export const SPLICE_B_TO_A_CHUNKS = 3;
export const SPLICE_COUNTERS = 4;
// splicePipePoolCounters' output: this thread's kernel pipes made, lent out now, idle now.
export const SPLICE_POOL_MADE = 0;
export const SPLICE_POOL_LENT = 1;
export const SPLICE_POOL_IDLE = 2;
export const SPLICE_POOL_COUNTERS = 3;
/** Descriptors a thread's idle kernel pipes hold at most (splice_pipe.c's pool). */
export const SPLICE_POOL_IDLE_FDS = 16;

/** Why the module dropped a packet, in the order of the native counters. */
export const BATCH_DROP_REASONS = [
  "send-queue-full",
  "send-emsgsize",
  "send-econnrefused",
  "send-enobufs",
  "send-eperm",
  "send-unreachable",
  "send-failed",
  "send-socket-closed",
  "send-invalid",
  "recv-truncated",
  "recv-error",
] as const;
export type BatchDropReason = (typeof BATCH_DROP_REASONS)[number];

/** The constants compiled in above, by their name in layout.h. */
const COMPILED_IN = {
  HEADROOM,
  MAX_DATAGRAM,
  SLOT_SIZE,
  RX_STRIDE,
  RX_HANDLE,
  RX_LENGTH,
  RX_PORT,
  RX_FAMILY,
  RX_ADDR,
  RX_SCOPED,
  TX_STRIDE,
  TX_HANDLE,
  TX_ARENA,
  TX_OFFSET,
  TX_LENGTH,
  TX_PORT,
  TX_FAMILY,
  TX_ADDR,
  TX_TAG,
  TX_OVERHEAD,
  ARENA_RX,
  ARENA_TX,
  CTL_TX_COUNT,
  CTL_TX_BYTES,
  MAX_TAGS,
  SPLICE_A_TO_B_BYTES,
  SPLICE_B_TO_A_BYTES,
  SPLICE_A_TO_B_CHUNKS,
  SPLICE_B_TO_A_CHUNKS,
  SPLICE_COUNTERS,
  SPLICE_POOL_MADE,
  SPLICE_POOL_LENT,
  SPLICE_POOL_IDLE,
  SPLICE_POOL_COUNTERS,
  SPLICE_POOL_IDLE_FDS,
} as const;

/** The counters' indices after ST_COUNTERS (layout.h's enum counter). */
const COUNTERS = [
  "C_RECV_CALLS",
  "C_SEND_CALLS",
  "C_RX_PACKETS",
  "C_BATCHES",
  "C_EAGAIN",
  "C_BACKLOG_BYTES",
  "C_WAKEUPS",
] as const;

/** What JavaScript reads from the native layout at load: where the counters sit in `stats`. */
const READ_AT_LOAD = [
  "ST_SIZE",
  "MAX_BUCKETS",
  "ST_PACKETS",
  "ST_BYTES",
  "ST_BUCKETS",
  "ST_DROPS",
  "ST_COUNTERS",
  ...COUNTERS,
] as const;

/** Float64 indices into `stats`, as the native module says. */
export type StatsLayout = { readonly [name in (typeof READ_AT_LOAD)[number]]: number };

export type LayoutCheck =
  | { readonly ok: true; readonly stats: StatsLayout }
  | { readonly ok: false; readonly reason: string };

/**
 * Check the layout a native module handed over against the one this JavaScript was written
 * for. Answers the stats layout to use, or the reason (every difference, by its name in
 * layout.h) the module must not be used.
 */
export function checkLayout(native: unknown): LayoutCheck {
  const fail = (what: string): LayoutCheck => ({
    ok: false,
    reason: `the native module's memory layout does not match its JavaScript (${what}); rebuild it (pnpm install)`,
  });
  if (typeof native !== "object" || native === null) {
    return fail("the module hands over no layout");
  }
  const layout = native as Record<string, unknown>;
  const wrong: string[] = [];
  for (const [name, value] of Object.entries(COMPILED_IN)) {
    if (layout[name] !== value) {
      wrong.push(
        `${name} is ${describe(layout[name])} in the native module, ${value} in JavaScript`,
      );
    }
  }
  const reasons = layout.dropReasons;
  if (
    !Array.isArray(reasons) ||
    reasons.length !== BATCH_DROP_REASONS.length ||
    reasons.some((r, i) => r !== BATCH_DROP_REASONS[i])
  ) {
    wrong.push(
      `drop reasons are [${Array.isArray(reasons) ? reasons.join(", ") : describe(reasons)}] in the native module, [${BATCH_DROP_REASONS.join(", ")}] in JavaScript`,
    );
  }
  for (const name of READ_AT_LOAD) {
    if (!Number.isSafeInteger(layout[name]) || (layout[name] as number) < 0) {
      wrong.push(`${name} is ${describe(layout[name])}, not an index`);
    }
  }
  if (wrong.length > 0) return fail(wrong.join("; "));
  const stats = Object.fromEntries(READ_AT_LOAD.map((n) => [n, layout[n]])) as StatsLayout;
  const outside = statsOutside(stats);
  return outside === undefined ? { ok: true, stats } : fail(outside);
}

/** A range of `stats` JavaScript would read that lies beyond its end (ST_SIZE), if any. */
function statsOutside(s: StatsLayout): string | undefined {
  const ranges: [string, number][] = [
    ["ST_PACKETS + MAX_TAGS", s.ST_PACKETS + MAX_TAGS],
    ["ST_BYTES + MAX_TAGS", s.ST_BYTES + MAX_TAGS],
    ["ST_BUCKETS + MAX_BUCKETS", s.ST_BUCKETS + s.MAX_BUCKETS],
    ["ST_DROPS + the drop reasons", s.ST_DROPS + BATCH_DROP_REASONS.length],
    ["ST_COUNTERS + the counters", s.ST_COUNTERS + 1 + Math.max(...COUNTERS.map((c) => s[c]))],
  ];
  const beyond = ranges.find(([, end]) => end > s.ST_SIZE);
  return beyond && `${beyond[0]} is ${beyond[1]}, beyond ST_SIZE ${s.ST_SIZE}`;
}

function describe(value: unknown): string {
  return value === undefined ? "missing" : (JSON.stringify(value) ?? String(value));
}
