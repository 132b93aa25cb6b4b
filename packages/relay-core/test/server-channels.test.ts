// ChannelBind (RFC 8656 §12.2) and channel lifetimes and cool-down (§12).
import { describe, expect, it } from "vitest";
import { RouteKind } from "../src/server/types.js";
import { Harness, TestClient } from "./harness.js";

const P1 = "198.51.100.1";
const P2 = "198.51.100.2";

function allocated(options: ConstructorParameters<typeof Harness>[0] = {}) {
  const h = new Harness(options);
  const c = new TestClient(h);
  c.allocate({ lifetime: 3600 });
  return { h, c };
}

describe("ChannelBind (RFC 8656 §12.2)", () => {
  it("binds only RFC 8656's 0x4000-0x4FFF by default: RFC 5766's 0x5000-0x7FFF get 400", () => {
    const { h, c } = allocated();
    expect(c.channelBind(0x3fff, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x5000, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x7fff, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x8000, P1, 5000).code).toBe(400);
    expect(c.channelBind(0xffff, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(c.channelBind(0x4fff, P1, 5001).code).toBe(0);
    expect(h.server.stats.channelsActive).toBe(2);
  });

  it("binds RFC 5766's 0x4000-0x7FFF with legacyChannelNumbers (coturn's uclient binds 0x5xxx)", () => {
    const { h, c } = allocated({ legacyChannelNumbers: true });
    expect(c.channelBind(0x3fff, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x8000, P1, 5000).code).toBe(400);
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(c.channelBind(0x5000, P1, 5001).code).toBe(0);
    expect(c.channelBind(0x7fff, P1, 5002).code).toBe(0);
    // Data flows on a legacy number like on any other.
    expect(c.channelData(0x7fff, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(2), P1, 5002)).toMatchObject({
      kind: RouteKind.ToClient,
      channel: 0x7fff,
    });
    expect(h.server.stats.channelsActive).toBe(3);
  });

  it("ChannelBind rules: the same number to another peer gets 400", () => {
    const { c } = allocated();
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(c.channelBind(0x4000, P2, 5000).code).toBe(400);
    expect(c.channelBind(0x4000, P1, 5001).code).toBe(400); // same IP, other port: other peer
  });

  it("ChannelBind rules: the same peer with another number gets 400", () => {
    const { c } = allocated();
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(c.channelBind(0x4001, P1, 5000).code).toBe(400);
  });

  it("ChannelBind rules: rebinding the same pair refreshes the binding (and its permission)", () => {
    const { h, c } = allocated();
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    h.tick(500);
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    h.tick(200); // 700 s after the first bind, 200 s after the second
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), P1, 5000)).toMatchObject({
      kind: RouteKind.ToClient,
      channel: 0x4000,
    });
    expect(h.server.stats.channelsActive).toBe(1);
  });

  it("installs the permission for the peer's IP", () => {
    const { h, c } = allocated();
    c.channelBind(0x4000, P1, 5000);
    expect(h.server.stats.permissionsActive).toBe(1);
    expect(c.sendIndication(P1, 9999, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
  });

  it("holds the per-allocation channel limit (508)", () => {
    const { c } = allocated({ maxChannelsPerAllocation: 1 });
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(c.channelBind(0x4001, P2, 5000).code).toBe(508);
  });

  it("answers 437 without an allocation", () => {
    const h = new Harness();
    expect(new TestClient(h).channelBind(0x4000, P1, 5000).code).toBe(437);
  });
});

describe("channel lifetime and cool-down (RFC 8656 §12)", () => {
  it("expires a binding after 600 s: its ChannelData is dropped", () => {
    const { h, c } = allocated();
    c.channelBind(0x4000, P1, 5000);
    c.createPermission(P1);
    h.tick(550);
    c.createPermission(P1); // keep the permission, let the channel lapse
    h.tick(50);
    h.expectNoOutputs();
    expect(h.server.stats.channelsActive).toBe(0);
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["no-channel"]).toBe(1);
    // The peer's data now arrives as a Data indication.
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), P1, 5000)).toMatchObject({
      kind: RouteKind.ToClient,
      channel: 0,
    });
  });

  it("rebinding a channel after it expired: other peer refused until 300 s after expiry, then allowed", () => {
    const { h, c } = allocated();
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    h.tick(600);
    expect(h.server.stats.channelsActive).toBe(0);
    expect(c.channelBind(0x4000, P2, 5000).code).toBe(400);
    expect(c.channelBind(0x4001, P1, 5000).code).toBe(400);
    h.tick(299);
    expect(c.channelBind(0x4000, P2, 5000).code).toBe(400);
    h.tick(1);
    expect(c.channelBind(0x4000, P2, 5000).code).toBe(0);
    expect(c.channelBind(0x4001, P1, 5000).code).toBe(0);
    expect(h.server.stats.channelsActive).toBe(2);
    expect(c.channelData(0x4000, Uint8Array.of(7))).toMatchObject({
      kind: RouteKind.ToPeer,
      peerAddress: P2,
    });
  });

  it("lets the same pair be rebound during the cool-down", () => {
    const { h, c } = allocated();
    c.channelBind(0x4000, P1, 5000);
    h.tick(700);
    expect(c.channelBind(0x4000, P1, 5000).code).toBe(0);
    expect(h.server.stats.channelsActive).toBe(1);
    expect(c.channelData(0x4000, Uint8Array.of(7)).kind).toBe(RouteKind.ToPeer);
  });
});
