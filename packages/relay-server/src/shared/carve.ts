// Typed arrays carved out of one SharedArrayBuffer, the same way in every thread: a thread is
// given the buffer (structured clones share it) and the numbers the layout was made from, and
// carves the same arrays at the same offsets. One pass without a buffer measures the size.

export class Carver {
  private offset = 0;

  /** `buffer` undefined: only measure (then `bytes` is the size to allocate). */
  constructor(private readonly buffer?: SharedArrayBuffer) {}

  get bytes(): number {
    return this.offset;
  }

  int32(count: number): Int32Array {
    return this.take(Int32Array, count, 4);
  }

  float64(count: number): Float64Array {
    return this.take(Float64Array, count, 8);
  }

  private take<T extends Int32Array | Float64Array>(
    Kind: new (buffer: SharedArrayBuffer, offset: number, count: number) => T,
    count: number,
    size: number,
  ): T {
    const at = Math.ceil(this.offset / 8) * 8;
    this.offset = at + count * size;
    // Measuring: an unshared stand-in of the right type, never used.
    return this.buffer === undefined
      ? (new (Kind as unknown as new (n: number) => T)(0) as T)
      : new Kind(this.buffer, at, count);
  }
}

/** Lays `carve` out once to measure it, then on a buffer of that size; returns both. */
export function carveShared<T>(carve: (c: Carver) => T): { buffer: SharedArrayBuffer; views: T } {
  const measure = new Carver();
  carve(measure);
  const buffer = new SharedArrayBuffer(Math.max(8, measure.bytes));
  return { buffer, views: carve(new Carver(buffer)) };
}
