// crc32 (FINGERPRINT, RFC 8489 §14.7) reads eight bytes per step: every length, offset and
// leftover must give zlib's answer.
import { crc32 as zlibCrc32 } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { crc32 } from "../src/codec/crc32.js";

describe("crc32", () => {
  it("gives the check value of the CRC-32 catalogue for '123456789'", () => {
    expect(crc32(new TextEncoder().encode("123456789"))).toBe(0xcbf43926);
  });

  it("is 0 for no bytes", () => {
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it("agrees with zlib for every length from 0 to 40 (each leftover after the 8-byte steps)", () => {
    const bytes = Uint8Array.from({ length: 40 }, (_, i) => (i * 151 + 7) & 0xff);
    for (let n = 0; n <= 40; n++) {
      expect(crc32(bytes, 0, n)).toBe(zlibCrc32(bytes.subarray(0, n)));
    }
  });

  it("covers only bytes[start, end) of a larger buffer", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(), (bytes, a, b) => {
        const start = bytes.length === 0 ? 0 : a % (bytes.length + 1);
        const end = start + (bytes.length === 0 ? 0 : b % (bytes.length - start + 1));
        expect(crc32(bytes, start, end)).toBe(zlibCrc32(bytes.subarray(start, end)));
      }),
    );
  });
});
