// The production RandomSource handed to relay-core: the OS CSPRNG, read in blocks so a nonce
// secret or a port choice costs no system call. relay-core itself never reaches for entropy
// (sans-IO); tests and `--rng-seed` hand it a SeededRandom instead.
import { randomFillSync } from "node:crypto";
import type { RandomSource } from "@turnpike/relay-core";

export class CryptoRandom implements RandomSource {
  private readonly pool = new Uint8Array(4096);
  private pos = this.pool.length;

  nextUint32(): number {
    if (this.pos + 4 > this.pool.length) this.refill();
    const p = this.pool;
    const i = this.pos;
    this.pos += 4;
    return ((p[i]! << 24) | (p[i + 1]! << 16) | (p[i + 2]! << 8) | p[i + 3]!) >>> 0;
  }

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
