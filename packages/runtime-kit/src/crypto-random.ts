// The production randomness both CLIs hand relay-core (transaction ids, nonce secrets, relay
// port choice): the OS CSPRNG, read in 4 KiB blocks so a draw costs no system call. relay-core
// never reaches for entropy itself (sans-IO); tests and `--rng-seed` give it a SeededRandom.
// This class has relay-core's RandomSource shape (nextUint32, fillBytes) without importing
// relay-core: runtime-kit depends on no other workspace package (ARCHITECTURE.md, "Layers").
import { randomFillSync } from "node:crypto";

export class CryptoRandom {
  private readonly pool = new Uint8Array(4096);
  private pos = this.pool.length;

  /** A uniform 32-bit unsigned integer. */
  nextUint32(): number {
    if (this.pos + 4 > this.pool.length) this.refill();
    const p = this.pool;
    const i = this.pos;
    this.pos += 4;
    return ((p[i]! << 24) | (p[i + 1]! << 16) | (p[i + 2]! << 8) | p[i + 3]!) >>> 0;
  }

  /** Fills `target`: from the pool when small, straight from the OS when large. */
  fillBytes(target: Uint8Array): void {
    if (target.length > this.pool.length / 4) {
      randomFillSync(target);
      return;
    }
    if (this.pos + target.length > this.pool.length) this.refill();
    target.set(this.pool.subarray(this.pos, this.pos + target.length));
    this.pos += target.length;
  }

  private refill(): void {
    randomFillSync(this.pool);
    this.pos = 0;
  }
}
