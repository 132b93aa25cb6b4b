// The ceiling: the highest offered rate a column carries with < 0.1 % loss, found by doubling
// the rate until a step fails (or halving until one passes), then bisecting (geometric
// midpoints) between the highest step that passed and the lowest that failed until they are
// within the tolerance (5 %). Every rate measured after the first lies inside the bracket, so
// a noisy step moves one end of it and never inverts it. Bounded in steps and in time.

export interface CeilingStep<R> {
  rate: number;
  result: R;
  pass: boolean;
}

export interface CeilingSearch<R> {
  /** every step, in the order measured */
  steps: CeilingStep<R>[];
  /** the highest rate that passed */
  best: CeilingStep<R> | undefined;
  /** the lowest rate that failed: the ceiling lies between best and limit */
  limit: CeilingStep<R> | undefined;
  /** best and limit are within the tolerance of each other */
  converged: boolean;
  /** why the search stopped early, when it did */
  stoppedBy: "steps" | "time" | "range" | undefined;
}

export interface CeilingOptions<R> {
  /** the first rate tried */
  start: number;
  /** a step already measured (a fixed-rate run): the search goes on from it instead */
  seed?: { rate: number; result: R };
  /** relative width at which to stop: limit <= best × (1 + tolerance) */
  tolerance: number;
  /** steps measured at most (a seed does not count) */
  maxSteps: number;
  /** no step starts once this much time has gone, or when the next would likely overrun it */
  budgetMs: number;
  /** rates are kept within [minRate, maxRate] */
  minRate: number;
  maxRate: number;
  measure(rate: number): Promise<R>;
  passes(result: R, rate: number): boolean;
  /** ms clock (tests pass their own) */
  now?: () => number;
}

export async function findCeiling<R>(o: CeilingOptions<R>): Promise<CeilingSearch<R>> {
  const now = o.now ?? (() => performance.now());
  const t0 = now();
  const steps: CeilingStep<R>[] = [];
  let best: CeilingStep<R> | undefined;
  let limit: CeilingStep<R> | undefined;
  let stoppedBy: CeilingSearch<R>["stoppedBy"];
  const clamp = (r: number) => Math.round(Math.min(o.maxRate, Math.max(o.minRate, r)));
  const converged = () =>
    best !== undefined && limit !== undefined && limit.rate <= best.rate * (1 + o.tolerance);
  /** Records a step; the next rate to try, or undefined when there is none left to try. */
  const record = (rate: number, result: R): number | undefined => {
    const step = { rate, result, pass: o.passes(result, rate) };
    steps.push(step);
    if (step.pass && (!best || rate > best.rate)) best = step;
    if (!step.pass && (!limit || rate < limit.rate)) limit = step;
    if (converged()) return undefined;
    const next = Math.round(
      !limit ? rate * 2 : !best ? rate / 2 : Math.sqrt(best.rate * limit.rate),
    );
    if (next > o.maxRate || next < o.minRate || steps.some((s) => s.rate === next)) {
      stoppedBy = "range";
      return undefined;
    }
    return next;
  };
  let rate: number | undefined = o.seed ? record(o.seed.rate, o.seed.result) : clamp(o.start);
  while (rate !== undefined) {
    const measured = steps.length - (o.seed ? 1 : 0);
    if (measured >= o.maxSteps) {
      stoppedBy = "steps";
      break;
    }
    const elapsed = now() - t0;
    if (measured > 0 && elapsed + elapsed / measured > o.budgetMs) {
      stoppedBy = "time";
      break;
    }
    rate = record(rate, await o.measure(rate));
  }
  return { steps, best, limit, converged: converged(), stoppedBy };
}
