// The CSPRNG both CLIs hand relay-core: whole unsigned 32-bit draws, and no block of the pool
// handed out twice (a draw that did not advance would repeat transaction ids and nonces).
import { describe, expect, it } from "vitest";
import { CryptoRandom } from "../src/crypto-random.js";

describe("CryptoRandom", () => {
  it("draws unsigned 32-bit integers across refills of its pool, using the high bit too", () => {
    const r = new CryptoRandom();
    let high = 0;
    // 3,000 draws of 4 bytes cross the 4 KiB pool boundary twice.
    for (let i = 0; i < 3000; i++) {
      const v = r.nextUint32();
      expect(Number.isInteger(v) && v >= 0 && v < 2 ** 32, String(v)).toBe(true);
      if (v >= 2 ** 31) high++;
    }
    // About half of them; a signed conversion would give none.
    expect(high).toBeGreaterThan(1200);
    expect(high).toBeLessThan(1800);
  });

  it("never hands out the same bytes twice, from the pool or straight from the OS", () => {
    const r = new CryptoRandom();
    const seen = new Set<string>();
    for (const size of [12, 12, 16, 600, 1024, 1025, 4096, 12]) {
      const b = new Uint8Array(size);
      r.fillBytes(b);
      const hex = Buffer.from(b).toString("hex");
      expect(seen.has(hex), `a repeated ${size}-byte draw`).toBe(false);
      seen.add(hex);
    }
  });
});
