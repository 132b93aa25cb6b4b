/**
 * The first-in first-out queue behind every `poll*()` output of the engines (the server's
 * commands, the client's transmits and events). A runtime drains it completely after each
 * input, so it hands items out by a moving head index instead of `Array.shift()` (which moves
 * every remaining element), clears each slot as it goes (no reference outlives its turn), and
 * empties the array once everything was handed out, so it never grows with the head.
 */
export class OutputQueue<T> {
  readonly #items: (T | undefined)[] = [];
  #head = 0;

  push(item: T): void {
    this.#items.push(item);
  }

  /** The oldest item, removed; undefined once the queue is empty. */
  poll(): T | undefined {
    const items = this.#items;
    if (this.#head >= items.length) {
      if (this.#head > 0) {
        items.length = 0;
        this.#head = 0;
      }
      return undefined;
    }
    const item = items[this.#head];
    items[this.#head++] = undefined;
    return item;
  }
}
