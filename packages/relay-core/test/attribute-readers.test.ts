// The attribute readers find, in place, exactly what the decoded message lists (RFC 8489 §14:
// the first occurrence counts; §14.5, §14.6: nothing but MESSAGE-INTEGRITY-SHA256 and
// FINGERPRINT counts after MESSAGE-INTEGRITY), whether the message came from decodeStun (its
// TLVs walked again on demand) or was made by hand (its `attributes` list read).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeAddressValue } from "../src/codec/address.js";
import {
  attributeLength,
  getAttribute,
  hasAttribute,
  hasValidString,
  readAllXorAddresses,
  readBytes,
  readChannelNumber,
  readRequestedTransport,
  readString,
  readUint32,
  readXorAddress,
} from "../src/codec/attributes.js";
import { AttributeType, FINGERPRINT_XOR } from "../src/codec/constants.js";
import { crc32 } from "../src/codec/crc32.js";
import { decodeStun, type StunAttribute, type StunMessage } from "../src/codec/message.js";

/** Types the messages below draw from: integrity attributes, repeatable ones, an unknown one. */
const TYPES = [
  AttributeType.MessageIntegrity,
  AttributeType.MessageIntegritySha256,
  AttributeType.Username,
  AttributeType.Realm,
  AttributeType.Lifetime,
  AttributeType.ChannelNumber,
  AttributeType.RequestedTransport,
  AttributeType.XorPeerAddress,
  AttributeType.Data,
  0x7fff,
  0xc001,
  // Types that share a presence bit with ones above (type & 31, message.ts): 0x0028 with
  // MESSAGE-INTEGRITY, 0x0034 with REALM; 0x8008 has MESSAGE-INTEGRITY's bit among the
  // comprehension-optional types.
  0x0028,
  0x0034,
  0x8008,
];

const tlvArb = fc.record({
  type: fc.constantFrom(...TYPES),
  value: fc.oneof(
    fc.uint8Array({ maxLength: 24 }),
    fc.uint8Array({ minLength: 4, maxLength: 4 }),
    // XOR-PEER-ADDRESS-shaped values, IPv4 and IPv6, so the address readers answer something.
    fc
      .tuple(fc.constantFrom(1, 2), fc.uint8Array({ minLength: 18, maxLength: 18 }))
      .map(([family, rest]) =>
        Uint8Array.of(0, family, ...rest.subarray(0, family === 1 ? 6 : 18)),
      ),
    fc.stringMatching(/^[a-z0-9:.-]{0,12}$/).map((s) => new TextEncoder().encode(s)),
  ),
});

/** A message built TLV by TLV (any order, integrity attributes anywhere), maybe fingerprinted. */
function encode(tlvs: { type: number; value: Uint8Array }[], fingerprint: boolean): Uint8Array {
  const size =
    tlvs.reduce((n, t) => n + 4 + ((t.value.length + 3) & ~3), 0) + (fingerprint ? 8 : 0);
  const bytes = new Uint8Array(20 + size);
  bytes.set([0x00, 0x03, size >> 8, size & 0xff, 0x21, 0x12, 0xa4, 0x42]);
  for (let i = 8; i < 20; i++) bytes[i] = i * 7;
  let pos = 20;
  for (const t of tlvs) {
    bytes.set([t.type >> 8, t.type & 0xff, t.value.length >> 8, t.value.length & 0xff], pos);
    bytes.set(t.value, pos + 4);
    pos += 4 + ((t.value.length + 3) & ~3);
  }
  if (fingerprint) {
    const crc = (crc32(bytes, 0, pos) ^ FINGERPRINT_XOR) >>> 0;
    bytes.set(
      [0x80, 0x28, 0, 4, crc >>> 24, (crc >>> 16) & 0xff, (crc >>> 8) & 0xff, crc & 0xff],
      pos,
    );
  }
  return bytes;
}

/** The listing rule of RFC 8489 §14.5-§14.7, written out as the decoder once applied it. */
function expectedListing(bytes: Uint8Array): StunAttribute[] {
  const out: StunAttribute[] = [];
  let afterIntegrity = false;
  for (let pos = 20; pos < bytes.length; ) {
    const type = (bytes[pos]! << 8) | bytes[pos + 1]!;
    const length = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
    const integrity =
      type === AttributeType.MessageIntegrity || type === AttributeType.MessageIntegritySha256;
    if (
      type === AttributeType.Fingerprint ||
      (integrity && (!afterIntegrity || type === AttributeType.MessageIntegritySha256)) ||
      (!integrity && !afterIntegrity)
    ) {
      out.push({ type, offset: pos + 4, length });
    }
    if (integrity) afterIntegrity = true;
    pos += 4 + ((length + 3) & ~3);
  }
  return out;
}

/** Every reader's answer for every type, as plain data to compare. */
function readAll(m: StunMessage): unknown[] {
  return [
    ...TYPES.map((t) => [
      hasAttribute(m, t),
      attributeLength(m, t),
      readBytes(m, t) && Array.from(readBytes(m, t)!),
      readString(m, t),
      hasValidString(m, t),
      readUint32(m, t),
      readXorAddress(m, t),
      readAllXorAddresses(m, t),
      getAttribute(m, t),
    ]),
    readChannelNumber(m),
    readRequestedTransport(m),
  ];
}

describe("attribute readers over a decoded message", () => {
  it("list and find what RFC 8489 §14 says counts, for any order of attributes", () => {
    fc.assert(
      fc.property(fc.array(tlvArb, { maxLength: 10 }), fc.boolean(), (tlvs, fingerprint) => {
        const bytes = encode(tlvs, fingerprint);
        const r = decodeStun(bytes);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const m = r.message;
        const listing = expectedListing(bytes);
        // Readers first, before anything asked for the list: they walk the bytes.
        for (const t of TYPES) {
          const first = listing.find((a) => a.type === t);
          expect(hasAttribute(m, t)).toBe(first !== undefined);
          expect(attributeLength(m, t)).toBe(first?.length ?? -1);
          expect(readBytes(m, t)).toEqual(
            first && bytes.subarray(first.offset, first.offset + first.length),
          );
          expect(readAllXorAddresses(m, t)).toEqual(
            listing
              .filter((a) => a.type === t)
              .map((a) =>
                decodeAddressValue(bytes.subarray(a.offset, a.offset + a.length), m.transactionId),
              ),
          );
          expect(hasValidString(m, t)).toBe(readString(m, t) !== undefined);
        }
        expect(m.attributes).toEqual(listing);
        // A message made by hand from the same fields reads the same through its list.
        const byHand: StunMessage = {
          bytes: m.bytes,
          method: m.method,
          messageClass: m.messageClass,
          transactionId: m.transactionId,
          attributes: listing,
          unknownRequired: m.unknownRequired,
        };
        expect(readAll(byHand)).toEqual(readAll(m));
        // A copy made by spreading keeps the header fields; its readers list from its bytes.
        const spread: StunMessage = { ...m };
        expect(spread.transactionId).toBe(m.transactionId);
        expect(readAll(spread)).toEqual(readAll(m));
      }),
      { numRuns: 1000 },
    );
  });

  it("gives the transaction id as a view of bytes 8-20, the same one on every read (RFC 8489 §5)", () => {
    const bytes = encode([], true);
    const r = decodeStun(bytes);
    if (!r.ok) throw new Error(r.error);
    const id = r.message.transactionId;
    expect(id).toBe(r.message.transactionId);
    expect(id.buffer).toBe(bytes.buffer);
    expect(id.byteOffset).toBe(bytes.byteOffset + 8);
    expect(Array.from(id)).toEqual(Array.from(bytes.subarray(8, 20)));
  });

  it("answers getAttribute with the listed attribute itself", () => {
    const bytes = encode(
      [
        { type: AttributeType.Lifetime, value: Uint8Array.of(0, 0, 2, 88) },
        { type: AttributeType.Lifetime, value: Uint8Array.of(0, 0, 0, 0) },
      ],
      true,
    );
    const r = decodeStun(bytes);
    if (!r.ok) throw new Error(r.error);
    expect(getAttribute(r.message, AttributeType.Lifetime)).toBe(r.message.attributes[0]);
    expect(readUint32(r.message, AttributeType.Lifetime)).toBe(600);
  });

  it("takes REALM as text only when it is valid UTF-8, as readString does", () => {
    const realm = (value: Uint8Array) => {
      const r = decodeStun(encode([{ type: AttributeType.Realm, value }], false));
      if (!r.ok) throw new Error(r.error);
      return hasValidString(r.message, AttributeType.Realm);
    };
    expect(realm(new TextEncoder().encode("example.org"))).toBe(true);
    expect(realm(new TextEncoder().encode("exämple"))).toBe(true);
    expect(realm(Uint8Array.of(0x65, 0xc3))).toBe(false); // a cut two-byte sequence
    expect(realm(Uint8Array.of(0xff))).toBe(false);
    expect(realm(new Uint8Array(0))).toBe(true);
  });
});
