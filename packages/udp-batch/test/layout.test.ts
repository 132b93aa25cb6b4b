// The memory layout shared by the native module and JavaScript: the built module hands over
// the one in native/layout.h, JavaScript checks it at load, and a module whose layout differs
// in any value JavaScript relies on is refused with a reason naming what differs.
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import {
  BATCH_DROP_REASONS,
  BatchIo,
  HEADROOM,
  MAX_TAGS,
  RX_STRIDE,
  SLOT_SIZE,
} from "../src/index.js";
import { checkLayout } from "../src/layout.js";
import { describeNative } from "./native.js";

/** The layout object of the module as built (native/layout.h, through layout.c). */
function builtLayout(): Record<string, unknown> {
  const require = createRequire(import.meta.url);
  return (require("../build/Release/udp_batch.node") as { layout: Record<string, unknown> }).layout;
}

function tampered(change: Record<string, unknown>): Record<string, unknown> {
  return { ...builtLayout(), ...change };
}

function reasonOf(layout: unknown): string {
  const check = checkLayout(layout);
  if (check.ok) throw new Error("the layout was accepted");
  return check.reason;
}

describeNative("the layout the native module hands over", () => {
  it("is the one JavaScript is written for, and says where the counters sit", () => {
    const layout = builtLayout();
    expect(Object.isFrozen(layout)).toBe(true);
    expect(layout).toMatchObject({ HEADROOM, SLOT_SIZE, RX_STRIDE, MAX_TAGS });
    expect(layout.dropReasons).toEqual(BATCH_DROP_REASONS);
    const check = checkLayout(layout);
    expect(check).toEqual({ ok: true, stats: expect.objectContaining({ ST_SIZE: 80 }) });
    // The counters read through that layout are the ones the module keeps.
    const io = new BatchIo({ onBatch: () => {} });
    try {
      expect(io.stats.length).toBe(layout.ST_SIZE);
      expect(io.dropIndex("send-queue-full")).toBe(layout.ST_DROPS);
      expect(io.counters()).toEqual({
        recvCalls: 0,
        sendCalls: 0,
        packetsReceived: 0,
        batches: 0,
        eagain: 0,
        backlogBytes: 0,
        wakeups: 0,
      });
    } finally {
      io.destroy();
    }
  });

  it("is refused when a value JavaScript compiles in differs, naming it", () => {
    expect(reasonOf(tampered({ TX_STRIDE: 13 }))).toContain(
      "TX_STRIDE is 13 in the native module, 12 in JavaScript",
    );
    expect(reasonOf(tampered({ SLOT_SIZE: 65536, HEADROOM: undefined }))).toMatch(
      /HEADROOM is missing in the native module, 4 in JavaScript; SLOT_SIZE is 65536 in the native module, 65544 in JavaScript/,
    );
  });

  it("is refused when the drop reasons differ in name or order", () => {
    const swapped = [...BATCH_DROP_REASONS];
    [swapped[0], swapped[1]] = [swapped[1]!, swapped[0]!];
    expect(reasonOf(tampered({ dropReasons: swapped }))).toContain(
      "drop reasons are [send-emsgsize, send-queue-full,",
    );
    expect(reasonOf(tampered({ dropReasons: BATCH_DROP_REASONS.slice(1) }))).toContain(
      "drop reasons are",
    );
  });

  it("is refused when a place JavaScript reads at load is no index or lies outside stats", () => {
    expect(reasonOf(tampered({ C_EAGAIN: -1 }))).toContain("C_EAGAIN is -1, not an index");
    expect(reasonOf(tampered({ ST_DROPS: "48" }))).toContain('ST_DROPS is "48", not an index');
    expect(reasonOf(tampered({ ST_COUNTERS: 75 }))).toContain(
      "ST_COUNTERS + the counters is 82, beyond ST_SIZE 80",
    );
  });
});

describe("a module that hands over no layout", () => {
  it("is refused, with the rebuild the operator needs", () => {
    expect(reasonOf(undefined)).toBe(
      "the native module's memory layout does not match its JavaScript (the module hands over no layout); rebuild it (pnpm install)",
    );
  });
});
