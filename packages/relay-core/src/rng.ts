// Injected randomness. The core never reads ambient entropy (no Math.random, no
// crypto.randomBytes): nonce secrets, relay port choice and transaction ids come from a
// RandomSource passed in by the runtime, so a test or a `--rng-seed` run replays exactly.
// The crypto-backed source lives in relay-server.

export interface RandomSource {
  /** A uniformly distributed integer in [0, 2^32). */
  nextUint32(): number;
  /** Fills `target` with random bytes. */
  fillBytes(target: Uint8Array): void;
}

/** SplitMix32 step: spreads a seed over the state words (zero seeds included). */
function splitMix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over UTF-16 code units: a simple, stable string -> 32-bit seed. */
function hashSeed(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * xoshiro128** (Blackman & Vigna): small, fast, statistically good and deterministic.
 * NOT cryptographically secure: for tests and reproducible runs only.
 */
export class SeededRandom implements RandomSource {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number | string) {
    let s: number;
    if (typeof seed === "string") s = hashSeed(seed);
    else if (Number.isFinite(seed)) s = (Math.trunc(seed) ^ Math.trunc(seed / 2 ** 32)) >>> 0;
    else s = 0;
    const state = { s };
    this.#a = splitMix32(state);
    this.#b = splitMix32(state);
    this.#c = splitMix32(state);
    this.#d = splitMix32(state);
    // xoshiro's one forbidden state is all zeros.
    if ((this.#a | this.#b | this.#c | this.#d) === 0) this.#a = 1;
  }

  nextUint32(): number {
    const b = this.#b;
    const result = Math.imul(rotl(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    this.#c ^= this.#a;
    this.#d ^= this.#b;
    this.#b ^= this.#c;
    this.#a ^= this.#d;
    this.#c ^= t;
    this.#d = rotl(this.#d, 11);
    return result;
  }

  fillBytes(target: Uint8Array): void {
    let i = 0;
    const n = target.length;
    while (i + 4 <= n) {
      const r = this.nextUint32();
      target[i] = r & 0xff;
      target[i + 1] = (r >>> 8) & 0xff;
      target[i + 2] = (r >>> 16) & 0xff;
      target[i + 3] = r >>> 24;
      i += 4;
    }
    if (i < n) {
      let r = this.nextUint32();
      for (; i < n; i++) {
        target[i] = r & 0xff;
        r >>>= 8;
      }
    }
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

const TWO_31 = 2 ** 31;
const TWO_32 = 2 ** 32;
const TWO_53 = 2 ** 53;

/**
 * A uniformly distributed integer in [0, n), without modulo bias: draws in the biased
 * top slice are rejected (fewer than one draw in two on average, at worst). `n` is
 * floored; n < 1 or not finite returns 0, n > 2^53 is capped at 2^53. Never throws.
 */
export function randomIntBelow(rng: RandomSource, n: number): number {
  if (!(n >= 1)) return 0; // also catches NaN
  let bound = Math.floor(n);
  if (bound === 1) return 0;
  if (bound <= TWO_32) {
    const limit = TWO_32 - (TWO_32 % bound);
    for (;;) {
      const r = rng.nextUint32() >>> 0;
      // `| 0` below 2^31: V8 takes `%` of a uint32 from 2^31 up in floating point and answers a
      // heap number even for a small result, and a heap number stored where small integers were
      // (a relay port in every address and output object) turns that field into a boxed double
      // for every object of the shape (`--trace-generalization`: "port:s->d").
      if (r < limit) return bound <= TWO_31 ? (r % bound) | 0 : r % bound;
    }
  }
  if (bound > TWO_53) bound = TWO_53;
  const limit = TWO_53 - (TWO_53 % bound);
  for (;;) {
    // 21 high bits from one draw, 32 from another: a uniform 53-bit integer.
    const r = (rng.nextUint32() >>> 11) * TWO_32 + (rng.nextUint32() >>> 0);
    if (r < limit) return r % bound;
  }
}
