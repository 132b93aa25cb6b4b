// The map layout JavaScript shares with the loader addon (bpf/layout.h), and the check that
// both sides agree on it.
//
// The addon hands its layout over at load (`layout`: the numbers of layout.h's
// TP_LAYOUT_NUMBERS, the global counters' names in the order of `enum tp_stat`, and a
// binding's counters' names in the order the addon writes them). JavaScript compiles in the
// values below, which name the counters in metrics and read the Float64Arrays the addon fills;
// `checkLayout` checks them against the addon's, and native.ts refuses an addon that fails it,
// with the reason, exactly as one that did not build: the relay then runs without the kernel
// data path.

/**
 * The program's global counters. `relayed-*` and `rate-limited` are datagrams it handled;
 * every `pass-*` is a datagram it left to userspace unchanged, and why.
 */
export const KERNEL_PATH_STATS = [
  "relayed-to-peer",
  "relayed-to-client",
  "relayed-chained",
  "rate-limited",
  "pass-no-entry",
  "pass-expired",
  "pass-channel-data-length",
  "pass-padding",
  "pass-fragment",
  "pass-ip-options",
  "pass-malformed",
  "pass-gso",
  "pass-checksum-offload",
  "pass-listener-unknown",
  "pass-local",
  "pass-no-route",
  "pass-forwarding-disabled",
  "pass-frag-needed",
  "pass-vlan",
  "error",
  "pass-no-neighbour",
] as const;
export type KernelPathStatName = (typeof KERNEL_PATH_STATS)[number];
export type KernelPathStats = Readonly<Record<KernelPathStatName, number>>;

/** Indexes of the Float64Array the addon fills with a binding's counters. */
export const COUNTER_FIELDS = [
  "toPeerPackets",
  "toPeerBytes",
  "toClientPackets",
  "toClientBytes",
  "limitedPackets",
  "limitedBytes",
] as const;

/** What the addon writes for a bucket's drops: packets, bytes. */
export const BUCKET_DROP_COUNT = 2;

/** The numbers compiled in, by their name in layout.h. */
const COMPILED_IN = {
  // The family argument of bind(): what node:net's isIP answers.
  TP_FAMILY_V4: 4,
  TP_FAMILY_V6: 6,
  TP_STAT_COUNT: KERNEL_PATH_STATS.length,
  TP_COUNTER_COUNT: COUNTER_FIELDS.length,
  TP_BUCKET_DROP_COUNT: BUCKET_DROP_COUNT,
} as const;

/** The lists of names compiled in, by their key in the addon's layout. */
const NAMES = {
  stats: { what: "global counters", names: KERNEL_PATH_STATS },
  counters: { what: "binding counters", names: COUNTER_FIELDS },
} as const;

export type LayoutCheck = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Check the layout the addon handed over against the one this JavaScript was written for: ok,
 * or the reason (every difference, by its name in layout.h) the addon must not be used.
 */
export function checkLayout(native: unknown): LayoutCheck {
  const fail = (what: string): LayoutCheck => ({
    ok: false,
    reason: `the loader addon's map layout does not match its JavaScript (${what}); rebuild it (pnpm install)`,
  });
  if (typeof native !== "object" || native === null) {
    return fail("the addon hands over no layout");
  }
  const layout = native as Record<string, unknown>;
  const wrong: string[] = [];
  for (const [name, value] of Object.entries(COMPILED_IN)) {
    if (layout[name] !== value) {
      wrong.push(`${name} is ${describe(layout[name])} in the addon, ${value} in JavaScript`);
    }
  }
  for (const [key, { what, names }] of Object.entries(NAMES)) {
    const theirs = layout[key];
    if (
      !Array.isArray(theirs) ||
      theirs.length !== names.length ||
      theirs.some((n, i) => n !== names[i])
    ) {
      wrong.push(
        `${what} are [${Array.isArray(theirs) ? theirs.join(", ") : describe(theirs)}] in the addon, [${names.join(", ")}] in JavaScript`,
      );
    }
  }
  return wrong.length > 0 ? fail(wrong.join("; ")) : { ok: true };
}

function describe(value: unknown): string {
  return value === undefined ? "missing" : (JSON.stringify(value) ?? String(value));
}
