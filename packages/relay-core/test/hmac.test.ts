import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { binaryEqualsBytes, hmacBinary } from "../src/codec/hmac.js";

const bytesOf = (binary: string) => Uint8Array.from(binary, (c) => c.charCodeAt(0));

describe("HMAC as two one-shot hashes (RFC 2104)", () => {
  it("computes HMAC-SHA1 and HMAC-SHA256 as node:crypto does, for any key and message length", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("sha1" as const, "sha256" as const),
        // Keys past the 64-byte block are hashed first; messages past the scratch buffer's
        // first size make it grow.
        fc.uint8Array({ minLength: 0, maxLength: 150 }),
        fc.uint8Array({ minLength: 0, maxLength: 5000 }),
        (algorithm, key, message) => {
          const expected = createHmac(algorithm, key).update(message).digest();
          expect(bytesOf(hmacBinary(algorithm, key, message))).toEqual(new Uint8Array(expected));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("gives the same MAC again after a longer message used the scratch buffer", () => {
    const key = new Uint8Array(16).fill(3);
    const short = new Uint8Array(40).fill(1);
    const first = hmacBinary("sha1", key, short);
    hmacBinary("sha1", key, new Uint8Array(70_000).fill(9));
    expect(hmacBinary("sha1", key, short)).toBe(first);
  });

  it("compares a MAC with bytes only when every byte matches", () => {
    const bytes = Uint8Array.of(0, 1, 2, 3, 4, 5);
    expect(binaryEqualsBytes("\u0002\u0003\u0004", bytes, 2, 3)).toBe(true);
    expect(binaryEqualsBytes("\u0002\u0003\u0005", bytes, 2, 3)).toBe(false);
    expect(binaryEqualsBytes("\u0003\u0003\u0004", bytes, 2, 3)).toBe(false);
    // A MAC shorter than asked, or a range past the end, is no match.
    expect(binaryEqualsBytes("\u0002\u0003", bytes, 2, 3)).toBe(false);
    expect(binaryEqualsBytes("\u0004\u0005\u0000", bytes, 4, 3)).toBe(false);
  });
});
