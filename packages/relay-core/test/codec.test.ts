// The STUN/TURN codec (RFC 8489 §5, §14; RFC 8656 §12, §18; RFC 6062 §6.2): every attribute
// the server needs round-trips, decoding never throws, and truncation is always caught.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { TransportAddress } from "../src/codec/address.js";
import {
  readAddress,
  readAddressFamily,
  readAllXorAddresses,
  readBytes,
  readChannelNumber,
  readErrorCode,
  readEvenPort,
  readPasswordAlgorithm,
  readRequestedTransport,
  readString,
  readUint32,
  readUnknownAttributes,
  readXorAddress,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "../src/codec/attributes.js";
import { decodeChannelData, encodeChannelData, isChannelData } from "../src/codec/channel-data.js";
import { AttributeType, KNOWN_ATTRIBUTES, type MessageClass } from "../src/codec/constants.js";
import { decodeStun, messageType, type StunMessage } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { formatIp, parseIp } from "../src/policy/ip.js";

const DECODE_ERRORS = [
  "too-short",
  "not-stun",
  "bad-length",
  "truncated-attribute",
  "misplaced-fingerprint",
  "bad-fingerprint",
];

const tidArb = fc.uint8Array({ minLength: 12, maxLength: 12 });
const classArb = fc.constantFrom<MessageClass>(0, 1, 2, 3);
const methodArb = fc.integer({ min: 0, max: 0xfff });
const portArb = fc.integer({ min: 0, max: 0xffff });
const canonical = (ip: string) => formatIp(parseIp(ip)!);
const addressArb: fc.Arbitrary<TransportAddress> = fc.oneof(
  fc.tuple(fc.ipV4(), portArb).map(([a, port]) => ({ family: 4 as const, address: a, port })),
  fc
    .tuple(fc.ipV6(), portArb)
    .map(([a, port]) => ({ family: 6 as const, address: canonical(a), port })),
);
const textArb = fc.string({ maxLength: 100, unit: "grapheme" });

/**
 * One attribute kind: how the builder writes it and what the decoder must read back.
 * `check` returns the decoded value and the value put in, to compare with toEqual.
 */
interface AttrCase {
  readonly name: string;
  write(b: StunMessageBuilder): void;
  check(m: StunMessage): [unknown, unknown];
}

const bytesOf = (m: StunMessage, t: number) => Array.from(readBytes(m, t) ?? []);
const errorCodeArb = fc.integer({ min: 300, max: 699 });

const attrCaseArb: fc.Arbitrary<AttrCase> = fc.oneof(
  ...(
    [
      AttributeType.XorMappedAddress,
      AttributeType.XorPeerAddress,
      AttributeType.XorRelayedAddress,
    ] as const
  ).map((type) =>
    addressArb.map(
      (a): AttrCase => ({
        name: `xor-address ${type}`,
        write: (b) => b.xorAddress(type, a),
        check: (m) => [readXorAddress(m, type), a],
      }),
    ),
  ),
  ...([AttributeType.MappedAddress, AttributeType.AlternateServer] as const).map((type) =>
    addressArb.map(
      (a): AttrCase => ({
        name: `address ${type}`,
        write: (b) => b.address(type, a),
        check: (m) => [readAddress(m, type), a],
      }),
    ),
  ),
  ...(
    [
      AttributeType.Username,
      AttributeType.Realm,
      AttributeType.Nonce,
      AttributeType.Software,
    ] as const
  ).map((type) =>
    textArb.map(
      (s): AttrCase => ({
        name: `string ${type}`,
        write: (b) => b.string(type, s),
        check: (m) => [readString(m, type), s],
      }),
    ),
  ),
  ...(
    [
      [AttributeType.Userhash, 32],
      [AttributeType.ReservationToken, 8],
      [AttributeType.Icmp, 4],
      [AttributeType.Data, 300],
    ] as const
  ).map(([type, max]) =>
    fc.uint8Array({ minLength: type === AttributeType.Data ? 0 : max, maxLength: max }).map(
      (v): AttrCase => ({
        name: `bytes ${type}`,
        write: (b) => b.bytes(type, v),
        check: (m) => [bytesOf(m, type), Array.from(v)],
      }),
    ),
  ),
  ...([AttributeType.Lifetime, AttributeType.ConnectionId] as const).map((type) =>
    fc.nat({ max: 0xffffffff }).map(
      (n): AttrCase => ({
        name: `uint32 ${type}`,
        write: (b) => b.uint32(type, n),
        check: (m) => [readUint32(m, type), n],
      }),
    ),
  ),
  fc.tuple(errorCodeArb, fc.string({ maxLength: 60 })).map(
    ([code, reason]): AttrCase => ({
      name: "error-code",
      write: (b) => b.errorCode(code, reason),
      check: (m) => [readErrorCode(m), { code, reason }],
    }),
  ),
  fc.tuple(fc.constantFrom<4 | 6>(4, 6), errorCodeArb).map(
    ([family, code]): AttrCase => ({
      name: "address-error-code",
      write: (b) => b.addressErrorCode(family, code, "x"),
      check: (m) => {
        // RFC 8656 §18.12: family, reserved, class, number, reason.
        const v = readBytes(m, AttributeType.AddressErrorCode)!;
        return [
          [v[0], (v[2]! & 7) * 100 + v[3]!, v.length],
          [family === 4 ? 1 : 2, code, 5],
        ];
      },
    }),
  ),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }).map(
    (types): AttrCase => ({
      name: "unknown-attributes",
      write: (b) => b.unknownAttributes(types),
      check: (m) => [readUnknownAttributes(m), types],
    }),
  ),
  fc.integer({ min: 0, max: 0xffff }).map(
    (n): AttrCase => ({
      name: "channel-number",
      write: (b) => b.channelNumber(n),
      check: (m) => [readChannelNumber(m), n],
    }),
  ),
  fc.integer({ min: 0, max: 255 }).map(
    (p): AttrCase => ({
      name: "requested-transport",
      write: (b) => b.requestedTransport(p),
      check: (m) => [readRequestedTransport(m), p],
    }),
  ),
  fc
    .tuple(
      fc.constantFrom(AttributeType.RequestedAddressFamily, AttributeType.AdditionalAddressFamily),
      fc.constantFrom<4 | 6>(4, 6),
    )
    .map(
      ([type, family]): AttrCase => ({
        name: `address-family ${type}`,
        write: (b) => b.addressFamily(type, family),
        check: (m) => [readAddressFamily(m, type), family],
      }),
    ),
  fc.boolean().map(
    (r): AttrCase => ({
      name: "even-port",
      write: (b) => b.evenPort(r),
      check: (m) => [readEvenPort(m), { reserveNext: r }],
    }),
  ),
  fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 4 }).map(
    (algs): AttrCase => ({
      name: "password-algorithms",
      write: (b) => b.passwordAlgorithms(algs),
      check: (m) => {
        const v = readBytes(m, AttributeType.PasswordAlgorithms)!;
        const got: number[] = [];
        for (let i = 0; i < v.length; i += 4) got.push((v[i]! << 8) | v[i + 1]!);
        return [got, algs];
      },
    }),
  ),
  fc.integer({ min: 0, max: 0xffff }).map(
    (a): AttrCase => ({
      name: "password-algorithm",
      write: (b) => b.passwordAlgorithm(a),
      check: (m) => [readPasswordAlgorithm(m), a],
    }),
  ),
  fc.constant<AttrCase>({
    name: "dont-fragment",
    write: (b) => b.flag(AttributeType.DontFragment),
    check: (m) => [bytesOf(m, AttributeType.DontFragment), []],
  }),
);

/** MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT close the message (RFC 8489 §14.5-§14.7). */
const trailerArb = fc.record({
  key: fc.uint8Array({ minLength: 1, maxLength: 32 }),
  sha1: fc.boolean(),
  sha256: fc.boolean(),
  fingerprint: fc.boolean(),
});

function build(
  method: number,
  cls: MessageClass,
  tid: Uint8Array,
  cases: readonly AttrCase[],
  trailer?: { key: Uint8Array; sha1: boolean; sha256: boolean; fingerprint: boolean },
): Uint8Array {
  const b = new StunMessageBuilder(method, cls, tid);
  for (const c of cases) c.write(b);
  if (trailer?.sha1) b.messageIntegrity(trailer.key);
  if (trailer?.sha256) b.messageIntegritySha256(trailer.key);
  if (trailer?.fingerprint) b.fingerprint();
  return b.build();
}

function decodeOk(bytes: Uint8Array): StunMessage {
  const r = decodeStun(bytes);
  if (!r.ok) throw new Error(`decode failed: ${r.error}`);
  return r.message;
}

describe("STUN header (RFC 8489 §5)", () => {
  it("interleaves every method and class into the type and back", () => {
    for (let method = 0; method <= 0xfff; method++) {
      for (const cls of [0, 1, 2, 3] as const) {
        const type = messageType(method, cls);
        expect(type & 0xc000).toBe(0);
        const bytes = new StunMessageBuilder(method, cls, new Uint8Array(12)).build();
        const m = decodeOk(bytes);
        if (m.method !== method || m.messageClass !== cls) {
          throw new Error(`method ${method} class ${cls} decoded as ${m.method}/${m.messageClass}`);
        }
      }
    }
  });

  it("classifies first bytes: STUN is 0b00, ChannelData 0b01, the rest is neither", () => {
    expect(isChannelData(Uint8Array.of(0x40, 0, 0, 0))).toBe(true);
    expect(isChannelData(Uint8Array.of(0x4f, 0xff, 0, 0))).toBe(true);
    expect(isChannelData(Uint8Array.of(0x80, 0, 0, 0))).toBe(false);
    expect(decodeStun(Uint8Array.of(0x80, ...new Uint8Array(19)))).toMatchObject({
      ok: false,
      error: "not-stun",
    });
  });
});

describe("attributes (RFC 8489 §14, RFC 8656 §18, RFC 6062 §6.2)", () => {
  it("encode then decode is the identity for each attribute kind", () => {
    fc.assert(
      fc.property(attrCaseArb, tidArb, (c, tid) => {
        const m = decodeOk(build(0x003, 0, tid, [c]));
        const [got, want] = c.check(m);
        expect(got, c.name).toEqual(want);
        expect(m.unknownRequired).toEqual([]);
      }),
      { numRuns: 2000 },
    );
  });

  it("encode then decode is the identity for whole messages, integrity and FINGERPRINT included", () => {
    fc.assert(
      fc.property(
        methodArb,
        classArb,
        tidArb,
        fc.array(attrCaseArb, { maxLength: 8 }),
        trailerArb,
        (method, cls, tid, cases, trailer) => {
          const bytes = build(method, cls, tid, cases, trailer);
          expect(bytes.length % 4).toBe(0);
          const m = decodeOk(bytes);
          expect(m.method).toBe(method);
          expect(m.messageClass).toBe(cls);
          expect(Array.from(m.transactionId)).toEqual(Array.from(tid));
          expect(m.bytes).toBe(bytes);
          // The first occurrence of each type is what readers see (RFC 8489 §14).
          const firstOf = new Map<number, AttrCase>();
          cases.forEach((c, i) => {
            const t = m.attributes[i]!.type;
            if (!firstOf.has(t)) firstOf.set(t, c);
          });
          for (const c of firstOf.values()) {
            const [got, want] = c.check(m);
            expect(got, c.name).toEqual(want);
          }
          if (trailer.sha1) expect(verifyMessageIntegrity(m, trailer.key)).toBe(true);
          if (trailer.sha256) expect(verifyMessageIntegritySha256(m, trailer.key)).toBe(true);
          const wrong = Uint8Array.of(...trailer.key, 1);
          if (trailer.sha1) expect(verifyMessageIntegrity(m, wrong)).toBe(false);
          if (trailer.sha256) expect(verifyMessageIntegritySha256(m, wrong)).toBe(false);
          expect(m.attributes.at(-1)?.type === AttributeType.Fingerprint).toBe(trailer.fingerprint);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("reads every XOR-PEER-ADDRESS of a CreatePermission, v4 and v6 mixed", () => {
    fc.assert(
      fc.property(tidArb, fc.array(addressArb, { minLength: 1, maxLength: 5 }), (tid, peers) => {
        const b = new StunMessageBuilder(0x008, 0, tid);
        for (const p of peers) b.xorAddress(AttributeType.XorPeerAddress, p);
        expect(readAllXorAddresses(decodeOk(b.build()), AttributeType.XorPeerAddress)).toEqual(
          peers,
        );
      }),
      { numRuns: 300 },
    );
  });

  it("lists unknown comprehension-required attributes once each, and never optional ones", () => {
    const b = new StunMessageBuilder(0x001, 0, new Uint8Array(12))
      .bytes(0x07ad, Uint8Array.of(1))
      .channelNumber(0x4000)
      .bytes(0x7fff, new Uint8Array(4))
      .bytes(0x07ad, Uint8Array.of(2))
      .bytes(0xc000, new Uint8Array(4));
    expect(decodeOk(b.build()).unknownRequired).toEqual([0x07ad, 0x7fff]);
  });

  it("lists exactly the comprehension-required types it does not know, for every type below 0x8000", () => {
    const listed: number[] = [];
    for (let type = 0; type < 0x8000; type++) {
      const b = new StunMessageBuilder(0x001, 0, new Uint8Array(12)).bytes(type, new Uint8Array(4));
      listed.push(...decodeOk(b.build()).unknownRequired);
    }
    const expected = [];
    for (let type = 0; type < 0x8000; type++) if (!KNOWN_ATTRIBUTES.has(type)) expected.push(type);
    expect(listed).toEqual(expected);
  });

  it("ignores attributes after MESSAGE-INTEGRITY except FINGERPRINT", () => {
    const key = Uint8Array.of(1, 2, 3);
    const signed = new StunMessageBuilder(0x004, 0, new Uint8Array(12))
      .uint32(AttributeType.Lifetime, 600)
      .messageIntegrity(key)
      .build();
    // Append LIFETIME 0 after MESSAGE-INTEGRITY, as an on-path attacker could.
    const forged = new Uint8Array(signed.length + 8);
    forged.set(signed);
    forged.set([0x00, 0x0d, 0x00, 0x04, 0, 0, 0, 0], signed.length);
    forged[3] = forged.length - 20;
    const m = decodeOk(forged);
    expect(readUint32(m, AttributeType.Lifetime)).toBe(600);
    expect(m.attributes.map((a) => a.type)).toEqual([
      AttributeType.Lifetime,
      AttributeType.MessageIntegrity,
    ]);
    expect(verifyMessageIntegrity(m, key)).toBe(true);
  });
});

describe("decoding never throws", () => {
  it("returns ok or a typed error for any byte string", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const r = decodeStun(bytes);
        if (!r.ok) expect(DECODE_ERRORS).toContain(r.error);
        decodeChannelData(bytes);
      }),
      { numRuns: 5000 },
    );
  });

  it("returns ok or a typed error for STUN-shaped input with random attribute bytes", () => {
    // Random bytes rarely pass the cookie check; give them a valid header and length.
    fc.assert(
      fc.property(tidArb, fc.uint8Array({ maxLength: 120 }), (tid, body) => {
        const len = body.length & ~3;
        const bytes = new Uint8Array(20 + len);
        bytes.set([0x00, 0x03, len >> 8, len & 0xff, 0x21, 0x12, 0xa4, 0x42]);
        bytes.set(tid, 8);
        bytes.set(body.subarray(0, len), 20);
        const r = decodeStun(bytes);
        if (!r.ok) {
          expect(DECODE_ERRORS).toContain(r.error);
          return;
        }
        // Every reader copes with whatever the attributes hold.
        for (const t of Object.values(AttributeType)) {
          readBytes(r.message, t);
          readString(r.message, t);
          readUint32(r.message, t);
          readXorAddress(r.message, t);
          readAddress(r.message, t);
          readAddressFamily(r.message, t);
        }
        readErrorCode(r.message);
        readUnknownAttributes(r.message);
        readChannelNumber(r.message);
        readEvenPort(r.message);
        readPasswordAlgorithm(r.message);
        readRequestedTransport(r.message);
        verifyMessageIntegrity(r.message, tid);
        verifyMessageIntegritySha256(r.message, tid);
      }),
      { numRuns: 3000 },
    );
  });

  it("returns ok or a typed error for valid messages with random bytes flipped", () => {
    fc.assert(
      fc.property(
        tidArb,
        fc.array(attrCaseArb, { maxLength: 5 }),
        trailerArb,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (tid, cases, trailer, flips) => {
          const bytes = build(0x003, 0, tid, cases, trailer);
          for (const [at, x] of flips) bytes[at % bytes.length]! ^= x;
          const r = decodeStun(bytes);
          if (!r.ok) expect(DECODE_ERRORS).toContain(r.error);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("length sweeps (str0m style)", () => {
  it("rejects every proper prefix of a valid message cleanly", () => {
    fc.assert(
      fc.property(
        methodArb,
        classArb,
        tidArb,
        fc.array(attrCaseArb, { maxLength: 5 }),
        trailerArb,
        (method, cls, tid, cases, trailer) => {
          const bytes = build(method, cls, tid, cases, trailer);
          for (let n = 0; n < bytes.length; n++) {
            const r = decodeStun(bytes.subarray(0, n));
            expect(r.ok, `prefix ${n} of ${bytes.length}`).toBe(false);
            if (!r.ok) expect(DECODE_ERRORS).toContain(r.error);
          }
          expect(decodeStun(bytes).ok).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("rejects a message with trailing bytes after the declared length", () => {
    const bytes = new StunMessageBuilder(0x001, 0, new Uint8Array(12)).fingerprint().build();
    const longer = new Uint8Array(bytes.length + 4);
    longer.set(bytes);
    expect(decodeStun(longer)).toMatchObject({ ok: false, error: "bad-length" });
  });
});

describe("ChannelData (RFC 8656 §12.4, §12.5)", () => {
  it("encode then decode is the identity, padded or not, and trailing UDP padding is ignored", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0x4000, max: 0x7fff }),
        fc.uint8Array({ maxLength: 600 }),
        fc.boolean(),
        (channel, data, padded) => {
          const frame = encodeChannelData(channel, data, padded);
          expect(frame.length).toBe(padded ? 4 + ((data.length + 3) & ~3) : 4 + data.length);
          const v = decodeChannelData(frame)!;
          expect(v.channel).toBe(channel);
          expect(Array.from(frame.subarray(v.start, v.end))).toEqual(Array.from(data));
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("rejects a length that runs past the bytes", () => {
    const frame = encodeChannelData(0x4000, new Uint8Array(10));
    for (let n = 0; n < frame.length; n++) {
      expect(decodeChannelData(frame.subarray(0, n)), `prefix ${n}`).toBeUndefined();
    }
  });
});

describe("decoding leaves its input untouched", () => {
  it("verifies MESSAGE-INTEGRITY and reads XOR addresses of a Buffer without writing into it", async () => {
    // Found when an RFC 6062 ConnectionBind was handed between workers: the length field of
    // the frame had been rewritten by the integrity check, so the next reader framed it short.
    const { StunMessageBuilder, decodeStun, verifyMessageIntegrity, readXorAddress } = await import(
      "../src/index.js"
    );
    const key = new Uint8Array(16).fill(7);
    const built = new StunMessageBuilder(0x0008, 0, new Uint8Array(12).fill(1))
      .xorAddress(0x0012, { family: 6, address: "2001:db8::1", port: 3478 })
      .xorAddress(0x0012, { family: 4, address: "192.0.2.7", port: 9 })
      .messageIntegrity(key)
      .fingerprint()
      .build();
    // A Buffer, as node:net and node:dgram deliver them: its slice() is a view, not a copy.
    const bytes = Buffer.from(built);
    const before = Buffer.from(bytes);
    const decoded = decodeStun(bytes);
    expect(decoded.ok).toBe(true);
    if (!decoded.ok) return;
    expect(verifyMessageIntegrity(decoded.message, key)).toBe(true);
    expect(readXorAddress(decoded.message, 0x0012)).toEqual({
      family: 6,
      address: "2001:db8::1",
      port: 3478,
    });
    expect(bytes.equals(before)).toBe(true);
    expect(verifyMessageIntegrity(decoded.message, key)).toBe(true);
  });
});
