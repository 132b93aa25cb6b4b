/**
 * When each allocation next needs attention (its lifetime, a permission, a channel or its
 * cool-down, an RFC 6062 wait): one entry per allocation in a min-heap keyed by that instant,
 * so `pollTimeout()` is O(1) and a timer costs O(log n), instead of scanning every allocation
 * per tick.
 *
 * A deadline that moves earlier is not looked for in the heap: the new entry is pushed and the
 * old one becomes stale (lazy deletion), and so does a forgotten item's. An item carries its own
 * bookkeeping (`scheduledAt`, `timerEntry`) so this costs no map lookup, and a stale entry lets
 * go of its item at once: a deleted allocation (its buffers, permissions, channels) is not kept
 * reachable by an entry that comes out of the heap only when its time would have come.
 */
import { MinHeap } from "../min-heap.js";

export interface Scheduled {
  /** The instant of this item's live heap entry (+Infinity: none). Written only here. */
  scheduledAt: number;
  /** The item's live heap entry, opaque to all but Deadlines (undefined: none). */
  timerEntry: object | undefined;
  /** The earliest instant something about the item changes by itself. */
  nextDeadline(): number;
}

/** A heap entry; a stale one has let go of its item. */
interface Entry<T> {
  item: T | undefined;
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
    this.#drop(item);
    item.scheduledAt = at;
    this.#items.add(item);
    this.#push(item);
  }

  /** `item` is gone: its entry is dead, and it is never due again. */
  forget(item: T): void {
    this.#items.delete(item);
    this.#drop(item);
    item.scheduledAt = Number.POSITIVE_INFINITY;
  }

  /**
   * The next item due at or before `now`, taken off the schedule (the caller deals with it
   * and schedules it again), or undefined when nothing more is due.
   */
  popDue(now: number): T | undefined {
    for (;;) {
      const at = this.#heap.peekKey();
      if (at === undefined || at > now) return undefined;
      const item = this.#heap.pop()!.item;
      if (item === undefined) {
        if (this.#stale > 0) this.#stale--;
        continue;
      }
      item.timerEntry = undefined;
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

  #push(item: T): void {
    const entry: Entry<T> = { item };
    item.timerEntry = entry;
    this.#heap.push(item.scheduledAt, entry);
  }

  /** `item`'s live entry, if any, goes stale and lets go of it; the item is unscheduled. */
  #drop(item: T): void {
    const entry = item.timerEntry as Entry<T> | undefined;
    if (entry === undefined) return;
    entry.item = undefined;
    item.timerEntry = undefined;
    // Before a possible rebuild, which must not push this item again at its old instant.
    item.scheduledAt = Number.POSITIVE_INFINITY;
    this.#noteStale();
  }

  /**
   * Stale entries stay in the heap until their deadline (up to an hour). Under churn that
   * would grow the heap by an entry per deleted allocation of the last hour, so once stale
   * entries outnumber live items the heap is rebuilt from the live ones: O(live), amortised
   * over at least as many deletions.
   */
  #noteStale(): void {
    if (++this.#stale <= Math.max(1024, 2 * this.#items.size)) return;
    this.#heap.clear();
    for (const item of this.#items) {
      if (item.scheduledAt !== Number.POSITIVE_INFINITY) this.#push(item);
    }
    this.#stale = 0;
  }
}
