// CreatePermission (RFC 8656 §10) and the peer-address policy (RFC 8656 §21).
import { describe, expect, it } from "vitest";
import { AttributeType } from "../src/codec/constants.js";
import { PeerAddressPolicy } from "../src/policy/peer-address-policy.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, TestClient } from "./harness.js";

const PEER = "198.51.100.1";

describe("CreatePermission (RFC 8656 §10)", () => {
  it("CreatePermission enforced: peer data without permission is dropped; with it routed; after 300 s dropped again", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate({ lifetime: 3600 });
    const relay = c.relayFor(4);
    const payload = Uint8Array.of(1, 2, 3);
    expect(h.peerData(relay, payload, PEER, 5000).kind).toBe(RouteKind.None);
    expect(c.sendIndication(PEER, 5000, payload).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["no-permission"]).toBe(2);
    expect(c.createPermission(PEER).code).toBe(0);
    expect(h.server.stats.permissionsActive).toBe(1);
    // RFC 8656 §9: a permission is for the IP address, any port.
    expect(h.peerData(relay, payload, PEER, 5000).kind).toBe(RouteKind.ToClient);
    expect(h.peerData(relay, payload, PEER, 6000).kind).toBe(RouteKind.ToClient);
    expect(h.peerData(relay, payload, "198.51.100.2", 5000).kind).toBe(RouteKind.None);
    expect(c.sendIndication(PEER, 7000, payload).kind).toBe(RouteKind.ToPeer);
    h.tick(299.999);
    expect(h.peerData(relay, payload, PEER, 5000).kind).toBe(RouteKind.ToClient);
    h.tick(0.001);
    h.expectNoOutputs();
    expect(h.server.stats.permissionsActive).toBe(0);
    expect(h.peerData(relay, payload, PEER, 5000).kind).toBe(RouteKind.None);
    expect(c.sendIndication(PEER, 5000, payload).kind).toBe(RouteKind.None);
  });

  it("drops peer data at the permission's expiry even before the timer runs", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate({ lifetime: 3600 });
    c.createPermission(PEER);
    h.advance(300);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), PEER, 1).kind).toBe(RouteKind.None);
  });

  it("refreshes a permission with a new CreatePermission", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate({ lifetime: 3600 });
    c.createPermission(PEER);
    h.tick(200);
    c.createPermission(PEER);
    h.tick(200);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), PEER, 1).kind).toBe(RouteKind.ToClient);
    expect(h.server.stats.permissionsActive).toBe(1);
  });

  it("installs all the peers of one request or none of them", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission(PEER, "198.51.100.2").code).toBe(0);
    expect(h.server.stats.permissionsActive).toBe(2);
    expect(c.createPermission("198.51.100.3", "127.0.0.1").code).toBe(403);
    expect(h.server.stats.permissionsActive).toBe(2);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), "198.51.100.3", 1).kind).toBe(
      RouteKind.None,
    );
  });

  it("answers 437 without an allocation and 400 without XOR-PEER-ADDRESS", () => {
    const h = new Harness();
    const c = new TestClient(h);
    expect(c.createPermission(PEER).code).toBe(437);
    c.allocate();
    expect(c.createPermission().code).toBe(400);
  });

  it("holds the per-allocation permission limit (508)", () => {
    const h = new Harness({ maxPermissionsPerAllocation: 2 });
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission(PEER, "198.51.100.2").code).toBe(0);
    expect(c.createPermission(PEER).code).toBe(0); // a refresh, not a new one
    expect(c.createPermission("198.51.100.3").code).toBe(508);
    expect(h.server.stats.permissionsActive).toBe(2);
  });
});

describe("peer-address policy (RFC 8656 §21)", () => {
  it("forbidden peers get 403 (loopback without allowLoopback, ::ffff:127.0.0.1, 0.0.0.0, [::])", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate({ extra: (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 6) });
    for (const peer of [
      "127.0.0.1",
      "::ffff:127.0.0.1",
      "0.0.0.0",
      "::",
      "::1",
      "10.1.2.3",
      "169.254.169.254",
      "64:ff9b::a9fe:a9fe",
      "224.0.0.1",
    ]) {
      expect(c.createPermission(peer).code, peer).toBe(403);
      expect(c.channelBind(0x4000, peer, 5000).code, peer).toBe(403);
      expect(c.sendIndication(peer, 5000, Uint8Array.of(1)).kind, peer).toBe(RouteKind.None);
    }
    expect(h.server.stats.permissionsActive).toBe(0);
    expect(h.server.stats.channelsActive).toBe(0);
    expect(c.createPermission(PEER, "2001:db8:beef::1").code).toBe(0);
  });

  it("allows loopback peers with allowLoopback (tests, same-host services)", () => {
    const h = new Harness({ peerPolicy: new PeerAddressPolicy({ allowLoopback: true }) });
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission("127.0.0.1").code).toBe(0);
    expect(c.createPermission(PEER).code).toBe(403);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(9), "127.0.0.1", 7).kind).toBe(
      RouteKind.ToClient,
    );
  });
});
