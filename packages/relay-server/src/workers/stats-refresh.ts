// Fresh counters before metrics are read: a collection asks every ready worker for a snapshot
// now (`stats-now` with a round number) and waits until each answered that round or 300 ms
// passed, so a scrape right after traffic sees it. Collections that overlap share one round.
// The snapshots themselves are summed by stats-sync.ts.

import type { WorkerSlot } from "./spawn.js";

const REFRESH_TIMEOUT_MS = 300;

export class StatsRefresh {
  /** The round under way. */
  #round: { gen: number; check: () => void; done: Promise<void> } | undefined;
  #nextGen = 1;

  constructor(private readonly slots: readonly WorkerSlot[]) {}

  refresh(): Promise<void> {
    if (this.#round !== undefined) return this.#round.done;
    const gen = this.#nextGen++;
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const timer = setTimeout(() => end(), REFRESH_TIMEOUT_MS);
    const end = () => {
      clearTimeout(timer);
      if (this.#round?.gen === gen) this.#round = undefined;
      finish();
    };
    const check = () => {
      if (this.slots.every((s) => !s.ready || s.statsGen >= gen)) end();
    };
    this.#round = { gen, check, done };
    for (const s of this.slots) if (s.ready) s.post({ t: "stats-now", gen });
    check();
    return done;
  }

  /** A worker posted a snapshot; `gen` the round it answers (0: a periodic one). */
  posted(slot: WorkerSlot, gen: number): void {
    if (gen !== 0) slot.statsGen = gen;
    this.#round?.check();
  }
}
