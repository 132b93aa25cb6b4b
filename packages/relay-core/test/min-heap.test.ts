import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MinHeap } from "../src/min-heap.js";

describe("MinHeap", () => {
  it("is empty at first and after clear", () => {
    const heap = new MinHeap<string>();
    expect(heap.size).toBe(0);
    expect(heap.peek()).toBeUndefined();
    expect(heap.peekKey()).toBeUndefined();
    expect(heap.pop()).toBeUndefined();
    heap.push(1, "a");
    heap.clear();
    expect(heap.size).toBe(0);
    expect(heap.pop()).toBeUndefined();
  });

  it("pops the earliest deadline first", () => {
    const heap = new MinHeap<string>();
    heap.push(30, "refresh");
    heap.push(10, "permission");
    heap.push(20, "channel");
    expect(heap.peekKey()).toBe(10);
    expect(heap.peek()).toBe("permission");
    expect([heap.pop(), heap.pop(), heap.pop(), heap.pop()]).toEqual([
      "permission",
      "channel",
      "refresh",
      undefined,
    ]);
  });

  it("behaves like a sorted list under any mix of pushes and pops", () => {
    const op = fc.oneof(
      fc.record({ push: fc.integer({ min: -1000, max: 1000 }) }),
      fc.constant({ pop: true as const }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const heap = new MinHeap<number>();
        const model: number[] = [];
        for (const o of ops) {
          if ("push" in o) {
            heap.push(o.push, o.push * 2);
            model.push(o.push);
            model.sort((a, b) => a - b);
          } else {
            const expected = model.shift();
            expect(heap.pop()).toBe(expected === undefined ? undefined : expected * 2);
          }
          expect(heap.size).toBe(model.length);
          expect(heap.peekKey()).toBe(model[0]);
        }
      }),
    );
  });

  it("files a NaN key last instead of corrupting the order", () => {
    const heap = new MinHeap<string>();
    heap.push(Number.NaN, "nan");
    heap.push(5, "five");
    heap.push(1, "one");
    expect([heap.pop(), heap.pop(), heap.pop()]).toEqual(["one", "five", "nan"]);
  });
});
