// The hash of the tables workers share (shared-limits.ts, user-bandwidth.ts): SipHash-2-4
// (Aumasson and Bernstein, 2012) under a key drawn once per process. Its keys come from clients:
// source addresses (an IPv6 /64 is one key, and a subscriber with a /48 holds 65,536 of them)
// and user names. With an unkeyed hash a client could pick keys whose slots collide and fill a
// probe run (refusing everyone whose key lands there) or evict another source's rate bucket; a
// keyed PRF leaves it nothing to pick. A hash costs well under a microsecond, once per
// allocation, connection or unauthenticated answer (never per relayed datagram).
//
// 64-bit lanes are pairs of 32-bit words (JavaScript has no fast 64-bit integers); the output
// is checked against the reference vectors (test/shared-limits.test.ts).

const encoder = new TextEncoder();
/** Where key strings are encoded (UTF-8); longer ones get a buffer of their own. */
const scratch = new Uint8Array(1024);

export class KeyedHash {
  /** v0..v3 as (high, low) word pairs: v0 = [0, 1], v1 = [2, 3], v2 = [4, 5], v3 = [6, 7]. */
  private readonly v = new Uint32Array(8);
  private readonly k = new Uint32Array(4);

  /** `key`: 16 bytes, the same in every worker of the process. */
  constructor(key: Uint8Array) {
    if (key.length !== 16) throw new RangeError("a SipHash key has 16 bytes");
    const d = new DataView(key.buffer, key.byteOffset, 16);
    // k0 = bytes 0..7 little-endian, k1 = bytes 8..15: (high, low) words.
    this.k.set([
      d.getUint32(4, true),
      d.getUint32(0, true),
      d.getUint32(12, true),
      d.getUint32(8, true),
    ]);
  }

  /**
   * The 64-bit hash of `text` (UTF-8) as a table key (slot-table.ts): [high, low] Int32 words,
   * low never 0.
   */
  of(text: string): [number, number] {
    if (text.length * 3 <= scratch.length) {
      return this.key(scratch, encoder.encodeInto(text, scratch).written);
    }
    return this.key(encoder.encode(text));
  }

  /** The same for bytes. */
  key(bytes: Uint8Array, length = bytes.length): [number, number] {
    const [hi, lo] = this.bytes(bytes, length);
    return [hi | 0, lo === 0 ? 1 : lo | 0];
  }

  /** SipHash-2-4 of `m[0..length)`: the 64-bit result as unsigned [high, low] words. */
  bytes(m: Uint8Array, length = m.length): [number, number] {
    const v = this.v;
    const k = this.k;
    // "somepseudorandomlygeneratedbytes"
    v[0] = k[0]! ^ 0x736f6d65;
    v[1] = k[1]! ^ 0x70736575;
    v[2] = k[2]! ^ 0x646f7261;
    v[3] = k[3]! ^ 0x6e646f6d;
    v[4] = k[0]! ^ 0x6c796765;
    v[5] = k[1]! ^ 0x6e657261;
    v[6] = k[2]! ^ 0x74656462;
    v[7] = k[3]! ^ 0x79746573;
    const whole = length - (length % 8);
    for (let i = 0; i < whole; i += 8) this.compress(word(m, i + 4), word(m, i), 2);
    // The last block: the remaining bytes, and the length's low byte at the top.
    let hi = (length & 0xff) << 24;
    let lo = 0;
    for (let i = whole; i < length; i++) {
      const shift = (i - whole) * 8;
      if (shift < 32) lo |= m[i]! << shift;
      else hi |= m[i]! << (shift - 32);
    }
    this.compress(hi >>> 0, lo >>> 0, 2);
    v[5] = v[5]! ^ 0xff;
    for (let r = 0; r < 4; r++) this.round();
    return [(v[0]! ^ v[2]! ^ v[4]! ^ v[6]!) >>> 0, (v[1]! ^ v[3]! ^ v[5]! ^ v[7]!) >>> 0];
  }

  /** One message word m = (hi, lo): v3 ^= m, `rounds` SipRounds, v0 ^= m. */
  private compress(hi: number, lo: number, rounds: number): void {
    const v = this.v;
    v[6] = v[6]! ^ hi;
    v[7] = v[7]! ^ lo;
    for (let r = 0; r < rounds; r++) this.round();
    v[0] = v[0]! ^ hi;
    v[1] = v[1]! ^ lo;
  }

  private round(): void {
    this.add(0, 2);
    this.rotl(2, 13);
    this.xor(2, 0);
    this.rotl(0, 32);
    this.add(4, 6);
    this.rotl(6, 16);
    this.xor(6, 4);
    this.add(0, 6);
    this.rotl(6, 21);
    this.xor(6, 0);
    this.add(4, 2);
    this.rotl(2, 17);
    this.xor(2, 4);
    this.rotl(4, 32);
  }

  /** v[a] += v[b] (mod 2^64). */
  private add(a: number, b: number): void {
    const v = this.v;
    const lo = v[a + 1]! + v[b + 1]!;
    v[a] = v[a]! + v[b]! + (lo > 0xffffffff ? 1 : 0);
    v[a + 1] = lo;
  }

  /** v[a] ^= v[b]. */
  private xor(a: number, b: number): void {
    const v = this.v;
    v[a] = v[a]! ^ v[b]!;
    v[a + 1] = v[a + 1]! ^ v[b + 1]!;
  }

  /** v[a] rotated left by n bits (0 < n <= 32). */
  private rotl(a: number, n: number): void {
    const v = this.v;
    const hi = v[a]!;
    const lo = v[a + 1]!;
    if (n === 32) {
      v[a] = lo;
      v[a + 1] = hi;
      return;
    }
    v[a] = (hi << n) | (lo >>> (32 - n));
    v[a + 1] = (lo << n) | (hi >>> (32 - n));
  }
}

/** Bytes i..i+3 as a little-endian unsigned word. */
function word(m: Uint8Array, i: number): number {
  return (m[i]! | (m[i + 1]! << 8) | (m[i + 2]! << 16) | (m[i + 3]! << 24)) >>> 0;
}
