// fast-check properties of TurnServer: robustness to any bytes, permissions and policy on every
// route, retransmissions, quotas and pollTimeout under random operation sequences.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeChannelData } from "../src/codec/channel-data.js";
import { AttributeType, type MessageClass, Method } from "../src/codec/constants.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { connectionId, type RelayId } from "../src/ids.js";
import { formatIp, parseIp } from "../src/policy/ip.js";
import { RouteKind, type TurnServerOutput } from "../src/server/types.js";
import { Harness, PEER_POLICY, Response, type RouteSnapshot, TestClient } from "./harness.js";

const canonical = (ip: string) => formatIp(parseIp(ip)!);
const familyOf = (ip: string): 4 | 6 => (ip.includes(":") ? 6 : 4);

// ---------------------------------------------------------------------------------------------
// Any bytes

/** Raw bytes, STUN-shaped bytes (valid header, random attributes) and ChannelData-shaped bytes. */
const garbageArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 120 }),
  fc
    .tuple(
      fc.integer({ min: 0, max: 0xfff }),
      fc.constantFrom<MessageClass>(0, 1, 2, 3),
      fc.uint8Array({ minLength: 12, maxLength: 12 }),
      fc.array(
        fc.tuple(
          fc.oneof(
            fc.constantFrom(...Object.values(AttributeType)),
            fc.integer({ min: 0, max: 0xffff }),
          ),
          fc.uint8Array({ maxLength: 24 }),
        ),
        { maxLength: 6 },
      ),
      fc.boolean(),
    )
    .map(([method, cls, tid, attrs, fp]) => {
      const b = new StunMessageBuilder(method, cls, tid);
      for (const [t, v] of attrs) b.bytes(t, v);
      if (fp) b.fingerprint();
      return b.build();
    }),
  fc
    .tuple(
      fc.integer({ min: 0x4000, max: 0x7fff }),
      fc.uint8Array({ maxLength: 40 }),
      fc.integer({ min: -3, max: 3 }),
    )
    .map(([ch, data, skew]) => {
      const f = encodeChannelData(ch, data);
      const len = Math.max(0, data.length + skew);
      f[2] = len >> 8;
      f[3] = len & 0xff;
      return f;
    }),
);

function established() {
  const h = new Harness();
  const c = new TestClient(h);
  c.allocate();
  c.createPermission("198.51.100.1");
  c.channelBind(0x4000, "198.51.100.1", 5000);
  const t = new TestClient(h, { address: "192.0.2.20", connection: 5 });
  t.allocate();
  return { h, c, t };
}

function stateOf(h: Harness) {
  const s = h.server.stats;
  return [s.allocationsActive, s.allocationsCreated, s.permissionsActive, s.channelsActive];
}

describe("any byte string", () => {
  it("never throws and changes no state through handleUdpClient / handleStreamClient / handlePeerData", () => {
    const { h, c, t } = established();
    const before = stateOf(h);
    const relay = c.relayFor(4);
    fc.assert(
      fc.property(
        garbageArb,
        fc.integer({ min: 0, max: 5 }),
        fc.boolean(),
        (bytes, where, late) => {
          if (late) h.advance(0.001);
          const s = h.server;
          let kind: RouteKind;
          switch (where) {
            case 0:
              kind = s.handleUdpClient(c.listener, bytes, c.address, c.port, h.now);
              break;
            case 1:
              kind = s.handleUdpClient(c.listener, bytes, "192.0.2.99", 1234, h.now);
              break;
            case 2:
              kind = s.handleStreamClient(t.connection!, bytes, h.now);
              break;
            case 3:
              kind = s.handleStreamClient(connectionId(77), bytes, h.now);
              break;
            case 4:
              kind = s.handlePeerData(relay, bytes, "198.51.100.1", 5000, h.now);
              break;
            default:
              kind = s.handlePeerData(relay, bytes, "198.51.100.9", 5000, h.now);
          }
          for (const cmd of h.drain()) expect(cmd.type).toBe("transmit");
          expect(stateOf(h)).toEqual(before);
          // Only the bound channel (client side) or the permitted peer may route anything.
          if (kind === RouteKind.ToPeer) {
            expect(where === 0 || where === 2).toBe(true);
            expect(s.route.peerAddress).toBe("198.51.100.1");
          }
          if (kind === RouteKind.ToClient) expect(where).toBe(4);
          void t;
        },
      ),
      { numRuns: 3000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Random operation sequences with an observer that tracks what the server granted

const ALLOWED = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "2001:db8:beef::1"];
const DENIED = ["127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "::", "10.0.0.1", "203.0.113.5", "::1"];
const peerArb = fc.oneof(
  { arbitrary: fc.constantFrom(...ALLOWED), weight: 4 },
  { arbitrary: fc.constantFrom(...DENIED), weight: 1 },
);
const portArb = fc.constantFrom(5000, 5001);

type Op =
  | { op: "allocate"; i: number; dual: boolean }
  | { op: "refresh"; i: number; lifetime: number | undefined }
  | { op: "permission"; i: number; peers: string[] }
  | { op: "bind"; i: number; channel: number; peer: string; port: number }
  | { op: "channel-data"; i: number; channel: number }
  | { op: "send"; i: number; peer: string; port: number }
  | { op: "peer"; i: number; peer: string; port: number }
  | { op: "advance"; ms: number }
  | { op: "timeout" };

// Mostly client 0, so sequences build on one allocation; 1 (same user) and 2 test the quotas.
const iArb = fc.constantFrom(0, 0, 0, 1, 2);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({ op: fc.constant("allocate" as const), i: iArb, dual: fc.boolean() }),
    weight: 2,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("refresh" as const),
      i: iArb,
      lifetime: fc.option(fc.constantFrom(0, 600, 3600), { nil: undefined }),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("permission" as const),
      i: iArb,
      peers: fc.array(peerArb, { minLength: 1, maxLength: 2 }),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("bind" as const),
      i: iArb,
      channel: fc.constantFrom(0x4000, 0x4001, 0x4002),
      peer: peerArb,
      port: portArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("channel-data" as const),
      i: iArb,
      channel: fc.constantFrom(0x4000, 0x4001, 0x4002),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("send" as const),
      i: iArb,
      peer: peerArb,
      port: portArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("peer" as const),
      i: iArb,
      peer: peerArb,
      port: portArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("advance" as const),
      ms: fc.oneof(
        fc.constantFrom(1000, 299_999, 300_000, 600_000),
        fc.integer({ min: 1, max: 700_000 }),
      ),
    }),
    weight: 1,
  },
  { arbitrary: fc.constant({ op: "timeout" as const }), weight: 1 },
);

const QUOTAS = {
  maxAllocations: 2,
  maxAllocationsPerUser: 1,
  maxPermissionsPerAllocation: 2,
  maxChannelsPerAllocation: 1,
};

/** What the server told the clients it granted, as expiry instants. */
interface Granted {
  allocation: number; // 0 = none
  relays: Map<4 | 6, RelayId>;
  permissions: Map<string, number>;
  channels: Map<number, number>;
}

type OnRoute = (i: number, route: RouteSnapshot, granted: Granted, now: number) => void;

/** Run `ops`, handing every route to `onRoute` as it happens and checking `invariant` after each op. */
function runOps(
  ops: readonly Op[],
  invariant: (h: Harness, granted: Granted[], clients: TestClient[]) => void,
  onRoute: OnRoute = () => {},
): void {
  const h = new Harness({ ...QUOTAS, lifetimes: { nonce: 1e9 }, peerPolicy: PEER_POLICY() });
  const clients = [
    new TestClient(h, { address: "192.0.2.10", port: 1, username: "alice" }),
    new TestClient(h, { address: "192.0.2.10", port: 2, username: "alice" }),
    new TestClient(h, { address: "192.0.2.11", port: 1, username: "bob" }),
  ];
  for (const c of clients) c.learn(c.ask(c.build(Method.Refresh)));
  const granted: Granted[] = clients.map(() => ({
    allocation: 0,
    relays: new Map(),
    permissions: new Map(),
    channels: new Map(),
  }));
  const seen = (i: number, route: RouteSnapshot) => onRoute(i, route, granted[i]!, h.now);
  const ended = (commands: readonly TurnServerOutput[]) => {
    for (const cmd of commands) {
      if (cmd.type !== "allocation-ended") continue;
      const i = clients.findIndex(
        (c) => c.address === cmd.client.address && c.port === cmd.client.port,
      );
      // In place: an op may hold this client's record while its request runs overdue timers
      // (the server expires a lapsed allocation before answering the next request).
      const g = granted[i]!;
      g.allocation = 0;
      g.relays.clear();
      g.permissions.clear();
      g.channels.clear();
    }
  };
  const request = (i: number, method: number, fill: (b: StunMessageBuilder) => void) => {
    const c = clients[i]!;
    c.send(c.buildSigned(method, fill));
    const commands: TurnServerOutput[] = [];
    for (let batch = h.drain(); batch.length > 0; batch = h.drain()) {
      for (const cmd of batch) {
        commands.push(cmd);
        if (cmd.type === "open-relay") h.server.handleRelayBound(cmd.relay, h.now);
      }
    }
    ended(commands);
    const sent = commands.find((x) => x.type === "transmit") as { data: Uint8Array };
    return { r: new Response(sent.data), commands };
  };
  const peerAttr = (peer: string, port: number) => ({
    family: familyOf(peer),
    address: peer,
    port,
  });
  for (const op of ops) {
    const g = op.op === "advance" || op.op === "timeout" ? undefined : granted[op.i]!;
    switch (op.op) {
      case "allocate": {
        const { r, commands } = request(op.i, Method.Allocate, (b) => {
          b.requestedTransport(17);
          if (op.dual) b.addressFamily(AttributeType.AdditionalAddressFamily, 6);
        });
        if (r.code === 0) {
          g!.allocation = h.now + r.uint32(AttributeType.Lifetime)! * 1000;
          for (const cmd of commands)
            if (cmd.type === "open-relay") g!.relays.set(cmd.family, cmd.relay);
        }
        break;
      }
      case "refresh": {
        const { r } = request(op.i, Method.Refresh, (b) => {
          if (op.lifetime !== undefined) b.uint32(AttributeType.Lifetime, op.lifetime);
        });
        if (r.code === 0 && op.lifetime !== 0)
          g!.allocation = h.now + r.uint32(AttributeType.Lifetime)! * 1000;
        break;
      }
      case "permission": {
        const { r } = request(op.i, Method.CreatePermission, (b) => {
          for (const p of op.peers) b.xorAddress(AttributeType.XorPeerAddress, peerAttr(p, 0));
        });
        if (r.code === 0)
          for (const p of op.peers) g!.permissions.set(canonical(p), h.now + 300_000);
        break;
      }
      case "bind": {
        const { r } = request(op.i, Method.ChannelBind, (b) =>
          b
            .channelNumber(op.channel)
            .xorAddress(AttributeType.XorPeerAddress, peerAttr(op.peer, op.port)),
        );
        if (r.code === 0) {
          g!.permissions.set(canonical(op.peer), h.now + 300_000);
          g!.channels.set(op.channel, h.now + 600_000);
        }
        break;
      }
      case "channel-data":
        seen(op.i, clients[op.i]!.channelData(op.channel, Uint8Array.of(1)));
        break;
      case "send":
        seen(op.i, clients[op.i]!.sendIndication(op.peer, op.port, Uint8Array.of(2)));
        break;
      case "peer": {
        const relay = g!.relays.get(familyOf(op.peer));
        if (relay !== undefined) seen(op.i, h.peerData(relay, Uint8Array.of(3), op.peer, op.port));
        break;
      }
      case "advance":
        h.advance(op.ms / 1000);
        break;
      case "timeout":
        h.server.handleTimeout(h.now);
        ended(h.drain());
        break;
    }
    h.expectNoOutputs();
    invariant(h, granted, clients);
  }
}

const opsArb = fc.array(opArb, { minLength: 15, maxLength: 50 });
const live = (m: Map<unknown, number>, now: number) =>
  [...m.values()].filter((t) => t > now).length;

describe("random operation sequences", () => {
  it("never routes a byte to a peer without a live permission for that peer IP at that now", () => {
    let toPeer = 0;
    fc.assert(
      fc.property(opsArb, (ops) => {
        runOps(
          ops,
          () => {},
          (_i, route, granted, now) => {
            if (route.kind !== RouteKind.ToPeer) return;
            toPeer++;
            const until = granted.permissions.get(canonical(route.peerAddress)) ?? 0;
            expect(until, `permission for ${route.peerAddress}`).toBeGreaterThan(now);
            expect(granted.allocation).toBeGreaterThan(now);
          },
        );
      }),
      { numRuns: 150 },
    );
    expect(toPeer).toBeGreaterThan(0); // the generator does reach the data path
  });

  it("never routes to an address the peer policy denies", () => {
    const policy = PEER_POLICY();
    fc.assert(
      fc.property(opsArb, (ops) => {
        runOps(
          ops,
          () => {},
          (_i, route) => {
            if (route.kind === RouteKind.ToPeer)
              expect(policy.check(route.peerAddress)).toBeUndefined();
          },
        );
      }),
      { numRuns: 150 },
    );
  });

  it("holds the quotas (total, per user, permissions, channels) under any sequence", () => {
    fc.assert(
      fc.property(opsArb, (ops) => {
        runOps(ops, (h, granted, clients) => {
          const s = h.server.stats;
          expect(s.allocationsActive).toBeLessThanOrEqual(QUOTAS.maxAllocations);
          const alice = granted.filter(
            (g, i) => g.allocation > h.now && clients[i]!.username === "alice",
          );
          expect(alice.length).toBeLessThanOrEqual(QUOTAS.maxAllocationsPerUser);
          for (const g of granted) {
            expect(live(g.permissions, h.now)).toBeLessThanOrEqual(
              QUOTAS.maxPermissionsPerAllocation,
            );
            expect(live(g.channels, h.now)).toBeLessThanOrEqual(QUOTAS.maxChannelsPerAllocation);
          }
          expect(s.permissionsActive).toBeLessThanOrEqual(
            QUOTAS.maxPermissionsPerAllocation * s.allocationsActive,
          );
          expect(s.channelsActive).toBeLessThanOrEqual(
            QUOTAS.maxChannelsPerAllocation * s.allocationsActive,
          );
        });
      }),
      { numRuns: 150 },
    );
  });

  it("never sets pollTimeout later than the earliest expiry", () => {
    fc.assert(
      fc.property(opsArb, (ops) => {
        runOps(ops, (h, granted) => {
          const deadlines: number[] = [];
          for (const g of granted) {
            if (g.allocation <= h.now) continue;
            deadlines.push(g.allocation);
            for (const t of g.permissions.values()) if (t > h.now) deadlines.push(t);
            for (const t of g.channels.values()) if (t > h.now) deadlines.push(t);
          }
          if (deadlines.length === 0) return;
          const next = h.server.pollTimeout();
          expect(next).toBeDefined();
          expect(next!).toBeLessThanOrEqual(Math.min(...deadlines));
        });
      }),
      { numRuns: 150 },
    );
  });
});

describe("retransmissions (RFC 8489 §6.3.1, RFC 8656 §7.2)", () => {
  const requestArb = fc.oneof(
    fc.constant({
      method: Method.Allocate,
      fill: (b: StunMessageBuilder) => b.requestedTransport(17),
    }),
    fc.option(fc.constantFrom(0, 600, 1200), { nil: undefined }).map((l) => ({
      method: Method.Refresh,
      fill: (b: StunMessageBuilder) => (l === undefined ? b : b.uint32(AttributeType.Lifetime, l)),
    })),
    fc.constantFrom(...ALLOWED, ...DENIED).map((p) => ({
      method: Method.CreatePermission,
      fill: (b: StunMessageBuilder) =>
        b.xorAddress(AttributeType.XorPeerAddress, { family: familyOf(p), address: p, port: 0 }),
    })),
    fc
      .tuple(fc.integer({ min: 0x3fff, max: 0x4002 }), fc.constantFrom(...ALLOWED, ...DENIED))
      .map(([n, p]) => ({
        method: Method.ChannelBind,
        fill: (b: StunMessageBuilder) =>
          b
            .channelNumber(n)
            .xorAddress(AttributeType.XorPeerAddress, { family: familyOf(p), address: p, port: 9 }),
      })),
  );

  it("a retransmission yields a byte-identical response and changes nothing", () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        requestArb,
        fc.integer({ min: 0, max: 39_999 }),
        fc.integer({ min: 1, max: 3 }),
        (allocated, { method, fill }, delayMs, copies) => {
          const h = new Harness({ lifetimes: { nonce: 1e9 } });
          const c = new TestClient(h);
          if (allocated) c.allocate();
          else c.learn(c.ask(c.build(Method.Refresh)));
          const request = c.buildSigned(method, fill);
          c.send(request);
          let first: Uint8Array | undefined;
          for (let batch = h.drain(); batch.length > 0; batch = h.drain()) {
            for (const cmd of batch) {
              if (cmd.type === "open-relay") h.server.handleRelayBound(cmd.relay, h.now);
              if (cmd.type === "transmit") first = cmd.data;
            }
          }
          expect(first).toBeDefined();
          const state = stateOf(h);
          for (let k = 0; k < copies; k++) {
            h.advance(delayMs / 1000 / copies);
            c.send(request);
            const [again] = h.expectOutputs([{ type: "transmit" }]) as unknown as [
              { data: Uint8Array },
            ];
            expect(Buffer.from(again.data).equals(Buffer.from(first!))).toBe(true);
            expect(stateOf(h)).toEqual(state);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
