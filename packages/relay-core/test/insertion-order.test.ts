// Bounded caches on insertion-ordered Maps (src/insertion-order.ts).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { InsertionOrderedMap } from "../src/insertion-order.js";

const map = (n: number) => {
  const m = new InsertionOrderedMap<string, number>();
  for (let i = 0; i < n; i++) m.set(`k${i}`, i);
  return m;
};

describe("insertion-ordered caches", () => {
  it("evicts the oldest entry only when the cap is reached", () => {
    const m = map(3);
    m.evictOldestAtCap(4);
    expect([...m.keys()]).toEqual(["k0", "k1", "k2"]);
    m.evictOldestAtCap(3);
    expect([...m.keys()]).toEqual(["k1", "k2"]);
  });

  it("drops expired entries from the front, stopping at the first live one or at max", () => {
    const m = map(6);
    m.dropExpiredOldest((v) => v < 3 || v === 4);
    expect([...m.keys()]).toEqual(["k3", "k4", "k5"]);
    const n = map(6);
    n.dropExpiredOldest(() => true, 4);
    expect([...n.keys()]).toEqual(["k4", "k5"]);
  });

  it("always evicts the oldest entry, whatever was set, deleted or cleared in between", () => {
    // The reference: a plain Map, whose first key is the oldest by definition.
    const op = fc.oneof(
      fc.record({ k: fc.constant("set" as const), key: fc.nat({ max: 20 }), v: fc.nat() }),
      fc.record({ k: fc.constant("delete" as const), key: fc.nat({ max: 20 }) }),
      fc.record({ k: fc.constant("evict" as const), cap: fc.nat({ max: 12 }) }),
      fc.record({ k: fc.constant("drop" as const), below: fc.nat(), max: fc.nat({ max: 3 }) }),
      fc.constant({ k: "clear" as const }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const m = new InsertionOrderedMap<number, number>();
        const ref = new Map<number, number>();
        for (const o of ops) {
          if (o.k === "set") {
            m.set(o.key, o.v);
            ref.set(o.key, o.v);
          } else if (o.k === "delete") {
            expect(m.delete(o.key)).toBe(ref.delete(o.key));
          } else if (o.k === "evict") {
            m.evictOldestAtCap(o.cap);
            if (ref.size >= o.cap && ref.size > 0) ref.delete(ref.keys().next().value!);
          } else if (o.k === "drop") {
            m.dropExpiredOldest((v) => v < o.below, o.max);
            for (let n = 0; n < o.max && ref.size > 0; n++) {
              const [key, v] = ref.entries().next().value!;
              if (!(v < o.below)) break;
              ref.delete(key);
            }
          } else {
            m.clear();
            ref.clear();
          }
          expect([...m.keys()]).toEqual([...ref.keys()]);
          expect(m.size).toBe(ref.size);
          for (const [key, v] of ref) expect(m.get(key)).toBe(v);
        }
      }),
      { numRuns: 500 },
    );
  });
});
