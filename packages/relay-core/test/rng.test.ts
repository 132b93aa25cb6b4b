import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type RandomSource, randomIntBelow, SeededRandom } from "../src/rng.js";

function draw(rng: RandomSource, n: number): number[] {
  return Array.from({ length: n }, () => rng.nextUint32());
}

describe("SeededRandom", () => {
  it("replays the same sequence from the same seed, numeric or string", () => {
    expect(draw(new SeededRandom(42), 50)).toEqual(draw(new SeededRandom(42), 50));
    expect(draw(new SeededRandom("bug-1234"), 50)).toEqual(draw(new SeededRandom("bug-1234"), 50));
    expect(draw(new SeededRandom(42), 10)).not.toEqual(draw(new SeededRandom(43), 10));
    expect(draw(new SeededRandom("a"), 10)).not.toEqual(draw(new SeededRandom("b"), 10));
  });

  it("yields unsigned 32-bit integers, even from odd seeds", () => {
    for (const seed of [0, -1, 2 ** 53, Number.NaN, Number.POSITIVE_INFINITY, 1.5, ""]) {
      for (const v of draw(new SeededRandom(seed), 100)) {
        expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32, String(seed)).toBe(true);
      }
    }
  });

  it("spreads bits evenly (each bit set about half the time)", () => {
    const rng = new SeededRandom(7);
    const counts = new Array(32).fill(0);
    const n = 20_000;
    for (let i = 0; i < n; i++) {
      const v = rng.nextUint32();
      for (let b = 0; b < 32; b++) if ((v >>> b) & 1) counts[b]++;
    }
    // 6 standard deviations (sqrt(n)/2 ≈ 71) either side of n/2.
    for (const c of counts) expect(Math.abs(c - n / 2)).toBeLessThan(430);
  });

  it("fills byte arrays of any length deterministically", () => {
    for (const len of [0, 1, 3, 4, 5, 16, 33]) {
      const a = new Uint8Array(len);
      const b = new Uint8Array(len);
      new SeededRandom(len).fillBytes(a);
      new SeededRandom(len).fillBytes(b);
      expect(a).toEqual(b);
    }
    const big = new Uint8Array(4096);
    new SeededRandom(1).fillBytes(big);
    expect(new Set(big).size).toBeGreaterThan(250);
  });
});

describe("randomIntBelow", () => {
  it("stays in [0, n) for any n", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0 }),
        fc.oneof(
          fc.integer({ min: 1, max: 2 ** 32 }),
          fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        ),
        (seed, n) => {
          const rng = new SeededRandom(seed);
          for (let i = 0; i < 10; i++) {
            const v = randomIntBelow(rng, n);
            expect(Number.isInteger(v) && v >= 0 && v < n).toBe(true);
          }
        },
      ),
    );
  });

  it("returns 0 instead of throwing on degenerate bounds", () => {
    const rng = new SeededRandom(1);
    for (const n of [0, -5, Number.NaN, 0.5, 1]) expect(randomIntBelow(rng, n)).toBe(0);
  });

  it("is unbiased where modulo would not be", () => {
    // n = 3 * 2^30: plain `r % n` would give the lowest third twice the weight of the others.
    const n = 3 * 2 ** 30;
    const rng = new SeededRandom("bias");
    const thirds = [0, 0, 0];
    const draws = 30_000;
    for (let i = 0; i < draws; i++) thirds[Math.floor(randomIntBelow(rng, n) / 2 ** 30)]!++;
    for (const t of thirds) expect(Math.abs(t - draws / 3)).toBeLessThan(600);
  });

  it("rejects biased draws with a scripted source", () => {
    // limit for n = 3 * 2^30 is 3 * 2^30: the draw 0xffffffff must be rejected.
    const script = [0xffffffff, 5];
    const scripted: RandomSource = { nextUint32: () => script.shift() ?? 0, fillBytes: () => {} };
    expect(randomIntBelow(scripted, 3 * 2 ** 30)).toBe(5);
  });
});
