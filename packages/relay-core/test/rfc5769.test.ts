// RFC 5769 "Test Vectors for STUN", byte for byte: §2.1 request (short-term credentials),
// §2.2 IPv4 response, §2.3 IPv6 response, §2.4 request with long-term credentials.
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { longTermKeyMd5 } from "../src/auth/long-term-key.js";
import {
  attributeValue,
  getAttribute,
  readString,
  readUint32,
  readXorAddress,
  verifyMessageIntegrity,
} from "../src/codec/attributes.js";
import { AttributeType, FINGERPRINT_XOR, MessageClass, Method } from "../src/codec/constants.js";
import { crc32 } from "../src/codec/crc32.js";
import { decodeStun, type StunMessage } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";

const hex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ""), "hex"));
const utf8 = (s: string) => new TextEncoder().encode(s);

const TID = hex("b7e7a701 bc34d686 fa87dfae");
const SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt";

const SAMPLE_REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);

const IPV4_RESPONSE = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);

const IPV6_RESPONSE = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);

const LONG_TERM_REQUEST = hex(`
  00010060 2112a442 78ad3433 c6ad72c0 29da412e
  00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
  0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
  0014000b 6578616d 706c652e 6f726700
  00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666`);

function decodeOk(bytes: Uint8Array): StunMessage {
  const r = decodeStun(bytes);
  if (!r.ok) throw new Error(`decode failed: ${r.error}`);
  return r.message;
}

function fingerprintOf(msg: StunMessage): number {
  return readUint32(msg, AttributeType.Fingerprint)!;
}

/** Flip each byte before MESSAGE-INTEGRITY's value: the message must then fail to verify. */
function expectEveryCorruptionDetected(bytes: Uint8Array, key: Uint8Array): void {
  const mi = getAttribute(decodeOk(bytes), AttributeType.MessageIntegrity)!;
  for (let i = 0; i < mi.offset + mi.length; i++) {
    const bad = bytes.slice();
    bad[i]! ^= 0x01;
    const r = decodeStun(bad);
    // Either the header/FINGERPRINT check refuses it (a typed error), or integrity fails.
    if (r.ok) expect(verifyMessageIntegrity(r.message, key), `byte ${i}`).toBe(false);
    else expect(typeof r.error).toBe("string");
  }
}

/** Positions of attribute padding: RFC 5769 §2.1-2.3 pad with 0x20, our builder with zeros. */
function paddingPositions(msg: StunMessage): Set<number> {
  const out = new Set<number>();
  for (const a of msg.attributes) {
    for (let i = a.offset + a.length; i < a.offset + ((a.length + 3) & ~3); i++) out.add(i);
  }
  return out;
}

describe("RFC 5769 §2.1 sample request (short-term credentials)", () => {
  const key = utf8(SHORT_TERM_PASSWORD);

  it("decodes header and attributes in wire order", () => {
    const msg = decodeOk(SAMPLE_REQUEST);
    expect(msg.method).toBe(Method.Binding);
    expect(msg.messageClass).toBe(MessageClass.Request);
    expect(Buffer.from(msg.transactionId).equals(Buffer.from(TID))).toBe(true);
    expect(msg.attributes.map((a) => a.type)).toEqual([
      0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028,
    ]);
    expect(readString(msg, AttributeType.Software)).toBe("STUN test client");
    expect(readString(msg, AttributeType.Username)).toBe("evtj:h6vY");
    expect(readUint32(msg, 0x0024)).toBe(0x6e0001ff); // PRIORITY
    // PRIORITY (ICE, RFC 8445) is comprehension-required and not ours: a server would 420.
    expect(msg.unknownRequired).toEqual([0x0024]);
  });

  it("verifies MESSAGE-INTEGRITY with the raw password bytes and FINGERPRINT", () => {
    const msg = decodeOk(SAMPLE_REQUEST);
    expect(verifyMessageIntegrity(msg, key)).toBe(true);
    expect(verifyMessageIntegrity(msg, utf8("VOkJxbRl1RmTxUk/WvJxBT"))).toBe(false);
    expect(fingerprintOf(msg)).toBe(0xe57a3bcf);
    expect((crc32(SAMPLE_REQUEST, 0, SAMPLE_REQUEST.length - 8) ^ FINGERPRINT_XOR) >>> 0).toBe(
      0xe57a3bcf,
    );
  });

  it("rejects a corrupted byte (FINGERPRINT or MESSAGE-INTEGRITY)", () => {
    expectEveryCorruptionDetected(SAMPLE_REQUEST, key);
    const bad = SAMPLE_REQUEST.slice();
    bad[bad.length - 1]! ^= 0xff;
    expect(decodeStun(bad)).toMatchObject({ ok: false, error: "bad-fingerprint" });
  });

  it("re-encodes with the builder to the same bytes except the padding, and a valid MAC", () => {
    const msg = decodeOk(SAMPLE_REQUEST);
    const v = (t: number) => attributeValue(msg, getAttribute(msg, t)!);
    const rebuilt = new StunMessageBuilder(Method.Binding, MessageClass.Request, TID)
      .string(AttributeType.Software, "STUN test client")
      .bytes(0x0024, v(0x0024))
      .bytes(0x8029, v(0x8029))
      .string(AttributeType.Username, "evtj:h6vY")
      .messageIntegrity(key)
      .fingerprint()
      .build();
    expect(rebuilt.length).toBe(SAMPLE_REQUEST.length);
    const pads = paddingPositions(msg);
    const mi = getAttribute(msg, AttributeType.MessageIntegrity)!;
    for (let i = 0; i < mi.offset; i++) {
      if (pads.has(i)) expect(rebuilt[i]).toBe(0);
      else expect(rebuilt[i], `byte ${i}`).toBe(SAMPLE_REQUEST[i]);
    }
    const again = decodeOk(rebuilt);
    expect(verifyMessageIntegrity(again, key)).toBe(true);
    // With the vector's 0x20 padding bytes put back, the HMAC is the vector's, to the bit.
    const withVectorPadding = rebuilt.slice(0, mi.offset - 4);
    for (const i of pads) if (i < withVectorPadding.length) withVectorPadding[i] = 0x20;
    withVectorPadding[2] = 0;
    withVectorPadding[3] = mi.offset - 20 + 20; // length up to and including MESSAGE-INTEGRITY
    const mac = createHmac("sha1", key).update(withVectorPadding).digest();
    expect(mac.equals(Buffer.from(attributeValue(msg, mi)))).toBe(true);
  });
});

describe("RFC 5769 §2.2 / §2.3 sample responses", () => {
  const key = utf8(SHORT_TERM_PASSWORD);

  it("decodes XOR-MAPPED-ADDRESS 192.0.2.1:32853 from the IPv4 response", () => {
    const msg = decodeOk(IPV4_RESPONSE);
    expect(msg.method).toBe(Method.Binding);
    expect(msg.messageClass).toBe(MessageClass.SuccessResponse);
    expect(readString(msg, AttributeType.Software)).toBe("test vector");
    expect(readXorAddress(msg, AttributeType.XorMappedAddress)).toEqual({
      family: 4,
      address: "192.0.2.1",
      port: 32853,
    });
    expect(verifyMessageIntegrity(msg, key)).toBe(true);
    expect(fingerprintOf(msg)).toBe(0xc07d4c96);
    expectEveryCorruptionDetected(IPV4_RESPONSE, key);
  });

  it("decodes XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853 from the IPv6 response", () => {
    const msg = decodeOk(IPV6_RESPONSE);
    expect(readXorAddress(msg, AttributeType.XorMappedAddress)).toEqual({
      family: 6,
      address: "2001:db8:1234:5678:11:2233:4455:6677",
      port: 32853,
    });
    expect(verifyMessageIntegrity(msg, key)).toBe(true);
    expect(fingerprintOf(msg)).toBe(0xc8fb0b4c);
    expectEveryCorruptionDetected(IPV6_RESPONSE, key);
  });

  it("encodes both XOR-MAPPED-ADDRESS values to the vectors' bytes", () => {
    for (const [vector, addr] of [
      [IPV4_RESPONSE, { family: 4, address: "192.0.2.1", port: 32853 }],
      [IPV6_RESPONSE, { family: 6, address: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853 }],
    ] as const) {
      const msg = decodeOk(vector);
      const rebuilt = decodeOk(
        new StunMessageBuilder(Method.Binding, MessageClass.SuccessResponse, TID)
          .xorAddress(AttributeType.XorMappedAddress, addr)
          .build(),
      );
      const ours = attributeValue(rebuilt, rebuilt.attributes[0]!);
      const theirs = attributeValue(msg, getAttribute(msg, AttributeType.XorMappedAddress)!);
      expect(Buffer.from(ours).equals(Buffer.from(theirs))).toBe(true);
    }
  });
});

describe("RFC 5769 §2.4 sample request with long-term credentials", () => {
  const username = "\u30DE\u30C8\u30EA\u30C3\u30AF\u30B9";
  // "TheMatrIX" is its own SASLprep (OpaqueString) form; the key is MD5(user:realm:pass).
  const key = longTermKeyMd5(username, "example.org", "TheMatrIX");

  it("decodes USERNAME, NONCE and REALM", () => {
    const msg = decodeOk(LONG_TERM_REQUEST);
    expect(username).toBe("マトリックス");
    expect(readString(msg, AttributeType.Username)).toBe(username);
    expect(readString(msg, AttributeType.Nonce)).toBe("f//499k954d6OL34oL9FSTvy64sA");
    expect(readString(msg, AttributeType.Realm)).toBe("example.org");
    expect(verifyMessageIntegrity(msg, key)).toBe(true);
    expect(verifyMessageIntegrity(msg, longTermKeyMd5(username, "example.org", "TheMatrix"))).toBe(
      false,
    );
  });

  it("re-encodes from the decoded attributes to identical bytes and MAC", () => {
    const msg = decodeOk(LONG_TERM_REQUEST);
    const rebuilt = new StunMessageBuilder(msg.method, msg.messageClass, msg.transactionId)
      .string(AttributeType.Username, readString(msg, AttributeType.Username)!)
      .string(AttributeType.Nonce, readString(msg, AttributeType.Nonce)!)
      .string(AttributeType.Realm, readString(msg, AttributeType.Realm)!)
      .messageIntegrity(key)
      .build();
    expect(Buffer.from(rebuilt).toString("hex")).toBe(
      Buffer.from(LONG_TERM_REQUEST).toString("hex"),
    );
  });

  it("rejects any corrupted byte", () => {
    expectEveryCorruptionDetected(LONG_TERM_REQUEST, key);
  });
});
