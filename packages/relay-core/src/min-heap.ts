// A binary min-heap keyed by number (deadlines in ms), so the server's pollTimeout() is
// O(1) and each timer insert/expire O(log n), instead of scanning every allocation per
// tick. Keys and values live in parallel arrays: no wrapper object per entry. Entries
// with equal keys come out in no particular order. Stale entries (a refreshed lifetime)
// are the caller's concern: push the new deadline and ignore outdated pops.

export class MinHeap<T> {
  #keys: number[] = [];
  #values: T[] = [];

  get size(): number {
    return this.#keys.length;
  }

  push(key: number, value: T): void {
    const keys = this.#keys;
    const values = this.#values;
    // NaN would break every comparison below; treat it as "as late as possible".
    const k = Number.isNaN(key) ? Number.POSITIVE_INFINITY : key;
    let i = keys.length;
    keys.push(k);
    values.push(value);
    // Sift up.
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      const pk = keys[parent] as number;
      if (pk <= k) break;
      keys[i] = pk;
      values[i] = values[parent] as T;
      i = parent;
    }
    keys[i] = k;
    values[i] = value;
  }

  peekKey(): number | undefined {
    // Not `#keys[0]` of an empty array: a read out of bounds deoptimized the engine's timer
    // paths that inline this (peekKey, afterInput, expire: "out of bounds" under load).
    return this.#keys.length === 0 ? undefined : this.#keys[0];
  }

  peek(): T | undefined {
    return this.#keys.length === 0 ? undefined : this.#values[0];
  }

  pop(): T | undefined {
    const keys = this.#keys;
    const values = this.#values;
    const n = keys.length;
    if (n === 0) return undefined;
    const top = values[0] as T;
    const lastKey = keys.pop() as number;
    const lastValue = values.pop() as T; // pop() drops the reference: no leak
    const size = n - 1;
    if (size > 0) {
      // Sift the last entry down from the root.
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        if (left >= size) break;
        const right = left + 1;
        let child = left;
        let ck = keys[left] as number;
        if (right < size && (keys[right] as number) < ck) {
          child = right;
          ck = keys[right] as number;
        }
        if (ck >= lastKey) break;
        keys[i] = ck;
        values[i] = values[child] as T;
        i = child;
      }
      keys[i] = lastKey;
      values[i] = lastValue;
    }
    return top;
  }

  clear(): void {
    this.#keys.length = 0;
    this.#values.length = 0;
  }
}
