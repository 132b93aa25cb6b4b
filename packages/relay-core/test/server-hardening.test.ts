// Inputs that once crashed a relay or leaked its resources (found in review), kept as tests.
import { describe, expect, it } from "vitest";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import { decodeStun, StunMessageBuilder } from "../src/codec/message.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, Response, TestClient } from "./harness.js";

describe("peer transport addresses", () => {
  it("refuses a channel to port 0 and drops a Send to port 0 (nothing a socket could send)", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission("198.51.100.1").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.1", 0).code).toBe(400);
    expect(c.sendIndication("198.51.100.1", 0, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["invalid-indication"]).toBe(1);
    // The same peer on a real port still works.
    expect(c.sendIndication("198.51.100.1", 5000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
  });
});

describe("client source addresses", () => {
  it("drops a request from a scoped IPv6 source instead of throwing while answering it", () => {
    const h = new Harness();
    const tid = new Uint8Array(12).fill(3);
    const request = new StunMessageBuilder(Method.Binding, 0, tid).build();
    expect(h.server.handleUdpClient(0, request, "fe80::1%eth0", 5000, h.now)).toBe(RouteKind.None);
    expect(h.drain()).toEqual([]);
    expect(h.server.stats.drops["unsupported-source"]).toBe(1);
  });
});

describe("unknown comprehension-required attributes (RFC 8489 §14)", () => {
  it("lists at most 16 of them, however many a datagram carries", () => {
    const b = new StunMessageBuilder(Method.Binding, 0, new Uint8Array(12));
    for (let t = 0x1000; t < 0x1000 + 16_000; t++) b.bytes(t, new Uint8Array(0));
    const decoded = decodeStun(b.build());
    expect(decoded.ok).toBe(true);
    if (decoded.ok) expect(decoded.message.unknownRequired.length).toBe(16);
  });
});

describe("TCP allocations (RFC 6062)", () => {
  it("refuse ChannelBind and drop Send indications: they relay over connections only", () => {
    const h = new Harness();
    const c = new TestClient(h, { connection: 9 });
    h.server.handleConnectionOpened(9, 0, "tcp", c.address, c.port);
    const tcp = (x: StunMessageBuilder) => {
      x.requestedTransport(TransportProtocol.Tcp);
    };
    c.learn(c.ask(c.build(Method.Allocate, tcp)));
    c.send(c.buildSigned(Method.Allocate, tcp));
    const [open] = h.expectCommands([{ type: "open-relay", protocol: "tcp" }]) as unknown as [
      { relay: number },
    ];
    h.server.handleRelayBound(open.relay, h.now);
    h.expectCommands([{ type: "send-to-client", errorCode: 0 }, { type: "allocation-created" }]);
    expect(c.createPermission("198.51.100.1").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(400);
    expect(c.sendIndication("198.51.100.1", 5000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
  });
});

describe("EVEN-PORT bind failures (RFC 8656 §7.2, §14.4)", () => {
  it("fail with 508 instead of moving to an odd port, and release the reserved neighbour", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50003 });
    const c = new TestClient(h, { port: 1 });
    const even = (x: StunMessageBuilder) => {
      x.requestedTransport(TransportProtocol.Udp).evenPort(true);
    };
    c.learn(c.ask(c.build(Method.Allocate, even)));
    c.send(c.buildSigned(Method.Allocate, even));
    const [open] = h.expectCommands([{ type: "open-relay" }]) as unknown as [
      { relay: number; port: number },
    ];
    expect(open.port % 2).toBe(0);
    h.server.handleRelayBindFailed(open.relay, h.now);
    const [sent] = h.expectCommands([{ type: "send-to-client", errorCode: 508 }]) as unknown as [
      { data: Uint8Array },
    ];
    expect(c.verified(new Response(sent.data)).code).toBe(508);
    // All four ports are free again: four plain allocations fit, none gets 508.
    for (let i = 0; i < 4; i++) {
      const other = new TestClient(h, { port: 10 + i, username: i % 2 ? "alice" : "bob" });
      const r = other.allocate();
      expect(r.code).toBe(0);
      expect(r.xorAddress(AttributeType.XorRelayedAddress)!.port).toBeGreaterThanOrEqual(50000);
    }
  });
});
