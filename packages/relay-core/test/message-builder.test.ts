import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  readBytes,
  readErrorCode,
  readString,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "../src/codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";

const tid = (n: number) => new Uint8Array(12).fill(n);

describe("messages built one after another share memory, never bytes", () => {
  it("keeps every built message intact whatever builders run before, between and after it", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            text: fc.string({ maxLength: 300 }),
            open: fc.nat({ max: 3 }), // how many other builders are open while this one writes
          }),
          { minLength: 1, maxLength: 60 },
        ),
        (plans) => {
          const built: { bytes: Uint8Array; copy: Uint8Array }[] = [];
          plans.forEach((plan, i) => {
            const b = new StunMessageBuilder(Method.Binding, MessageClass.SuccessResponse, tid(i));
            const others = Array.from({ length: plan.open }, (_, j) =>
              new StunMessageBuilder(Method.Binding, MessageClass.Request, tid(j)).string(
                AttributeType.Software,
                "other".repeat(j + 1),
              ),
            );
            b.string(AttributeType.Software, plan.text);
            for (const o of others) o.string(AttributeType.Realm, plan.text);
            const bytes = b.fingerprint().build();
            for (const o of others) built.push({ bytes: o.build(), copy: Uint8Array.from([]) });
            built.push({ bytes, copy: Uint8Array.from(bytes) });
          });
          for (const m of built) {
            if (m.copy.length > 0) expect(m.bytes).toEqual(m.copy);
            expect(decodeStun(m.bytes).ok).toBe(true);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("writes what is added after build() into a buffer of its own", () => {
    const b = new StunMessageBuilder(Method.Binding, MessageClass.Request, tid(1));
    const first = b.string(AttributeType.Software, "one").build();
    const copy = Uint8Array.from(first);
    b.string(AttributeType.Realm, "added later");
    const next = new StunMessageBuilder(Method.Binding, MessageClass.Request, tid(2))
      .string(AttributeType.Software, "two")
      .build();
    const nextCopy = Uint8Array.from(next);
    const second = b.build();
    expect(first).toEqual(copy);
    expect(next).toEqual(nextCopy);
    const decoded = decodeStun(second);
    expect(decoded.ok && readString(decoded.message, AttributeType.Realm)).toBe("added later");
  });
});

describe("attribute values written in place (RFC 8489 §14)", () => {
  it("writes any text as UTF-8, padded to 4 bytes", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 200 }), (text) => {
        const bytes = new StunMessageBuilder(Method.Binding, MessageClass.Request, tid(1))
          .string(AttributeType.Software, text)
          .fingerprint()
          .build();
        expect(bytes.length % 4).toBe(0);
        const decoded = decodeStun(bytes);
        expect(decoded.ok).toBe(true);
        if (!decoded.ok) return;
        expect(readString(decoded.message, AttributeType.Software)).toBe(text);
        expect(readBytes(decoded.message, AttributeType.Software)).toEqual(
          new TextEncoder().encode(text),
        );
      }),
    );
  });

  it("writes ERROR-CODE with the RFC's phrase or the one given (§14.8)", () => {
    for (const [code, reason] of [
      [ErrorCode.Unauthorized, "Unauthorized"],
      [ErrorCode.Forbidden, "Forbidden: credentials revoked"],
      [599, ""],
    ] as const) {
      const b = new StunMessageBuilder(Method.Allocate, MessageClass.ErrorResponse, tid(1));
      const decoded = decodeStun(
        (reason === "Unauthorized" ? b.errorCode(code) : b.errorCode(code, reason)).build(),
      );
      expect(decoded.ok && readErrorCode(decoded.message)).toEqual({ code, reason });
    }
  });

  it("signs MESSAGE-INTEGRITY and -SHA256 as HMAC over the message so far (§14.5, §14.6)", () => {
    const key = Uint8Array.from({ length: 16 }, (_, i) => i * 7);
    for (const sha256 of [false, true]) {
      const b = new StunMessageBuilder(Method.Allocate, MessageClass.Request, tid(4)).string(
        AttributeType.Username,
        "alice",
      );
      const bytes = (sha256 ? b.messageIntegritySha256(key) : b.messageIntegrity(key)).build();
      const size = sha256 ? 32 : 20;
      const covered = bytes.length - 4 - size;
      const expected = createHmac(sha256 ? "sha256" : "sha1", key)
        .update(bytes.subarray(0, covered))
        .digest();
      expect(bytes.subarray(covered + 4)).toEqual(new Uint8Array(expected));
      const decoded = decodeStun(bytes);
      if (!decoded.ok) throw new Error(decoded.error);
      const verify = sha256 ? verifyMessageIntegritySha256 : verifyMessageIntegrity;
      expect(verify(decoded.message, key)).toBe(true);
      expect(
        verify(
          decoded.message,
          key.map((x) => x ^ 1),
        ),
      ).toBe(false);
    }
  });
});
