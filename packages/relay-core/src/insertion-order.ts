/**
 * Maps used as bounded caches: a Map iterates in insertion order, so its first entry is the
 * oldest. Caches whose entries share one lifetime also expire front first.
 *
 * Why a class and not `map.keys().next()`: V8 leaves a deleted entry as a hole in the Map's
 * table until the table is rebuilt, and a fresh iterator walks over every hole before the
 * first live entry. A cache at its cap deletes at the front and adds at the back on every
 * insertion, so the holes pile up at the front and finding the oldest entry cost thousands of
 * steps per insertion (measured: ~7 µs at 8,192 entries, on every request once the response
 * cache was full; bench/README.md, "Setup and churn profile"). Here one iterator is kept
 * across calls: a live Map iterator skips each hole once, follows the table when it is
 * rebuilt and sees entries added after it, so the oldest entry is found in O(1) amortized.
 */
export class InsertionOrderedMap<K, V> {
  readonly #map = new Map<K, V>();
  /** Walks the map oldest first; every entry before it has been removed. */
  #cursor: MapIterator<[K, V]> | undefined;
  /** The oldest entry, taken from the cursor but still in the map. */
  #front: [K, V] | undefined;

  get size(): number {
    return this.#map.size;
  }

  get(key: K): V | undefined {
    return this.#map.get(key);
  }

  has(key: K): boolean {
    return this.#map.has(key);
  }

  /** A new key goes to the back; an existing one keeps its place (as in a Map). */
  set(key: K, value: V): this {
    this.#map.set(key, value);
    if (this.#front !== undefined && this.#front[0] === key) this.#front[1] = value;
    return this;
  }

  delete(key: K): boolean {
    if (this.#front !== undefined && this.#front[0] === key) this.#front = undefined;
    return this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
    this.#cursor = undefined;
    this.#front = undefined;
  }

  /** Keys, oldest first. */
  keys(): MapIterator<K> {
    return this.#map.keys();
  }

  /** Makes room for one more entry, holding at most `cap`: the oldest goes. */
  evictOldestAtCap(cap: number): void {
    if (this.#map.size < cap) return;
    const oldest = this.#oldest();
    if (oldest !== undefined) this.delete(oldest[0]);
  }

  /** Drops entries from the front while `expired` holds for them, `max` at the most. */
  dropExpiredOldest(expired: (value: V) => boolean, max = Number.POSITIVE_INFINITY): void {
    for (let dropped = 0; dropped < max; dropped++) {
      const oldest = this.#oldest();
      if (oldest === undefined || !expired(oldest[1])) return;
      this.delete(oldest[0]);
    }
  }

  #oldest(): [K, V] | undefined {
    if (this.#front !== undefined) return this.#front;
    if (this.#map.size === 0) return undefined;
    let next = this.#cursor?.next();
    if (next === undefined || next.done === true) {
      // A finished iterator stays finished: start again (everything before it is gone, so
      // this walks the holes once).
      this.#cursor = this.#map.entries();
      next = this.#cursor.next();
    }
    this.#front = next.done === true ? undefined : next.value;
    return this.#front;
  }
}
