// Binding (RFC 8489 §6.3.1) and what every response carries (§14.7 FINGERPRINT, §14.14 SOFTWARE).
import { describe, expect, it } from "vitest";
import { AttributeType, Method } from "../src/codec/constants.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { Harness, type Response, SOFTWARE, TestClient } from "./harness.js";

describe("Binding (RFC 8489 §6.3.1)", () => {
  it("answers a Binding from IPv4 with its XOR-MAPPED-ADDRESS", () => {
    const h = new Harness();
    const c = new TestClient(h, { address: "192.0.2.10", port: 40000 });
    const r = c.ask(c.build(Method.Binding));
    expect(r.code).toBe(0);
    expect(r.msg.method).toBe(Method.Binding);
    expect(Array.from(r.msg.transactionId)).toEqual(Array.from(c.lastTransactionId));
    expect(r.xorAddress(AttributeType.XorMappedAddress)).toEqual({
      family: 4,
      address: "192.0.2.10",
      port: 40000,
    });
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("answers a Binding from IPv6 with its XOR-MAPPED-ADDRESS", () => {
    const h = new Harness();
    const c = new TestClient(h, { address: "2001:db8:c::7", port: 51234 });
    const r = c.ask(c.build(Method.Binding));
    expect(r.xorAddress(AttributeType.XorMappedAddress)).toEqual({
      family: 6,
      address: "2001:db8:c::7",
      port: 51234,
    });
  });

  it("answers a Binding over TCP on the connection it came from", () => {
    const h = new Harness();
    const c = new TestClient(h, { address: "192.0.2.11", port: 40001, connection: 7 });
    const r = c.ask(c.build(Method.Binding));
    expect(r.xorAddress(AttributeType.XorMappedAddress)?.port).toBe(40001);
  });

  it("ignores a request from port 0", () => {
    const h = new Harness();
    const c = new TestClient(h, { port: 0 });
    c.send(c.build(Method.Binding));
    h.expectNoOutputs();
    expect(h.server.stats.drops["port-zero"]).toBe(1);
  });

  it("ignores a Binding indication (a keep-alive) and responses sent to it", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.send(new StunMessageBuilder(Method.Binding, 1, c.newTransactionId()).build());
    c.send(new StunMessageBuilder(Method.Binding, 2, c.newTransactionId()).build());
    h.expectNoOutputs();
    expect(h.server.stats.drops["unexpected-message"]).toBe(1);
  });

  it("answers 420 with UNKNOWN-ATTRIBUTES for an unknown comprehension-required attribute", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.ask(
      c.build(Method.Binding, (b) =>
        b.bytes(0x07ad, Uint8Array.of(1, 2, 3, 4)).bytes(0x8fff, Uint8Array.of(0)),
      ),
    );
    expect(r.code).toBe(420);
    const unknown = r.msg.attributes.find((a) => a.type === AttributeType.UnknownAttributes)!;
    expect(
      Array.from(r.msg.bytes.subarray(unknown.offset, unknown.offset + unknown.length)),
    ).toEqual([0x07, 0xad]);
  });

  it("answers a request with a bad length field with 400 (RFC 8489 §6.3)", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const bytes = c.build(Method.Allocate);
    const longer = new Uint8Array(bytes.length + 4);
    longer.set(bytes);
    const r = c.ask(longer);
    expect(r.code).toBe(400);
  });

  it("puts FINGERPRINT and SOFTWARE on every response, successes and errors alike", () => {
    const h = new Harness({ maxAllocations: 1 });
    const a = new TestClient(h);
    const b = new TestClient(h, { address: "192.0.2.12", username: "bob" });
    const responses: Response[] = [];
    responses.push(a.ask(a.build(Method.Binding)));
    responses.push(a.ask(a.build(Method.Allocate))); // 401
    responses.push(a.allocate());
    responses.push(a.createPermission("198.51.100.1"));
    responses.push(a.createPermission("127.0.0.1")); // 403
    responses.push(a.channelBind(0x4000, "198.51.100.1", 9));
    responses.push(a.refresh(600));
    responses.push(b.allocate()); // 508
    responses.push(a.ask(a.build(Method.Binding, (x) => x.bytes(0x7000, new Uint8Array(4)))));
    expect(responses.map((r) => r.code)).toEqual([0, 401, 0, 0, 403, 0, 0, 508, 420]);
    for (const r of responses) {
      // decodeStun verified the CRC; FINGERPRINT must be last.
      expect(r.msg.attributes.at(-1)?.type).toBe(AttributeType.Fingerprint);
      expect(r.string(AttributeType.Software)).toBe(SOFTWARE);
    }
  });
});
