// Channel offload (TurnServerOptions.channelOffload): the server tells the runtime which
// channel bindings (RFC 8656 §12) it may relay in a kernel data path, until when, and when they
// end, in numbers; the entry is in place before the ChannelBind success leaves.
import { describe, expect, it } from "vitest";
import {
  CombinedCredentials,
  SharedSecretCredentials,
  StaticCredentials,
} from "../src/auth/credentials.js";
import { mintPinnedCredentials } from "../src/auth/pinned-username.js";
import { AttributeType, Method } from "../src/codec/constants.js";
import type { TurnServerOptions } from "../src/server/options.js";
import { RouteKind, type TurnServerOutput } from "../src/server/types.js";
import { Harness, type OutputOf, Response, TestClient, UNIX_T0, USERS } from "./harness.js";
import {
  allocateFill,
  channelBind,
  createPermission,
  type Entry,
  refresh,
} from "./offload-harness.js";

const P1 = "198.51.100.1";
const P2 = "198.51.100.2";
const P6 = "2001:db8:beef::1";
const S = 1000;

const types = (outputs: readonly TurnServerOutput[]) => outputs.map((o) => o.type);
const codeOf = (outputs: readonly TurnServerOutput[]) => {
  const sent = outputs.filter((o) => o.type === "transmit");
  expect(sent).toHaveLength(1);
  return new Response(sent[0]!.data).code;
};
const offered = (outputs: readonly TurnServerOutput[]) =>
  outputs.filter((o): o is Entry => o.type === "offload-channel");
const ended = (outputs: readonly TurnServerOutput[]) =>
  outputs.flatMap((o) => (o.type === "end-offload" ? [o.offload] : []));

function harness(options: Partial<TurnServerOptions> = {}): Harness {
  return new Harness({ channelOffload: true, lifetimes: { nonce: 1e9 }, ...options });
}

function allocated(options: Partial<TurnServerOptions> = {}, lifetime = 3600) {
  const h = harness(options);
  const c = new TestClient(h);
  c.allocate({ lifetime });
  return { h, c };
}

/** One successful ChannelBind: its entry, which came before the success. */
function bound(c: TestClient, channel: number, peer: string, port: number): Entry {
  const out = channelBind(c, channel, peer, port);
  expect(types(out)).toEqual(["offload-channel", "transmit"]);
  expect(codeOf(out)).toBe(0);
  return out[0] as Entry;
}

describe("channel offload: what an entry says", () => {
  it("queues the entry before the ChannelBind success, every field a number", () => {
    const h = harness();
    const c = new TestClient(h);
    // Allocated by hand, to give the relay socket a runtime handle.
    const udp = allocateFill(undefined, false);
    c.learn(c.ask(c.build(Method.Allocate, udp)));
    c.send(c.buildSigned(Method.Allocate, udp));
    const [open] = h.expectOutputs([{ type: "open-relay" }]) as [OutputOf<"open-relay">];
    h.server.handleRelayBound(open.relay, h.now, 77);
    const [, created] = h.expectOutputs([{ type: "transmit" }, { type: "allocation-created" }]) as [
      unknown,
      OutputOf<"allocation-created">,
    ];

    const out = channelBind(c, 0x4000, P1, 5000);
    expect(types(out)).toEqual(["offload-channel", "transmit"]);
    expect(codeOf(out)).toBe(0);
    expect(out[0]).toEqual({
      type: "offload-channel",
      offload: expect.any(Number),
      allocation: created.allocation,
      listener: 0,
      client: { family: 4, ip4: 0xc000020a, ip6: undefined, port: 40000 }, // 192.0.2.10
      channel: 0x4000,
      relay: open.relay,
      relayHandle: 77,
      relayed: { family: 4, ip4: 0x7f000001, ip6: undefined, port: open.port }, // 127.0.0.1
      peer: { family: 4, ip4: 0xc6336401, ip6: undefined, port: 5000 }, // 198.51.100.1
      // The permission's 300 s come before the channel's 600 and the allocation's (§9, §12).
      expiresAt: h.now + 300 * S,
    });
    // It says what the server's own data path does, both ways.
    expect(c.channelData(0x4000, Uint8Array.of(1))).toMatchObject({
      kind: RouteKind.ToPeer,
      relay: open.relay,
      peerAddress: P1,
      peerPort: 5000,
    });
    expect(h.peerData(open.relay, Uint8Array.of(2), P1, 5000)).toMatchObject({
      kind: RouteKind.ToClient,
      channel: 0x4000,
    });
  });

  it("gives IPv6 addresses as four big-endian words, and offers cross-family bindings too", () => {
    const h = harness();
    // An IPv4 client relaying to an IPv6 peer through its dual allocation: offered; whether a
    // kernel path handles that pair is the runtime's choice.
    const v4 = new TestClient(h);
    v4.allocate({ extra: (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 6) });
    expect(bound(v4, 0x4000, P6, 5000)).toMatchObject({
      client: { family: 4, ip4: 0xc000020a, ip6: undefined },
      relay: v4.relayFor(6),
      relayed: { family: 6, ip4: -1, ip6: Uint32Array.of(0, 0, 0, 1) }, // ::1
      peer: { family: 6, ip4: -1, ip6: Uint32Array.of(0x20010db8, 0xbeef0000, 0, 1), port: 5000 },
    });
    const v6 = new TestClient(h, { address: "2001:db8:c::11", username: "bob" });
    v6.allocate({ extra: (b) => b.addressFamily(AttributeType.RequestedAddressFamily, 6) });
    expect(bound(v6, 0x4000, P6, 5001)).toMatchObject({
      client: { family: 6, ip4: -1, ip6: Uint32Array.of(0x20010db8, 0xc0000, 0, 0x11) },
      relayed: { family: 6 },
      peer: { family: 6, port: 5001 },
    });
  });

  it("queues nothing of the kind without channelOffload (the default)", () => {
    const h = new Harness({ lifetimes: { nonce: 1e9 } });
    const c = new TestClient(h);
    c.allocate();
    expect(types(channelBind(c, 0x4000, P1, 5000))).toEqual(["transmit"]);
    expect(types(createPermission(c, P1))).toEqual(["transmit"]);
    h.tick(300);
    h.expectNoOutputs();
    expect(types(refresh(c, 0))).toEqual(["close-relay", "allocation-ended", "transmit"]);
  });
});

describe("channel offload: the deadline follows the engine's", () => {
  it("a re-bind keeps the entry's id and moves its deadline", () => {
    const { h, c } = allocated();
    const first = bound(c, 0x4000, P1, 5000);
    h.tick(100);
    const again = bound(c, 0x4000, P1, 5000);
    expect(again.offload).toBe(first.offload);
    expect(again.expiresAt).toBe(h.now + 300 * S);
  });

  it("CreatePermission moves the deadline of every channel to that IP, before its success", () => {
    const { h, c } = allocated();
    const a = bound(c, 0x4000, P1, 5000);
    const b = bound(c, 0x4001, P1, 5001);
    h.tick(100);
    const out = createPermission(c, P1);
    expect(types(out)).toEqual(["offload-channel", "offload-channel", "transmit"]);
    expect(offered(out).map((e) => [e.offload, e.expiresAt])).toEqual([
      [a.offload, h.now + 300 * S],
      [b.offload, h.now + 300 * S],
    ]);
    // A permission no channel depends on changes no entry.
    expect(types(createPermission(c, P2))).toEqual(["transmit"]);
  });

  it("a ChannelBind to another port of the same IP moves the first channel's deadline too", () => {
    const { h, c } = allocated();
    const a = bound(c, 0x4000, P1, 5000);
    h.tick(100);
    const out = channelBind(c, 0x4001, P1, 5001);
    expect(types(out)).toEqual(["offload-channel", "offload-channel", "transmit"]);
    const [moved, added] = offered(out);
    expect([moved!.offload, moved!.expiresAt]).toEqual([a.offload, h.now + 300 * S]);
    expect(added).toMatchObject({ channel: 0x4001, expiresAt: h.now + 300 * S });
  });

  it("ends the entry when the permission expires while the channel stays bound (RFC 8656 §9); a new permission offers it again under a new id", () => {
    const { h, c } = allocated();
    const first = bound(c, 0x4000, P1, 5000);
    h.tick(300);
    expect(ended(h.drain())).toEqual([first.offload]);
    expect(h.server.stats.channelsActive).toBe(1);
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["no-permission"]).toBe(1);

    const out = createPermission(c, P1);
    expect(types(out)).toEqual(["offload-channel", "transmit"]);
    const next = out[0] as Entry;
    expect(next.offload).not.toBe(first.offload);
    expect(next).toMatchObject({ channel: 0x4000, expiresAt: h.now + 300 * S });
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
  });

  it("ends the entry when the channel expires, though its permission lives on (RFC 8656 §12)", () => {
    const { h, c } = allocated();
    const entry = bound(c, 0x4000, P1, 5000);
    h.tick(250);
    expect(offered(createPermission(c, P1))[0]!.expiresAt).toBe(h.now + 300 * S);
    h.tick(250);
    // Now the channel's 600 s come first.
    expect(offered(createPermission(c, P1))[0]!.expiresAt).toBe(entry.expiresAt + 300 * S);
    h.tick(100);
    expect(ended(h.drain())).toEqual([entry.offload]);
    // The peer is still permitted: its data reaches the client as a Data indication.
    expect(h.peerData(c.relayFor(4), Uint8Array.of(1), P1, 5000)).toMatchObject({
      kind: RouteKind.ToClient,
      channel: 0,
    });
  });

  it("is bounded by the allocation's lifetime; Refresh moves every channel's deadline, before its success", () => {
    const { h, c } = allocated({}, 600);
    const allocatedUntil = h.now + 600 * S;
    h.tick(400);
    const a = bound(c, 0x4000, P1, 5000);
    const b = bound(c, 0x4001, P2, 5000);
    expect([a.expiresAt, b.expiresAt]).toEqual([allocatedUntil, allocatedUntil]);
    const out = refresh(c, 600);
    expect(types(out)).toEqual(["offload-channel", "offload-channel", "transmit"]);
    expect(offered(out).map((e) => [e.offload, e.expiresAt])).toEqual([
      [a.offload, h.now + 300 * S],
      [b.offload, h.now + 300 * S],
    ]);
    // A Refresh that moves no entry's deadline says nothing about them.
    expect(types(refresh(c, 600))).toEqual(["transmit"]);
  });

  it("stops at its deadline when the timer is late, and the timer that follows ends it", () => {
    const { h, c } = allocated();
    const entry = bound(c, 0x4000, P1, 5000);
    h.advance(300); // no timer yet
    expect(entry.expiresAt).toBe(h.now);
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    h.expectNoOutputs();
    h.server.handleTimeout(h.now);
    expect(ended(h.drain())).toEqual([entry.offload]);
  });

  it("ends the entry of a channel that lapsed and cooled down before a very late timer", () => {
    const { h, c } = allocated();
    const entry = bound(c, 0x4000, P1, 5000);
    h.advance(2000); // channel gone at 600 s, its cool-down over at 900 s
    h.server.handleTimeout(h.now);
    expect(ended(h.drain())).toEqual([entry.offload]);
    expect(h.server.stats.channelsActive).toBe(0);
  });

  it("offers a pair rebound during its cool-down again, under a new id", () => {
    const { h, c } = allocated();
    const first = bound(c, 0x4000, P1, 5000);
    h.tick(700);
    expect(ended(h.drain())).toEqual([first.offload]);
    const again = bound(c, 0x4000, P1, 5000);
    expect(again.offload).not.toBe(first.offload);
  });
});

describe("channel offload: every entry ends with its allocation", () => {
  /** An allocation with two offloaded channels bound near its end (it expires first). */
  function twoChannels() {
    const { h, c } = allocated({}, 600);
    h.tick(400);
    const entries = [bound(c, 0x4000, P1, 5000), bound(c, 0x4001, P2, 5000)];
    expect(entries.map((e) => e.expiresAt)).toEqual([h.now + 200 * S, h.now + 200 * S]);
    return { h, c, ids: entries.map((e) => e.offload) };
  }
  const endings: [string, (h: Harness, c: TestClient) => TurnServerOutput[]][] = [
    ["Refresh with LIFETIME 0", (_h, c) => refresh(c, 0)],
    [
      "expiry",
      (h) => {
        h.tick(200);
        return h.drain();
      },
    ],
    [
      "revocation",
      (h) => {
        h.server.setRevokedUsers(["alice"], h.now);
        return h.drain();
      },
    ],
    [
      "shutdown (closeAll, the end of a drain)",
      (h) => {
        h.server.startDraining();
        h.server.closeAll(h.now);
        return h.drain();
      },
    ],
  ];
  it.each(endings)(
    "%s: end-offload for each, before close-relay and allocation-ended",
    (_, end) => {
      const { h, c, ids } = twoChannels();
      const out = end(h, c);
      expect(types(out).slice(0, 4)).toEqual([
        "end-offload",
        "end-offload",
        "close-relay",
        "allocation-ended",
      ]);
      expect(ended(out)).toEqual(ids);
    },
  );

  it("a newer allocation taking the pinned port over ends the stale one's entries first", () => {
    const h = harness({
      credentials: new CombinedCredentials([
        new StaticCredentials(USERS),
        new SharedSecretCredentials(["platform-token"]),
      ]),
      pinnedPorts: { min: 40000, max: 40009 },
    });
    const pinned = (port: number) => {
      const creds = mintPinnedCredentials("platform-token", UNIX_T0, 3600, "acme-pg", 40007);
      return new TestClient(h, { port, username: creds.username, password: creds.password });
    };
    const stale = pinned(1);
    stale.allocate();
    const entry = bound(stale, 0x4000, P1, 5000);
    const fresh = pinned(2);
    const udp = allocateFill(undefined, false);
    fresh.learn(fresh.ask(fresh.build(Method.Allocate, udp)));
    fresh.send(fresh.buildSigned(Method.Allocate, udp));
    h.expectOutputs([
      { type: "end-offload", offload: entry.offload },
      { type: "close-relay", relay: stale.relayFor(4) },
      { type: "allocation-ended", reason: "taken-over" },
      { type: "open-relay", port: 40007 },
    ]);
  });

  it("a Refresh deleting one family of a dual allocation ends that family's entries only", () => {
    const d = new TestClient(harness());
    d.allocate({ extra: (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 6) });
    const v4 = bound(d, 0x4000, P1, 5000);
    const v6 = bound(d, 0x4001, P6, 5000);
    const out = refresh(d, 0, 6);
    expect(types(out)).toEqual(["end-offload", "close-relay", "transmit"]);
    expect(ended(out)).toEqual([v6.offload]);
    expect(v4.relay).toBe(d.relayFor(4));
    expect(d.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
  });
});

describe("channel offload: only what the server itself would relay over UDP", () => {
  it("never offers a TCP client's channels: ChannelData over TCP/TLS stays in userspace", () => {
    const h = harness();
    const t = new TestClient(h, { connection: 5 });
    t.allocate();
    expect(types(channelBind(t, 0x4000, P1, 5000))).toEqual(["transmit"]);
    expect(t.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
    h.tick(300);
    h.expectNoOutputs();
    expect(types(createPermission(t, P1))).toEqual(["transmit"]);
    h.server.handleConnectionClosed(t.connection!, h.now);
    expect(types(h.drain())).toEqual(["close-relay", "allocation-ended"]);
  });

  it("offers nothing for a peer the policy forbids, nor for a refused ChannelBind", () => {
    const { c } = allocated({ maxChannelsPerAllocation: 1 });
    for (const peer of ["203.0.113.9", "127.0.0.1", "10.0.0.1"]) {
      const out = channelBind(c, 0x4000, peer, 5000);
      expect([types(out), codeOf(out)]).toEqual([["transmit"], 403]);
    }
    bound(c, 0x4000, P1, 5000);
    const taken = channelBind(c, 0x4000, P2, 5000); // the number is bound to another peer
    expect([types(taken), codeOf(taken)]).toEqual([["transmit"], 400]);
    const full = channelBind(c, 0x4001, P2, 5000); // over maxChannelsPerAllocation
    expect([types(full), codeOf(full)]).toEqual([["transmit"], 508]);
  });

  it("answers a retransmitted ChannelBind from the cache, without a second entry", () => {
    const { h, c } = allocated();
    const request = c.buildSigned(Method.ChannelBind, (b) =>
      b.channelNumber(0x4000).xorAddress(AttributeType.XorPeerAddress, {
        family: 4,
        address: P1,
        port: 5000,
      }),
    );
    c.send(request);
    expect(types(h.drain())).toEqual(["offload-channel", "transmit"]);
    c.send(request);
    expect(types(h.drain())).toEqual(["transmit"]);
  });
});
