// Allocate, Refresh and allocation lifetimes (RFC 8656 §6-§8), quotas and relay port binding.
import { describe, expect, it } from "vitest";
import { readBytes } from "../src/codec/attributes.js";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { RelayId } from "../src/ids.js";
import { Harness, Response, T0, TestClient } from "./harness.js";

type OpenRelay = { relay: RelayId; port: number };

const udp = (b: { requestedTransport(p: number): unknown }) => {
  b.requestedTransport(17);
};

describe("Allocate (RFC 8656 §7.2)", () => {
  it("allocates a UDP relay and reports XOR-RELAYED-ADDRESS, LIFETIME and XOR-MAPPED-ADDRESS", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50009 });
    const c = new TestClient(h, { address: "192.0.2.10", port: 40000 });
    c.learn(c.ask(c.build(Method.Allocate, udp)));
    c.send(c.buildSigned(Method.Allocate, udp));
    const [open] = h.expectOutputs([
      { type: "open-relay", family: 4, protocol: "udp", bindAddress: "127.0.0.1" },
    ]) as unknown as [Extract<ReturnType<Harness["drain"]>[number], { type: "open-relay" }>];
    expect(open.port).toBeGreaterThanOrEqual(50000);
    expect(open.port).toBeLessThanOrEqual(50009);
    // No answer until the port is bound.
    expect(h.server.pollTimeout()).toBe(T0 + 600_000);
    h.server.handleRelayBound(open.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit", method: Method.Allocate, errorCode: 0 },
      {
        type: "allocation-created",
        username: "alice",
        transport: "udp",
        lifetimeSeconds: 600,
        relayed: [{ family: 4, address: "127.0.0.1", port: open.port }],
      },
    ]) as unknown as [Extract<ReturnType<Harness["drain"]>[number], { type: "transmit" }>];
    const r = c.verified(new Response(sent.data));
    expect(r.code).toBe(0);
    expect(r.xorAddress(AttributeType.XorRelayedAddress)).toEqual({
      family: 4,
      address: "127.0.0.1",
      port: open.port,
    });
    expect(r.uint32(AttributeType.Lifetime)).toBe(600);
    expect(r.xorAddress(AttributeType.XorMappedAddress)).toEqual({
      family: 4,
      address: "192.0.2.10",
      port: 40000,
    });
    expect(h.server.stats.allocationsActive).toBe(1);
    expect(h.server.stats.allocationsCreated).toBe(1);
  });

  it("advertises the configured address behind 1:1 NAT", () => {
    const h = new Harness({
      relayAddresses: { ip4: { bind: "127.0.0.1", advertised: "192.0.2.99" } },
    });
    const c = new TestClient(h);
    expect(c.allocate().xorAddress(AttributeType.XorRelayedAddress)?.address).toBe("192.0.2.99");
  });

  it("clamps LIFETIME between the default and the maximum", () => {
    const h = new Harness();
    expect(
      new TestClient(h, { port: 1 }).allocate({ lifetime: 5 }).uint32(AttributeType.Lifetime),
    ).toBe(600);
    expect(
      new TestClient(h, { port: 2 }).allocate({ lifetime: 1200 }).uint32(AttributeType.Lifetime),
    ).toBe(1200);
    expect(
      new TestClient(h, { port: 3 }).allocate({ lifetime: 99999 }).uint32(AttributeType.Lifetime),
    ).toBe(3600);
  });

  it("retransmitted Allocate yields byte-identical response and no second allocation", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate, udp)));
    const request = c.buildSigned(Method.Allocate, udp);
    c.send(request);
    const [open] = h.drain() as unknown as [
      Extract<ReturnType<Harness["drain"]>[number], { type: "open-relay" }>,
    ];
    // Retransmitted while the port binds: silence (the answer is on its way).
    c.send(request);
    h.expectNoOutputs();
    h.server.handleRelayBound(open.relay, h.now);
    const first = (h.drain()[0] as { data: Uint8Array }).data;
    for (const wait of [0, 10, 60]) {
      // Within the response cache (40 s) and after it: the same bytes.
      h.advance(wait);
      c.send(request);
      const [again] = h.expectOutputs([{ type: "transmit" }]) as unknown as [{ data: Uint8Array }];
      expect(Buffer.from(again.data).equals(Buffer.from(first))).toBe(true);
    }
    expect(h.server.stats.allocationsActive).toBe(1);
    expect(h.server.stats.allocationsCreated).toBe(1);
  });

  it("Allocate on a 5-tuple with an allocation gets 437", () => {
    const h = new Harness();
    const c = new TestClient(h);
    expect(c.allocate().code).toBe(0);
    expect(c.allocate().code).toBe(437);
    expect(h.server.stats.allocationsActive).toBe(1);
  });

  it("answers 400 without REQUESTED-TRANSPORT, 442 for an unknown protocol", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate)));
    expect(c.ask(c.buildSigned(Method.Allocate)).code).toBe(400);
    expect(c.ask(c.buildSigned(Method.Allocate, (b) => b.requestedTransport(99))).code).toBe(442);
    // RFC 6062 §5.1: a TCP relay is only allocated over a TCP/TLS control connection.
    expect(c.ask(c.buildSigned(Method.Allocate, (b) => b.requestedTransport(6))).code).toBe(400);
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("answers 420 with UNKNOWN-ATTRIBUTES for an unknown comprehension-required attribute", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.allocate({ extra: (b) => b.bytes(0x7777, new Uint8Array(4)) });
    expect(r.code).toBe(420);
    expect(Array.from(readBytes(r.msg, AttributeType.UnknownAttributes)!)).toEqual([0x77, 0x77]);
    // DONT-FRAGMENT cannot be honoured: treated as unknown (RFC 8656 §7.2).
    const d = c.allocate({ extra: (b) => b.flag(AttributeType.DontFragment) });
    expect(d.code).toBe(420);
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("EVEN-PORT with the R bit gives an even port and a RESERVATION-TOKEN for the next one", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50099 });
    const a = new TestClient(h, { port: 1 });
    const r = a.allocate({ extra: (b) => b.evenPort(true) });
    const port = r.xorAddress(AttributeType.XorRelayedAddress)!.port;
    expect(port % 2).toBe(0);
    const token = readBytes(r.msg, AttributeType.ReservationToken)!;
    expect(token.length).toBe(8);
    const b = new TestClient(h, { port: 2, username: "bob" });
    const r2 = b.allocate({ extra: (x) => x.bytes(AttributeType.ReservationToken, token) });
    expect(r2.code).toBe(0);
    expect(r2.xorAddress(AttributeType.XorRelayedAddress)!.port).toBe(port + 1);
    // A token is good once.
    const c = new TestClient(h, { port: 3, username: "carol" });
    expect(c.allocate({ extra: (x) => x.bytes(AttributeType.ReservationToken, token) }).code).toBe(
      508,
    );
  });

  it("retries a failed EVEN-PORT bind on another even port, its reserved neighbour moving along", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50007 });
    const c = new TestClient(h, { port: 1 });
    const even = (x: StunMessageBuilder) => {
      x.requestedTransport(TransportProtocol.Udp).evenPort(true);
    };
    c.learn(c.ask(c.build(Method.Allocate, even)));
    c.send(c.buildSigned(Method.Allocate, even));
    const [first] = h.expectOutputs([{ type: "open-relay" }]) as unknown as [OpenRelay];
    expect(first.port % 2).toBe(0);
    h.server.handleRelayBindFailed(first.relay, h.now);
    const [second] = h.expectOutputs([{ type: "open-relay", relay: first.relay }]) as unknown as [
      OpenRelay,
    ];
    expect(second.port % 2).toBe(0);
    expect(second.port).not.toBe(first.port);
    h.server.handleRelayBound(second.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit", errorCode: 0 },
      { type: "allocation-created" },
    ]) as unknown as [{ data: Uint8Array }];
    const r = c.verified(new Response(sent.data));
    expect(r.xorAddress(AttributeType.XorRelayedAddress)!.port).toBe(second.port);
    // The token names the port next to the one that bound...
    const token = readBytes(r.msg, AttributeType.ReservationToken)!;
    const b = new TestClient(h, { port: 2, username: "bob" });
    const redeemed = b.allocate({ extra: (x) => x.bytes(AttributeType.ReservationToken, token) });
    expect(redeemed.xorAddress(AttributeType.XorRelayedAddress)!.port).toBe(second.port + 1);
    // ...and the first pair is free again: the six other ports of the range, no more.
    for (let i = 0; i < 6; i++) expect(new TestClient(h, { port: 10 + i }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 20 }).allocate().code).toBe(508);
  });

  it("answers 508 after eight even ports failed, and leaves no port or reservation taken", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50009 });
    const c = new TestClient(h, { port: 1 });
    const even = (x: StunMessageBuilder) => {
      x.requestedTransport(TransportProtocol.Udp).evenPort(true);
    };
    c.learn(c.ask(c.build(Method.Allocate, even)));
    c.send(c.buildSigned(Method.Allocate, even));
    let [open] = h.expectOutputs([{ type: "open-relay" }]) as unknown as [OpenRelay];
    for (let i = 1; i < 8; i++) {
      expect(open.port % 2).toBe(0);
      h.server.handleRelayBindFailed(open.relay, h.now);
      [open] = h.expectOutputs([{ type: "open-relay", relay: open.relay }]) as unknown as [
        OpenRelay,
      ];
    }
    h.server.handleRelayBindFailed(open.relay, h.now);
    const [sent] = h.expectOutputs([{ type: "transmit", errorCode: 508 }]) as unknown as [
      { data: Uint8Array },
    ];
    expect(c.verified(new Response(sent.data)).code).toBe(508);
    for (let i = 0; i < 10; i++)
      expect(new TestClient(h, { port: 10 + i }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 20 }).allocate().code).toBe(508);
  });

  it("lets a reservation lapse after 30 s and frees its port", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50001 });
    const a = new TestClient(h, { port: 1 });
    const token = readBytes(
      a.allocate({ extra: (b) => b.evenPort(true) }).msg,
      AttributeType.ReservationToken,
    )!;
    expect(h.server.pollTimeout()).toBe(h.now + 30_000);
    h.tick(30);
    h.expectNoOutputs();
    const b = new TestClient(h, { port: 2, username: "bob" });
    expect(b.allocate({ extra: (x) => x.bytes(AttributeType.ReservationToken, token) }).code).toBe(
      508,
    );
    // ...but port 50001 is free again for anyone.
    const c = new TestClient(h, { port: 3, username: "carol" });
    expect(c.allocate().xorAddress(AttributeType.XorRelayedAddress)!.port).toBe(50001);
  });
});

describe("allocation lifetime (RFC 8656 §6, §8)", () => {
  it("keeps a live allocation's deadline through allocate/delete churn", () => {
    const h = new Harness({ maxAllocationsPerUser: 10, maxUnauthenticatedRate: 0 });
    const keep = new TestClient(h, { port: 9999 });
    keep.allocate();
    // Each deleted allocation leaves a dead heap entry (deadlines.test.ts: compacted away).
    for (let i = 0; i < 3000; i++) {
      const c = new TestClient(h, { port: 20000 + i });
      expect(c.allocate().code).toBe(0);
      c.send(c.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 0)));
      expect(h.drain().map((x) => x.type)).toEqual(["close-relay", "allocation-ended", "transmit"]);
    }
    expect(h.server.stats.allocationsActive).toBe(1);
    expect(h.server.pollTimeout()).toBe(T0 + 600_000);
    h.tick(600);
    h.expectOutputs([
      { type: "close-relay", relay: keep.relayFor(4) },
      { type: "allocation-ended", reason: "expired", families: [4] },
    ]);
  });

  it("deallocates once the lifetime expires", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    const relay = c.relayFor(4);
    expect(h.server.pollTimeout()).toBe(T0 + 600_000);
    h.tick(599.999);
    h.expectNoOutputs();
    h.tick(0.001);
    h.expectOutputs([
      { type: "close-relay", relay },
      { type: "allocation-ended", reason: "expired", families: [4] },
    ]);
    expect(h.server.stats.allocationsActive).toBe(0);
    expect(h.server.pollTimeout()).toBeUndefined();
    // The 5-tuple is free again: Refresh gets 437, Allocate works.
    expect(c.refresh(600).code).toBe(437);
    expect(c.allocate().code).toBe(0);
  });

  it("treats an allocation past its lifetime as gone even when the timer runs late", () => {
    const h = new Harness({ lifetimes: { nonce: 3600 } });
    const c = new TestClient(h);
    c.allocate();
    c.channelBind(0x4000, "198.51.100.1", 5000);
    h.advance(600); // no handleTimeout: the runtime's timer is late
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(0);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), "198.51.100.1", 5000).kind).toBe(0);
    h.expectNoOutputs();
    // A request catches up: the allocation ends as expired, and Refresh cannot revive it.
    c.send(c.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 600)));
    const [, , sent] = h.expectOutputs([
      { type: "close-relay" },
      { type: "allocation-ended", reason: "expired" },
      { type: "transmit", errorCode: 437 },
    ]) as unknown as [unknown, unknown, { data: Uint8Array }];
    expect(new Response(sent.data).code).toBe(437);
    expect(c.allocate().code).toBe(0);
  });

  it("refreshed in time the allocation stays", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    h.tick(500);
    const r = c.refresh(600);
    expect(r.code).toBe(0);
    expect(r.uint32(AttributeType.Lifetime)).toBe(600);
    h.tick(200); // 700 s after the Allocate
    h.expectNoOutputs();
    expect(h.server.stats.allocationsActive).toBe(1);
    expect(h.server.pollTimeout()).toBe(T0 + 1_100_000);
    h.tick(400);
    h.expectOutputs([{ type: "close-relay" }, { type: "allocation-ended", reason: "expired" }]);
  });

  it("lifetime 0 deletes it", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    c.send(c.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 0)));
    const [, , sent] = h.expectOutputs([
      { type: "close-relay", relay: c.relayFor(4) },
      { type: "allocation-ended", reason: "deleted" },
      { type: "transmit", method: Method.Refresh, errorCode: 0 },
    ]) as unknown as [unknown, unknown, { data: Uint8Array }];
    expect(c.verified(new Response(sent.data)).uint32(AttributeType.Lifetime)).toBe(0);
    expect(h.server.stats.allocationsActive).toBe(0);
    // The old deadline may linger in the timer heap (lazy deletion): it fires with no effect.
    const t = h.server.pollTimeout();
    if (t !== undefined) {
      h.now = Math.max(h.now, t);
      h.server.handleTimeout(h.now);
      h.expectNoOutputs();
    }
    expect(h.server.pollTimeout()).toBeUndefined();
    expect(c.refresh(0).code).toBe(437);
  });

  it("freeing an allocation clears its channels and permissions", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission("198.51.100.1", "198.51.100.2").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.3", 5000).code).toBe(0);
    expect(h.server.stats).toMatchObject({ permissionsActive: 3, channelsActive: 1 });
    c.send(c.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 0)));
    h.drain();
    expect(h.server.stats).toMatchObject({
      allocationsActive: 0,
      permissionsActive: 0,
      channelsActive: 0,
    });
    // Nothing of it routes any more.
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), "198.51.100.3", 5000).kind).toBe(0);
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(0);
  });

  it("ends a TCP client's allocation when its connection closes", () => {
    const h = new Harness();
    const c = new TestClient(h, { connection: 3 });
    c.allocate();
    h.server.handleConnectionClosed(c.connection!, h.now);
    h.expectOutputs([
      { type: "close-relay", relay: c.relayFor(4) },
      { type: "allocation-ended", reason: "connection-closed" },
    ]);
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("closeAll ends every allocation", () => {
    const h = new Harness();
    new TestClient(h, { port: 1 }).allocate();
    new TestClient(h, { port: 2, username: "bob" }).allocate();
    h.server.closeAll(h.now);
    h.expectOutputs([
      { type: "close-relay" },
      { type: "allocation-ended", reason: "shutdown" },
      { type: "close-relay" },
      { type: "allocation-ended", reason: "shutdown" },
    ]);
    expect(h.server.stats.allocationsActive).toBe(0);
  });
});

describe("quotas and capacity", () => {
  it("486 per-user quota", () => {
    const h = new Harness({ maxAllocationsPerUser: 1 });
    expect(new TestClient(h, { port: 1 }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 2 }).allocate().code).toBe(486);
    expect(new TestClient(h, { port: 3, username: "bob" }).allocate().code).toBe(0);
  });

  it("508 total capacity", () => {
    const h = new Harness({ maxAllocations: 2 });
    expect(new TestClient(h, { port: 1 }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 2, username: "bob" }).allocate().code).toBe(0);
    const c = new TestClient(h, { port: 3, username: "carol" });
    expect(c.allocate().code).toBe(508);
    expect(h.server.stats.allocationsActive).toBe(2);
  });

  it("508 when the port range is exhausted", () => {
    const h = new Harness({ minPort: 50000, maxPort: 50000 });
    expect(new TestClient(h, { port: 1 }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 2, username: "bob" }).allocate().code).toBe(508);
  });

  it("relay bind failure retries another port then 508 after 8 failures", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate, udp)));
    c.send(c.buildSigned(Method.Allocate, udp));
    const ports: number[] = [];
    let [open] = h.expectOutputs([{ type: "open-relay" }]) as unknown as [
      { relay: RelayId; port: number },
    ];
    const relay = open.relay;
    ports.push(open.port);
    for (let i = 1; i < 8; i++) {
      h.server.handleRelayBindFailed(relay, h.now);
      [open] = h.expectOutputs([{ type: "open-relay", relay }]) as unknown as [
        { relay: RelayId; port: number },
      ];
      ports.push(open.port);
    }
    expect(new Set(ports).size).toBe(8);
    h.server.handleRelayBindFailed(relay, h.now);
    const [sent] = h.expectOutputs([{ type: "transmit", errorCode: 508 }]) as unknown as [
      { data: Uint8Array },
    ];
    expect(c.verified(new Response(sent.data)).code).toBe(508);
    expect(h.server.stats.allocationsActive).toBe(0);
    expect(c.allocate().code).toBe(0);
  });

  it("a relay bound after one failure completes the Allocate", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate, udp)));
    c.send(c.buildSigned(Method.Allocate, udp));
    const [first] = h.drain() as unknown as [{ relay: RelayId; port: number }];
    h.server.handleRelayBindFailed(first.relay, h.now);
    const [second] = h.expectOutputs([{ type: "open-relay", relay: first.relay }]) as unknown as [
      { relay: RelayId; port: number },
    ];
    h.server.handleRelayBound(first.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit" },
      { type: "allocation-created" },
    ]) as unknown as [{ data: Uint8Array }];
    expect(new Response(sent.data).xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(
      second.port,
    );
  });
});

describe("draining", () => {
  it("draining answers 300 with ALTERNATE-SERVER or 508, and keeps existing allocations", () => {
    const alternate = { family: 4 as const, address: "192.0.2.200", port: 3478 };
    const h = new Harness({ alternateServer: alternate });
    const a = new TestClient(h, { port: 1 });
    a.allocate();
    h.server.startDraining();
    expect(h.server.isDraining).toBe(true);
    const r = new TestClient(h, { port: 2, username: "bob" }).allocate();
    expect(r.code).toBe(300);
    expect(r.msg.attributes.some((x) => x.type === AttributeType.AlternateServer)).toBe(true);
    expect(a.refresh(600).code).toBe(0);

    const plain = new Harness();
    plain.server.startDraining();
    expect(new TestClient(plain).allocate().code).toBe(508);
  });
});
