// Bounded caches on insertion-ordered Maps (src/insertion-order.ts).
import { describe, expect, it } from "vitest";
import { dropExpiredOldest, evictOldestAtCap } from "../src/insertion-order.js";

const map = (n: number) => new Map(Array.from({ length: n }, (_, i) => [`k${i}`, i] as const));

describe("insertion-ordered caches", () => {
  it("evicts the oldest entry only when the cap is reached", () => {
    const m = map(3);
    evictOldestAtCap(m, 4);
    expect([...m.keys()]).toEqual(["k0", "k1", "k2"]);
    evictOldestAtCap(m, 3);
    expect([...m.keys()]).toEqual(["k1", "k2"]);
  });

  it("drops expired entries from the front, stopping at the first live one or at max", () => {
    const m = map(6);
    dropExpiredOldest(m, (v) => v < 3 || v === 4);
    expect([...m.keys()]).toEqual(["k3", "k4", "k5"]);
    const n = map(6);
    dropExpiredOldest(n, () => true, 4);
    expect([...n.keys()]).toEqual(["k4", "k5"]);
  });
});
