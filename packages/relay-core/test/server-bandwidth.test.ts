// Bandwidth limits: token buckets on the relayed payload, per allocation and per user, both
// directions against the same bucket; over the limit a datagram is a counted drop (never a
// disconnect) and an RFC 6062 pipe is paused.
import { describe, expect, it } from "vitest";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { PeerConnectionId } from "../src/ids.js";
import { SeededRandom } from "../src/rng.js";
import {
  AllocationBandwidth,
  LocalUserBandwidth,
  TokenBucket,
  type UserBandwidth,
} from "../src/server/bandwidth.js";
import type { TurnServerOptions } from "../src/server/options.js";
import { TurnServer } from "../src/server/server.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, type OutputOf, TestClient } from "./harness.js";
import { channelBind, type Entry } from "./offload-harness.js";

const PEER = "198.51.100.1";
const PEER_PORT = 5000;
const CHANNEL = 0x4000;

/** A UDP client of `user` with an allocation and a channel to PEER. */
function bound(h: Harness, user = "alice", port = 40000): TestClient {
  const c = new TestClient(h, { username: user, port });
  expect(c.allocate().code).toBe(0);
  expect(c.channelBind(CHANNEL, PEER, PEER_PORT).code).toBe(0);
  return c;
}

const bytes = (n: number) => new Uint8Array(n);

/** A ChannelBind to PEER on an offloading server: the entry queued before its success. */
function offloadEntry(c: TestClient): Entry {
  const out = channelBind(c, CHANNEL, PEER, PEER_PORT);
  expect(out.map((o) => o.type)).toEqual(["offload-channel", "transmit"]);
  return out[0] as Entry;
}
const toPeer = (c: TestClient, n: number) => c.channelData(CHANNEL, bytes(n)).kind;
const toClient = (h: Harness, c: TestClient, n: number) =>
  h.peerData(c.relayFor(4), bytes(n), PEER, PEER_PORT).kind;

describe("bandwidth limit per allocation", () => {
  it("drops ChannelData over the limit, counts it, and keeps the allocation", () => {
    const h = new Harness({ maxBytesPerSecond: 100_000 });
    const c = bound(h);
    // A burst of one second's worth: 100 datagrams of 1000 bytes.
    for (let i = 0; i < 100; i++) expect(toPeer(c, 1000)).toBe(RouteKind.ToPeer);
    expect(toPeer(c, 1000)).toBe(RouteKind.None);
    expect(h.server.stats.drops["bandwidth-limit"]).toBe(1);
    // 10 ms later 1000 bytes more are allowed.
    h.advance(0.01);
    expect(toPeer(c, 1000)).toBe(RouteKind.ToPeer);
    expect(toPeer(c, 1)).toBe(RouteKind.None);
    h.expectNoOutputs();
    expect(c.refresh(600).code).toBe(0);
  });

  it("charges both directions to the same bucket", () => {
    const h = new Harness({ maxBytesPerSecond: 100_000 });
    const c = bound(h);
    for (let i = 0; i < 50; i++) expect(toPeer(c, 1000)).toBe(RouteKind.ToPeer);
    for (let i = 0; i < 50; i++) expect(toClient(h, c, 1000)).toBe(RouteKind.ToClient);
    expect(toClient(h, c, 1)).toBe(RouteKind.None);
    expect(toPeer(c, 1)).toBe(RouteKind.None);
    expect(h.server.stats.drops["bandwidth-limit"]).toBe(2);
  });

  it("charges Send and Data indications by their payload, not their STUN headers", () => {
    const h = new Harness({ maxBytesPerSecond: 100_000 });
    const c = new TestClient(h);
    expect(c.allocate().code).toBe(0);
    expect(c.createPermission(PEER).code).toBe(0);
    expect(c.sendIndication(PEER, PEER_PORT, bytes(60_000)).kind).toBe(RouteKind.ToPeer);
    expect(toClient(h, c, 40_000)).toBe(RouteKind.ToClient);
    expect(c.sendIndication(PEER, PEER_PORT, bytes(1)).kind).toBe(RouteKind.None);
    expect(toClient(h, c, 1)).toBe(RouteKind.None);
    expect(h.server.stats.drops["bandwidth-limit"]).toBe(2);
  });

  it("lets a datagram of any size through after a quiet period: the burst is at least 64 KiB", () => {
    const h = new Harness({ maxBytesPerSecond: 1000 });
    expect(h.server.bandwidthLimits.perAllocation).toEqual({
      bytesPerSecond: 1000,
      burstBytes: 65_536,
    });
    const c = bound(h);
    expect(toPeer(c, 60_000)).toBe(RouteKind.ToPeer);
    // 5,536 bytes left; 10,000 more take 4,464 ms at 1000 bytes/s.
    expect(toPeer(c, 10_000)).toBe(RouteKind.None);
    h.now += 4463;
    expect(toPeer(c, 10_000)).toBe(RouteKind.None);
    h.now += 1;
    expect(toPeer(c, 10_000)).toBe(RouteKind.ToPeer);
  });

  it("gives each allocation a bucket of its own", () => {
    const h = new Harness({ maxBytesPerSecond: 100_000 });
    const a = bound(h, "alice", 1);
    const b = bound(h, "alice", 2);
    expect(toPeer(a, 65_000)).toBe(RouteKind.ToPeer);
    expect(toPeer(a, 65_000)).toBe(RouteKind.None);
    expect(toPeer(b, 65_000)).toBe(RouteKind.ToPeer);
  });
});

describe("bandwidth limit per user", () => {
  it("holds across the user's allocations and leaves other users alone", () => {
    const h = new Harness({ maxBytesPerSecondPerUser: 100_000 });
    const a = bound(h, "alice", 1);
    const b = bound(h, "alice", 2);
    const bob = bound(h, "bob", 3);
    expect(toPeer(a, 60_000)).toBe(RouteKind.ToPeer);
    expect(toClient(h, b, 40_000)).toBe(RouteKind.ToClient);
    expect(toPeer(b, 1)).toBe(RouteKind.None);
    expect(toPeer(a, 1)).toBe(RouteKind.None);
    expect(toPeer(bob, 60_000)).toBe(RouteKind.ToPeer);
  });

  it("gives the allocation's tokens back when the user's bucket refuses the datagram", () => {
    const limit = { bytesPerSecond: 100_000, burstBytes: 100_000 };
    const users = new LocalUserBandwidth(limit);
    const h = new Harness({
      maxBytesPerSecond: 100_000,
      maxBytesPerSecondPerUser: 100_000,
      userBandwidth: users,
    });
    const a = bound(h);
    // Alice's bucket, emptied from outside (another engine of the same relay, say).
    const alice = users.acquire("static:alice", h.now).bucket;
    expect(alice.take(100_000, h.now)).toBe(true);
    expect(toPeer(a, 60_000)).toBe(RouteKind.None);
    alice.refund(100_000);
    // Had the refused 60,000 stayed taken from the allocation's bucket, it would refuse this.
    expect(toPeer(a, 60_000)).toBe(RouteKind.ToPeer);
  });

  it("shares one bucket between engines that inject the same per-user buckets", () => {
    // Two engines (the relay's workers) backed by one store of per-user buckets.
    const shared: UserBandwidth = new LocalUserBandwidth({
      bytesPerSecond: 100_000,
      burstBytes: 100_000,
    });
    const options: Partial<TurnServerOptions> = {
      maxBytesPerSecondPerUser: 100_000,
      userBandwidth: shared,
    };
    const one = new Harness({ ...options, random: new SeededRandom("one") });
    const two = new Harness({ ...options, random: new SeededRandom("two") });
    const a = bound(one, "alice", 1);
    const b = bound(two, "alice", 2);
    expect(toPeer(a, 50_000)).toBe(RouteKind.ToPeer);
    expect(toPeer(a, 20_000)).toBe(RouteKind.ToPeer);
    expect(toPeer(b, 40_000)).toBe(RouteKind.None);
    expect(toPeer(b, 30_000)).toBe(RouteKind.ToPeer);
  });

  it("starts a user's bucket full again once its last allocation is gone", () => {
    const users = new LocalUserBandwidth({ bytesPerSecond: 1000, burstBytes: 65_536 });
    const first = users.acquire("rest:alice", 0);
    expect(users.acquire("rest:alice", 0)).toBe(first);
    expect(first.bucket.take(65_536, 0)).toBe(true);
    users.release("rest:alice");
    expect(users.acquire("rest:alice", 0).bucket).toBe(first.bucket);
    users.release("rest:alice");
    users.release("rest:alice");
    const again = users.acquire("rest:alice", 0);
    expect(again.id).not.toBe(first.id);
    expect(again.bucket.take(65_536, 0)).toBe(true);
  });
});

describe("bandwidth limits on RFC 6062 pipes", () => {
  it("pause a pipe for as long as it is over the limit, instead of dropping bytes", () => {
    const h = new Harness({ maxBytesPerSecond: 100_000 });
    const c = new TestClient(h, { connection: 9 });
    const tcp = (b: StunMessageBuilder) => {
      b.requestedTransport(TransportProtocol.Tcp);
    };
    c.learn(c.ask(c.build(Method.Allocate, tcp)));
    c.send(c.buildSigned(Method.Allocate, tcp));
    const [open] = h.expectOutputs([{ type: "open-relay" }]) as [OutputOf<"open-relay">];
    h.server.handleRelayBound(open.relay, h.now);
    h.expectOutputs([{ type: "transmit", errorCode: 0 }, { type: "allocation-created" }]);
    expect(c.createPermission(PEER).code).toBe(0);
    const id = h.server.handlePeerConnectionAccepted(open.relay, PEER, 6000, h.now)!;
    h.expectOutputs([{ type: "transmit", method: Method.ConnectionAttempt }]);
    // Not bound yet: nothing to charge.
    expect(h.server.chargeConnectionBytes(id, 1_000_000, h.now)).toBe(0);
    const data = new TestClient(h, { connection: 10, port: 40001 });
    data.nonce = c.nonce;
    data.send(
      data.buildSigned(Method.ConnectionBind, (b) => b.uint32(AttributeType.ConnectionId, id)),
    );
    h.expectOutputs([{ type: "transmit", errorCode: 0 }, { type: "bind-connection" }]);

    expect(h.server.chargeConnectionBytes(id, 100_000, h.now)).toBe(0);
    // 10,000 bytes over: 100 ms to pay them back at 100,000 bytes/s.
    expect(h.server.chargeConnectionBytes(id, 10_000, h.now)).toBe(100);
    expect(h.server.stats.bandwidthPauses).toBe(1);
    h.advance(0.1);
    expect(h.server.chargeConnectionBytes(id, 1000, h.now)).toBe(10);
    expect(h.server.chargeConnectionBytes(12345 as PeerConnectionId, 1000, h.now)).toBe(0);
    expect(h.server.stats.drops["bandwidth-limit"]).toBe(0);
  });
});

describe("bandwidth limits for a kernel data path (channel offload)", () => {
  it("name each entry's buckets: the allocation's id and the user's, with rate and burst", () => {
    const h = new Harness({
      channelOffload: true,
      maxBytesPerSecond: 125_000,
      maxBytesPerSecondPerUser: 1_000_000,
    });
    const a = new TestClient(h, { port: 1 });
    const b = new TestClient(h, { port: 2 });
    const bob = new TestClient(h, { port: 3, username: "bob" });
    for (const c of [a, b, bob]) expect(c.allocate().code).toBe(0);
    const [ea, eb, ebob] = [a, b, bob].map(offloadEntry);
    expect(ea.allocationBucket).toEqual({
      id: ea.allocation,
      bytesPerSecond: 125_000,
      burstBytes: 125_000,
    });
    expect(ea.userBucket).toEqual({
      id: expect.any(Number),
      bytesPerSecond: 1_000_000,
      burstBytes: 1_000_000,
    });
    expect(eb.allocationBucket?.id).toBe(eb.allocation);
    expect(eb.userBucket?.id).toBe(ea.userBucket?.id);
    expect(ebob.userBucket?.id).not.toBe(ea.userBucket?.id);
  });

  it("name no bucket without limits", () => {
    const h = new Harness({ channelOffload: true });
    const c = new TestClient(h);
    expect(c.allocate().code).toBe(0);
    const entry = offloadEntry(c);
    expect(entry.allocationBucket).toBeUndefined();
    expect(entry.userBucket).toBeUndefined();
  });
});

describe("bandwidth buckets", () => {
  it("charge the allocation's bucket first and refund it when the user's refuses", () => {
    const own = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 100_000 }, 0);
    const user = new TokenBucket({ bytesPerSecond: 1000, burstBytes: 70_000 }, 0);
    const both = new AllocationBandwidth(
      { bucket: own, ref: { id: 1, bytesPerSecond: 1000, burstBytes: 100_000 } },
      { bucket: user, ref: { id: 2, bytesPerSecond: 1000, burstBytes: 70_000 } },
    );
    expect(both.admit(80_000, 0)).toBe(false);
    expect(own.take(100_000, 0)).toBe(true);
  });

  it("refuse a limit that is not a positive number, naming the option", () => {
    const base = {
      realm: "r",
      credentials: { lookup: () => ({ ok: false, reason: "unknown-user" }) } as never,
      random: new SeededRandom(1),
      relayAddresses: { ip4: { bind: "127.0.0.1" } },
    };
    expect(() => new TurnServer({ ...base, maxBytesPerSecond: -1 })).toThrow(
      /maxBytesPerSecond must be a positive number/,
    );
    expect(() => new TurnServer({ ...base, maxBytesPerSecondPerUser: Number.NaN })).toThrow(
      /maxBytesPerSecondPerUser/,
    );
    expect(new TurnServer({ ...base, maxBytesPerSecond: 0 }).bandwidthLimits).toEqual({
      perAllocation: undefined,
      perUser: undefined,
    });
  });
});
