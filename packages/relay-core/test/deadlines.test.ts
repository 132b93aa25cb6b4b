// The allocation timer (server/deadlines.ts): one heap entry per live item, stale entries
// let go of their item and are compacted away under churn.
import { describe, expect, it } from "vitest";
import { Deadlines, type Scheduled } from "../src/server/deadlines.js";

class Item implements Scheduled {
  scheduledAt = Number.POSITIVE_INFINITY;
  timerEntry: object | undefined = undefined;
  constructor(public deadline: number) {}
  nextDeadline(): number {
    return this.deadline;
  }
}

function due(d: Deadlines<Item>, now: number): Item[] {
  const out: Item[] = [];
  for (let item = d.popDue(now); item !== undefined; item = d.popDue(now)) out.push(item);
  return out;
}

describe("Deadlines", () => {
  it("hands out due items earliest first, each once, and nothing early", () => {
    const d = new Deadlines<Item>();
    const [a, b, c] = [new Item(30), new Item(10), new Item(20)];
    for (const item of [a, b, c]) d.schedule(item);
    expect(d.next()).toBe(10);
    expect(due(d, 9)).toEqual([]);
    expect(due(d, 20)).toEqual([b, c]);
    expect(due(d, 20)).toEqual([]);
    expect(due(d, 1000)).toEqual([a]);
    expect(d.next()).toBeUndefined();
  });

  it("moves an item to an earlier deadline and ignores the later entry it leaves behind", () => {
    const d = new Deadlines<Item>();
    const item = new Item(100);
    d.schedule(item);
    item.deadline = 50;
    d.schedule(item);
    expect(d.next()).toBe(50);
    expect(due(d, 60)).toEqual([item]);
    // Not rescheduled: the stale entry at 100 fires to no effect.
    expect(due(d, 100)).toEqual([]);
  });

  it("never hands out a forgotten item", () => {
    const d = new Deadlines<Item>();
    const item = new Item(10);
    d.schedule(item);
    d.forget(item);
    expect(due(d, 1000)).toEqual([]);
  });

  it("keeps its heap bounded by live items under schedule/forget churn, live deadlines intact", () => {
    const d = new Deadlines<Item>();
    const keep = new Item(600_000);
    d.schedule(keep);
    for (let i = 0; i < 3000; i++) {
      const item = new Item(600_000 + i);
      d.schedule(item);
      d.forget(item);
    }
    // 3,000 dead entries due in ten minutes would keep their items reachable until then.
    expect(d.entries).toBeLessThanOrEqual(1025);
    expect(d.next()).toBe(600_000);
    expect(due(d, 700_000)).toEqual([keep]);
  });

  it("hands out an item moved earlier across a compaction once, at its new deadline", () => {
    const d = new Deadlines<Item>();
    const item = new Item(1_000_000);
    d.schedule(item);
    // Every move leaves a stale entry behind; the 1,025th compacts the heap mid-move.
    for (let i = 1; i <= 1100; i++) {
      item.deadline = 1_000_000 - i;
      d.schedule(item);
    }
    expect(d.next()).toBe(1_000_000 - 1100);
    expect(due(d, 2_000_000)).toEqual([item]);
  });

  it("lets go of a forgotten item and of one moved earlier (stale entries hold no item)", () => {
    const d = new Deadlines<Item>();
    const gone = new Item(10);
    const moved = new Item(20);
    d.schedule(gone);
    d.schedule(moved);
    const staleEntry = moved.timerEntry as { item: unknown };
    moved.deadline = 5;
    d.schedule(moved);
    const forgottenEntry = gone.timerEntry as { item: unknown };
    d.forget(gone);
    expect(forgottenEntry.item).toBeUndefined();
    expect(staleEntry.item).toBeUndefined();
    expect(gone.timerEntry).toBeUndefined();
    expect(due(d, 100)).toEqual([moved]);
  });
});
