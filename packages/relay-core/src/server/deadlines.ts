/**
 * When each allocation next needs attention (its lifetime, a permission, a channel or its
 * cool-down, an RFC 6062 wait): one entry per allocation in a min-heap keyed by that instant,
 * so `pollTimeout()` is O(1) and a timer costs O(log n), instead of scanning every allocation
 * per tick.
 *
 * A deadline that moves later (a Refresh) is not looked for in the heap: the new entry is
 * pushed and the old one becomes stale, recognised by its generation when it comes out (lazy
 * deletion). An item carries its own bookkeeping (`scheduledAt`, `timerGeneration`) so this
 * costs no map lookup.
 */
import { MinHeap } from "../min-heap.js";

export interface Scheduled {
  /** The instant of this item's live heap entry (+Infinity: none). Written only here. */
  scheduledAt: number;
  /** Bumped whenever the live entry changes: entries of an older generation are stale. */
  timerGeneration: number;
  /** The earliest instant something about the item changes by itself. */
  nextDeadline(): number;
}

interface Entry<T> {
  readonly item: T;
  readonly generation: number;
}

export class Deadlines<T extends Scheduled> {
  readonly #heap = new MinHeap<Entry<T>>();
  /** The items scheduled and not forgotten since (a rebuild walks them). */
  readonly #items = new Set<T>();
  /** Heap entries that no longer match their item's schedule. */
  #stale = 0;

  /** (Re)schedule `item` at its next deadline, if that is earlier than the one it has. */
  schedule(item: T): void {
    const at = item.nextDeadline();
    if (at >= item.scheduledAt) return;
    // The later entry already in the heap is dead from now on (lazy deletion).
    if (item.scheduledAt !== Number.POSITIVE_INFINITY) this.#noteStale();
    item.scheduledAt = at;
    item.timerGeneration++;
    this.#items.add(item);
    this.#heap.push(at, { item, generation: item.timerGeneration });
  }

  /** `item` is gone: its entry is dead, and it is never due again. */
  forget(item: T): void {
    this.#items.delete(item);
    if (item.scheduledAt !== Number.POSITIVE_INFINITY) this.#noteStale();
    item.scheduledAt = Number.POSITIVE_INFINITY;
    item.timerGeneration++;
  }

  /**
   * The next item due at or before `now`, taken off the schedule (the caller deals with it
   * and schedules it again), or undefined when nothing more is due.
   */
  popDue(now: number): T | undefined {
    for (;;) {
      const at = this.#heap.peekKey();
      if (at === undefined || at > now) return undefined;
      const entry = this.#heap.pop()!;
      const item = entry.item;
      if (entry.generation !== item.timerGeneration) {
        if (this.#stale > 0) this.#stale--;
        continue;
      }
      item.scheduledAt = Number.POSITIVE_INFINITY;
      return item;
    }
  }

  /** Heap entries, stale ones included (compaction keeps them within a bound of the live). */
  get entries(): number {
    return this.#heap.size;
  }

  /** The earliest scheduled instant (possibly of a stale entry: then it fires to no effect). */
  next(): number | undefined {
    return this.#heap.peekKey();
  }

  /**
   * Stale entries keep their item reachable until their deadline (up to an hour). Under churn
   * that would hold memory for every allocation of the last hour, so once stale entries
   * outnumber live items the heap is rebuilt from the live ones: O(live), amortised over at
   * least as many deletions.
   */
  #noteStale(): void {
    if (++this.#stale <= Math.max(1024, 2 * this.#items.size)) return;
    this.#heap.clear();
    for (const item of this.#items) {
      if (item.scheduledAt !== Number.POSITIVE_INFINITY) {
        this.#heap.push(item.scheduledAt, { item, generation: item.timerGeneration });
      }
    }
    this.#stale = 0;
  }
}
