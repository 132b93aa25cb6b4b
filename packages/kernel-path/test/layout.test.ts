// The map layout shared by the BPF program, its loader addon and JavaScript: the built addon
// hands over the one in bpf/layout.h, JavaScript checks it at load, and an addon whose layout
// differs in any value JavaScript relies on (a counter's name or place, a family number) is
// refused with a reason naming what differs.
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { COUNTER_FIELDS, KERNEL_PATH_STATS } from "../src/index.js";
import { checkLayout } from "../src/layout.js";

const require = createRequire(import.meta.url);

/** The layout object of the addon as built (bpf/layout.h, through native/layout.c). */
function builtLayout(): Record<string, unknown> | undefined {
  try {
    return (require("../build/Release/kernel_path.node") as { layout: Record<string, unknown> })
      .layout;
  } catch {
    return undefined;
  }
}

const built = builtLayout();

function tampered(change: Record<string, unknown>): Record<string, unknown> {
  return { ...built, ...change };
}

function reasonOf(layout: unknown): string {
  const check = checkLayout(layout);
  if (check.ok) throw new Error("the layout was accepted");
  return check.reason;
}

describe.skipIf(built === undefined)("the map layout the loader addon hands over", () => {
  it("is the one JavaScript is written for: the counters' names in their order, the families", () => {
    expect(Object.isFrozen(built)).toBe(true);
    expect(built).toEqual({
      TP_FAMILY_V4: 4,
      TP_FAMILY_V6: 6,
      TP_STAT_COUNT: KERNEL_PATH_STATS.length,
      TP_COUNTER_COUNT: COUNTER_FIELDS.length,
      TP_BUCKET_DROP_COUNT: 2,
      stats: KERNEL_PATH_STATS,
      counters: COUNTER_FIELDS,
    });
    expect(checkLayout(built)).toEqual({ ok: true });
  });

  it("is refused when a number JavaScript compiles in differs, naming it", () => {
    expect(reasonOf(tampered({ TP_FAMILY_V6: 10 }))).toBe(
      "the loader addon's map layout does not match its JavaScript (TP_FAMILY_V6 is 10 in the addon, 6 in JavaScript); rebuild it (pnpm install)",
    );
    expect(reasonOf(tampered({ TP_STAT_COUNT: 22, TP_COUNTER_COUNT: undefined }))).toMatch(
      /TP_STAT_COUNT is 22 in the addon, 21 in JavaScript; TP_COUNTER_COUNT is missing in the addon, 6 in JavaScript/,
    );
  });

  it("is refused when the global counters differ in name or order", () => {
    const swapped = [...KERNEL_PATH_STATS];
    [swapped[4], swapped[5]] = [swapped[5]!, swapped[4]!];
    expect(reasonOf(tampered({ stats: swapped }))).toContain(
      "global counters are [relayed-to-peer, relayed-to-client, relayed-chained, rate-limited, pass-expired, pass-no-entry,",
    );
    expect(reasonOf(tampered({ stats: [...KERNEL_PATH_STATS, "pass-new"] }))).toContain(
      "global counters are",
    );
  });

  it("is refused when a binding's counters come in another order", () => {
    const swapped = [...COUNTER_FIELDS].reverse();
    expect(reasonOf(tampered({ counters: swapped }))).toContain(
      "binding counters are [limitedBytes, limitedPackets,",
    );
  });
});

describe("an addon that hands over no layout", () => {
  it("is refused, with the rebuild the operator needs", () => {
    expect(reasonOf(undefined)).toBe(
      "the loader addon's map layout does not match its JavaScript (the addon hands over no layout); rebuild it (pnpm install)",
    );
  });
});
