// The one lock over everything workers share in memory (shared-state.ts): a word of a
// SharedArrayBuffer that holds 0 when free and its holder's number when held. Critical sections
// are a handful of memory operations, at most thousands a second (allocations, connections,
// unauthenticated answers, bandwidth leases), so one lock is plenty.
//
// A thread can end inside a critical section: Worker.terminate() stops its JavaScript wherever it
// is (the supervisor's close after a timeout, a worker over its resource limits), and `finally`
// does not run. A lock that only knew "held" would then be held forever, and every other worker
// and the supervisor itself (which takes the lock to clear the dead worker's counts) would wait
// forever. The holder's number in the word lets the supervisor, told that the thread exited,
// free a lock that thread still holds (releaseHeldBy) before it clears what the thread held.

/** The lock's holder numbers: worker `w` is w + 1, the supervisor workers + 1; 0 = free. */
export const lockOwnerOfWorker = (worker: number): number => worker + 1;

export class SharedLock {
  constructor(
    /** The lock word (index 0), in a SharedArrayBuffer every thread maps. */
    private readonly word: Int32Array,
    /** This thread's holder number (lockOwnerOfWorker), never 0. */
    private readonly owner: number,
  ) {
    if (owner <= 0) throw new RangeError("a lock owner is a positive number");
  }

  /** Run `fn` holding the lock (not re-entrant: `fn` must not take it again). */
  locked<T>(fn: () => T): T {
    const w = this.word;
    for (let held = Atomics.compareExchange(w, 0, 0, this.owner); held !== 0; ) {
      // Node allows Atomics.wait on every thread; the wait is short (a few memory operations),
      // and bounded so a lock freed by releaseHeldBy is seen even if a wake-up was missed.
      Atomics.wait(w, 0, held, 1);
      held = Atomics.compareExchange(w, 0, 0, this.owner);
    }
    try {
      return fn();
    } finally {
      Atomics.store(w, 0, 0);
      Atomics.notify(w, 0, 1);
    }
  }

  /**
   * The thread numbered `owner` ended (the supervisor saw its exit): free the lock if it still
   * holds it. True when it did: the thread stopped inside a critical section, so what it was
   * changing may be half-written (its own counts are cleared next; see shared-state.ts).
   */
  releaseHeldBy(owner: number): boolean {
    if (Atomics.compareExchange(this.word, 0, owner, 0) !== owner) return false;
    Atomics.notify(this.word, 0);
    return true;
  }

  /** Who holds it now (0: nobody), for tests and the supervisor's log. */
  get holder(): number {
    return Atomics.load(this.word, 0);
  }
}
