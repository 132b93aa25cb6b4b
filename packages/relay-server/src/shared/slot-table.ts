// The hash tables of shared memory: open addressing with linear probing and backward-shift
// deletion (Knuth's Algorithm R), so an entry whose count returns to zero is removed at once and
// tables never fill with tombstones. A slot is `stride` Int32 words (and `floatStride` Float64
// values for what needs doubles), the first two the key: a 64-bit keyed hash (keyed-hash.ts) as
// high and low words, low never 0; low 0 marks an empty slot. Callers hold the shared lock.

/** A probe run longer than this counts as a full table (bounded work under the lock). */
export const MAX_PROBES = 128;

export class SlotTable {
  readonly mask: number;

  constructor(
    /** A power of two. */
    readonly slots: number,
    readonly words: Int32Array,
    readonly stride: number,
    readonly floats?: Float64Array,
    readonly floatStride = 0,
  ) {
    this.mask = slots - 1;
  }

  /** The slot where a key's probe run starts. */
  home(lo: number): number {
    return (lo >>> 0) & this.mask;
  }

  isEmpty(slot: number): boolean {
    return this.words[slot * this.stride + 1] === 0;
  }

  matches(slot: number, hi: number, lo: number): boolean {
    const at = slot * this.stride;
    return this.words[at + 1] === lo && this.words[at] === hi;
  }

  /** The slot holding the key, or -1. */
  find(hi: number, lo: number): number {
    for (let i = 0, s = this.home(lo); i < MAX_PROBES; i++, s = (s + 1) & this.mask) {
      if (this.isEmpty(s)) return -1;
      if (this.matches(s, hi, lo)) return s;
    }
    return -1;
  }

  /** The slot holding the key, or a fresh one for it (every other value 0); -1 when full. */
  findOrInsert(hi: number, lo: number): number {
    for (let i = 0, s = this.home(lo); i < MAX_PROBES; i++, s = (s + 1) & this.mask) {
      if (this.matches(s, hi, lo)) return s;
      if (this.isEmpty(s)) {
        this.claim(s, hi, lo);
        return s;
      }
    }
    return -1;
  }

  /** Slot `slot` now holds the key, with every other value 0. */
  claim(slot: number, hi: number, lo: number): void {
    const at = slot * this.stride;
    this.words.fill(0, at, at + this.stride);
    this.floats?.fill(0, slot * this.floatStride, (slot + 1) * this.floatStride);
    this.words[at] = hi;
    this.words[at + 1] = lo;
  }

  /**
   * Empty `slot`: each later entry of its probe run moves into the hole unless its home lies
   * cyclically between the hole and where it sits.
   */
  remove(slot: number): void {
    const { words, stride, mask } = this;
    let hole = slot;
    for (let next = (hole + 1) & mask; !this.isEmpty(next); next = (next + 1) & mask) {
      const home = this.home(words[next * stride + 1]!);
      if (((hole - home) & mask) < ((next - home) & mask)) {
        words.copyWithin(hole * stride, next * stride, (next + 1) * stride);
        const f = this.floatStride;
        this.floats?.copyWithin(hole * f, next * f, (next + 1) * f);
        hole = next;
      }
    }
    words.fill(0, hole * stride, (hole + 1) * stride);
    this.floats?.fill(0, hole * this.floatStride, (hole + 1) * this.floatStride);
  }

  /**
   * Remove every entry `drop` selects (after it had its say about the entry). An entry moved
   * back into a slot just emptied is looked at there; one that wraps from the start of the
   * table to its end was looked at already.
   */
  removeWhere(drop: (slot: number) => boolean): void {
    for (let s = 0; s < this.slots; ) {
      if (!this.isEmpty(s) && drop(s)) this.remove(s);
      else s++;
    }
  }

  clear(): void {
    this.words.fill(0);
    this.floats?.fill(0);
  }
}
