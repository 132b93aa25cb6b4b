// The ceiling search (src/scenarios/ceiling.ts) against relays whose loss is a known function of
// the offered rate: it brackets the ceiling to the tolerance, within its step and time bounds.
import { describe, expect, it } from "vitest";
import { type CeilingOptions, findCeiling } from "../src/scenarios/ceiling.js";

/** A relay that carries everything up to `ceiling` pkt/s and loses 1 % above it. */
function relayWithCeiling(ceiling: number, measured: number[] = []) {
  return {
    measure: async (rate: number) => {
      measured.push(rate);
      return { lossPct: rate <= ceiling ? 0 : 1 };
    },
    passes: (r: { lossPct: number }) => r.lossPct < 0.1,
  };
}

const bounds: Omit<CeilingOptions<{ lossPct: number }>, "measure" | "passes"> = {
  start: 20_000,
  tolerance: 0.05,
  maxSteps: 20,
  budgetMs: 60_000,
  minRate: 500,
  maxRate: 5_000_000,
};

describe("findCeiling", () => {
  it.each([37_000, 57_000, 131_000, 900_000])(
    "brackets a ceiling of %i pkt/s to within 5 %% by doubling then bisecting",
    async (ceiling) => {
      const measured: number[] = [];
      const s = await findCeiling({ ...bounds, ...relayWithCeiling(ceiling, measured) });
      expect(s.converged).toBe(true);
      expect(s.best!.rate).toBeLessThanOrEqual(ceiling);
      expect(s.limit!.rate).toBeGreaterThan(ceiling);
      expect(s.limit!.rate).toBeLessThanOrEqual(s.best!.rate * 1.05);
      // Doubling to the first failure, then about four bisections: far fewer than x1.5 steps
      // would need for the same precision.
      expect(measured.length).toBeLessThanOrEqual(Math.ceil(Math.log2(ceiling / 20_000)) + 6);
      expect(measured.slice(0, 2)).toEqual([20_000, 40_000]);
    },
  );

  it("goes down from the start rate when the first step fails", async () => {
    const s = await findCeiling({ ...bounds, ...relayWithCeiling(7_000) });
    expect(s.steps[1]!.rate).toBe(10_000);
    expect(s.converged).toBe(true);
    expect(s.best!.rate).toBeLessThanOrEqual(7_000);
  });

  it("goes on from a seed step without measuring its rate again", async () => {
    const measured: number[] = [];
    const s = await findCeiling({
      ...bounds,
      ...relayWithCeiling(50_000, measured),
      seed: { rate: 20_000, result: { lossPct: 0 } },
    });
    expect(measured[0]).toBe(40_000);
    expect(s.steps[0]!.rate).toBe(20_000);
    expect(s.converged).toBe(true);
  });

  it("stops at its step bound and says so, with the bracket it has", async () => {
    const s = await findCeiling({ ...bounds, maxSteps: 3, ...relayWithCeiling(1_000_000) });
    expect(s.steps.map((x) => x.rate)).toEqual([20_000, 40_000, 80_000]);
    expect(s.converged).toBe(false);
    expect(s.stoppedBy).toBe("steps");
    expect(s.best!.rate).toBe(80_000);
    expect(s.limit).toBeUndefined();
  });

  it("starts no step that would overrun its time budget", async () => {
    let clock = 0;
    const relay = relayWithCeiling(1_000_000);
    const s = await findCeiling({
      ...bounds,
      budgetMs: 25_000,
      now: () => clock,
      measure: async (rate) => {
        clock += 10_000; // each step takes 10 s
        return relay.measure(rate);
      },
      passes: relay.passes,
    });
    expect(s.steps).toHaveLength(2);
    expect(s.stoppedBy).toBe("time");
  });
});
