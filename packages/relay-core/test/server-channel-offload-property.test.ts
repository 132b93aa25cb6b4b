// Channel offload over random operation sequences (fc.commands) and a random clock, late
// timers included: after every step the runtime's entries (built only from the outputs) are
// exactly the channel bindings the server's own data path relays at `now`, both ways, each
// with the instant that data path stops as its deadline. No model stands between: the data
// path is fed a ChannelData and a peer datagram for every candidate (server-model.test.ts checks
// that data path against a reference model).
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeChannelData } from "../src/codec/channel-data.js";
import { MessageClass, Method } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import { connectionId, type RelayId } from "../src/ids.js";
import { DatagramSource } from "../src/server/datagram-source.js";
import {
  type NumericTransportAddress,
  RouteKind,
  type TurnServerOutput,
} from "../src/server/types.js";
import { Harness, TestClient } from "./harness.js";
import {
  allocateFill,
  channelBindFill,
  type Entry,
  OffloadView,
  permissionFill,
  refreshFill,
} from "./offload-harness.js";

/** Allowed peers (two ports each: two channels can share one permission), and a forbidden one. */
const PEERS = ["198.51.100.1", "198.51.100.2", "2001:db8:beef::1", "203.0.113.9"] as const;
const PORTS = [5000, 5001] as const;
const CHANNELS = [0x4000, 0x4001] as const;
/** Clients 0 and 1 are UDP (IPv4, IPv6); client 2 is TCP, which is never offloaded. */
const UDP_CLIENTS = [0, 1] as const;
const TCP_CONNECTION = connectionId(7);

interface Tally {
  offered: number;
  refreshed: number;
  endedByTimer: number;
  endedOtherwise: number;
}

interface Real {
  readonly h: Harness;
  readonly clients: readonly TestClient[];
  readonly view: OffloadView;
  /** Every relay socket each client was given (closed ones too: their datagrams must drop). */
  readonly relays: RelayId[][];
  readonly tally: Tally;
}

type Cmd = fc.Command<object, Real>;

/** A transport address in both forms: text for the harness, numbers for the data path. */
interface Endpoint {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
  readonly ip4: number;
  readonly ip6: readonly number[];
}

function endpoint(address: string, port: number): Endpoint {
  const s = new DatagramSource();
  s.setText(address, port);
  return { address, port, family: s.family, ip4: s.ip4, ip6: Array.from(s.ip6) };
}

const PEER_ENDPOINTS = PEERS.flatMap((p) => PORTS.map((port) => endpoint(p, port)));
const source = new DatagramSource();
const payload = Uint8Array.of(9, 9, 9);
const FRAMES = new Map<number, Uint8Array>(CHANNELS.map((n) => [n, encodeChannelData(n, payload)]));

function sameAddress(a: NumericTransportAddress, b: Endpoint): boolean {
  if (a.port !== b.port || a.family !== b.family) return false;
  if (a.family === 4) return a.ip4 === b.ip4;
  const w = a.ip6!;
  return w[0] === b.ip6[0] && w[1] === b.ip6[1] && w[2] === b.ip6[2] && w[3] === b.ip6[3];
}

/** An assertion cheap enough for the inner loops (expect() costs more than the probes). */
function must(condition: boolean, message: () => string): void {
  if (!condition) expect.fail(message());
}

/** Carry out outputs as a runtime does: in order, binding relay sockets as asked. */
function carryOut(real: Real, check?: (o: TurnServerOutput) => void): TurnServerOutput[] {
  const all: TurnServerOutput[] = [];
  for (let batch = real.h.drain(); batch.length > 0; batch = real.h.drain()) {
    real.view.apply(batch, (o) => {
      check?.(o);
      if (o.type === "offload-channel") {
        if (real.view.entries.has(o.offload)) real.tally.refreshed++;
        else real.tally.offered++;
      }
    });
    for (const o of batch) {
      all.push(o);
      if (o.type === "open-relay")
        real.h.server.handleRelayBound(o.relay, real.h.now, 1000 + o.relay);
    }
  }
  return all;
}

/**
 * A signed request from client `i`. What changes the runtime's entries comes before the
 * response; the success of a ChannelBind of `channel` finds its entry in place (UDP clients).
 */
function request(
  real: Real,
  i: number,
  method: number,
  fill: (b: StunMessageBuilder) => void,
  channel?: number,
): void {
  const c = real.clients[i]!;
  c.send(c.buildSigned(method, fill));
  let answered = false;
  const outputs = carryOut(real, (o) => {
    if (o.type === "transmit" && o.messageClass !== MessageClass.Indication) {
      answered = true;
      const udp = c.connection === undefined;
      if (channel !== undefined && udp && o.messageClass === MessageClass.SuccessResponse) {
        expect(
          real.view.live(real.h.now).some((e) => isClient(e, c) && e.channel === channel),
          "the entry is in place before the ChannelBind success",
        ).toBe(true);
      }
    }
    if (o.type === "offload-channel" || o.type === "end-offload") {
      expect(answered, `${o.type} after the response`).toBe(false);
    }
    if (o.type === "end-offload") real.tally.endedOtherwise++;
  });
  for (const o of outputs) {
    if (o.type === "open-relay") real.relays[i]!.push(o.relay);
  }
}

function isClient(e: Entry, c: TestClient): boolean {
  return e.listener === c.listener && sameAddress(e.client, endpointOf(c));
}

const endpoints = new WeakMap<TestClient, Endpoint>();
function endpointOf(c: TestClient): Endpoint {
  let e = endpoints.get(c);
  if (e === undefined) {
    e = endpoint(c.address, c.port);
    endpoints.set(c, e);
  }
  return e;
}

function setSource(e: Endpoint): DatagramSource {
  if (e.family === 4) return source.setIpv4(e.ip4, e.port);
  return source.setIpv6(e.ip6[0]!, e.ip6[1]!, e.ip6[2]!, e.ip6[3]!, e.port);
}

/** ChannelData `channel` from UDP client `c` at `at`: where the server's data path sends it. */
function clientProbe(real: Real, c: TestClient, channel: number, at: number) {
  const frame = FRAMES.get(channel)!;
  const from = setSource(endpointOf(c));
  return real.h.server.handleClientDatagram(c.listener, frame, 0, frame.length, from, at);
}

/** A datagram from `peer` to relay socket `relay` at `at`: the ChannelData channel, or 0. */
function peerProbe(real: Real, relay: RelayId, peer: Endpoint, at: number): number {
  const server = real.h.server;
  const from = setSource(peer);
  const kind = server.handlePeerDatagram(relay, payload, 0, payload.length, from, at);
  return kind === RouteKind.ToClient ? server.route.channel : 0;
}

/** The invariants, after every step. `caughtUp`: the timer (or a request) ran at `now`. */
function checkInvariants(real: Real, caughtUp: boolean): void {
  const { h, view, clients } = real;
  const server = h.server;
  const now = h.now;
  const live = view.live(now);
  const fromClients = new Set<number>();
  const fromPeers = new Set<number>();
  for (const i of UDP_CLIENTS) {
    const c = clients[i]!;
    // Client -> peer: ChannelData is relayed exactly where an entry says so, to its peer.
    for (const channel of CHANNELS) {
      const kind = clientProbe(real, c, channel, now);
      const entry = live.find((e) => isClient(e, c) && e.channel === channel);
      if (entry === undefined) {
        must(kind !== RouteKind.ToPeer, () => `client ${i} channel ${channel}: no entry`);
        continue;
      }
      const r = server.route;
      must(kind === RouteKind.ToPeer, () => `entry ${entry.offload}: the server drops it`);
      must(
        r.relay === entry.relay &&
          r.relayHandle === entry.relayHandle &&
          sameAddress(entry.peer, {
            address: r.peerAddress,
            port: r.peerPort,
            family: r.peerFamily,
            ip4: r.peerIp4,
            ip6: Array.from(r.peerIp6 ?? []),
          }),
        () => `entry ${entry.offload}: the server relays elsewhere`,
      );
      fromClients.add(entry.offload);
    }
    // Peer -> client: a peer datagram comes back as ChannelData exactly where an entry says so.
    for (const relay of real.relays[i]!) {
      for (const peer of PEER_ENDPOINTS) {
        const channel = peerProbe(real, relay, peer, now);
        const entry = live.find((e) => e.relay === relay && sameAddress(e.peer, peer));
        must(
          channel === (entry?.channel ?? 0),
          () => `relay ${relay} peer ${peer.address}:${peer.port}: channel ${channel}`,
        );
        if (entry === undefined) continue;
        must(server.route.client.port === c.port, () => "to another client");
        fromPeers.add(entry.offload);
      }
    }
  }
  // Every live entry is one of those: nothing for the TCP client or a forbidden peer.
  const ids = live.map((e) => e.offload).sort();
  expect([...fromClients].sort()).toEqual(ids);
  expect([...fromPeers].sort()).toEqual(ids);
  // The deadline is the engine's: relayed 1 ms before it, not at it, both ways.
  for (const e of live) {
    const c = clients.find((x) => isClient(e, x))!;
    const peer = PEER_ENDPOINTS.find((p) => sameAddress(e.peer, p))!;
    must(
      clientProbe(real, c, e.channel, e.expiresAt - 1) === RouteKind.ToPeer &&
        clientProbe(real, c, e.channel, e.expiresAt) !== RouteKind.ToPeer &&
        peerProbe(real, e.relay, peer, e.expiresAt - 1) === e.channel &&
        peerProbe(real, e.relay, peer, e.expiresAt) === 0,
      () => `entry ${e.offload}: the server's deadline is not ${e.expiresAt}`,
    );
  }
  // No allocation, no entry (closeAll, the last one revoked...).
  if (server.allocationCount === 0) expect(view.entries.size).toBe(0);
  // The runtime's cleanup is scheduled no later than any deadline it holds, and once the timer
  // ran no entry outlives its deadline in the map.
  const next = server.pollTimeout();
  for (const e of view.entries.values()) {
    expect(next).toBeDefined();
    expect(next!).toBeLessThanOrEqual(e.expiresAt);
    if (caughtUp) expect(e.expiresAt, `entry ${e.offload} left behind`).toBeGreaterThan(now);
  }
}

/** A signed request from client `i`, its outputs carried out, then the invariants. */
class RequestCmd implements Cmd {
  constructor(
    readonly label: string,
    readonly i: number,
    readonly method: number,
    readonly fill: (b: StunMessageBuilder) => void,
    /** A ChannelBind's channel, whose entry must precede the success. */
    readonly channel?: number,
  ) {}
  check = () => true;
  run(_: object, r: Real): void {
    request(r, this.i, this.method, this.fill, this.channel);
    checkInvariants(r, true);
  }
  toString = () => `${this.label}(${this.i})`;
}

const allocate = (i: number, lifetime: number | undefined, dual: boolean) =>
  new RequestCmd(
    `Allocate ${lifetime} dual=${dual}`,
    i,
    Method.Allocate,
    allocateFill(lifetime, dual),
  );
/** The clock moves and no timer runs (a late one): deadlines alone must hold the line. */
class AdvanceCmd implements Cmd {
  constructor(readonly ms: number | "next-timeout") {}
  check = () => true;
  run(_: object, r: Real): void {
    const to = typeof this.ms === "number" ? r.h.now + this.ms : r.h.server.pollTimeout();
    r.h.now = Math.max(to ?? r.h.now, r.h.now);
    checkInvariants(r, false);
  }
  toString = () => `Advance(${this.ms})`;
}

class TimeoutCmd implements Cmd {
  check = () => true;
  run(_: object, r: Real): void {
    r.h.server.handleTimeout(r.h.now);
    carryOut(r, (o) => {
      if (o.type === "end-offload") r.tally.endedByTimer++;
      expect(o.type).not.toBe("offload-channel");
    });
    checkInvariants(r, true);
  }
  toString = () => "Timeout";
}

/** An input that ends allocations (an operator's, or a closed connection), then the invariants. */
class EndingCmd implements Cmd {
  constructor(
    readonly label: string,
    readonly act: (r: Real) => void,
  ) {}
  check = () => true;
  run(_: object, r: Real): void {
    this.act(r);
    carryOut(r, (o) => {
      if (o.type === "end-offload") r.tally.endedOtherwise++;
    });
    checkInvariants(r, false);
  }
  toString = () => this.label;
}

/** Client `i`'s user is revoked (its allocation ends at once), then allowed again. */
const revoke = (i: number) =>
  new EndingCmd(`Revoke(${i})`, (r) => {
    r.h.server.setRevokedUsers([r.clients[i]!.username], r.h.now);
    r.h.server.setRevokedUsers([], r.h.now);
  });

/** The TCP client's connection closes (its allocation with it) and it connects again. */
const closeConnection = new EndingCmd("CloseConnection", (r) => {
  const c = r.clients[2]!;
  r.h.server.handleConnectionClosed(TCP_CONNECTION, r.h.now);
  r.h.server.handleConnectionOpened(TCP_CONNECTION, c.listener, "tcp", c.address, c.port);
});

/** Shutdown (what the end of a drain does): every allocation ends. */
const closeAll = new EndingCmd("CloseAll", (r) => r.h.server.closeAll(r.h.now));

/** Mostly the UDP clients, whose channels are offloaded. */
const clientArb = fc.constantFrom(0, 0, 1, 1, 2);
const peerArb = fc.constantFrom(...PEERS);
const lifetimeArb = fc.option(fc.constantFrom(0, 600, 900, 3600), { nil: undefined });
/** Steps around the 300 s of a permission and the 600 s of a channel, and long silences. */
const advanceArb = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(1, 1000, 60_000, 299_999, 300_000, 300_001, 600_000) },
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 200_000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 2_000_000 }) },
  { weight: 2, arbitrary: fc.constant("next-timeout" as const) },
);
const channelBindArb = fc
  .tuple(clientArb, fc.constantFrom(...CHANNELS), peerArb, fc.constantFrom(...PORTS))
  .map(
    ([i, n, p, o]) =>
      new RequestCmd(
        `ChannelBind ${n.toString(16)} ${p}:${o}`,
        i,
        Method.ChannelBind,
        channelBindFill(n, p, o),
        n,
      ),
  );

const commandsArb = fc.commands(
  [
    fc.oneof(
      {
        weight: 12,
        arbitrary: fc
          .tuple(clientArb, lifetimeArb, fc.boolean())
          .map(([i, l, d]) => allocate(i, l === 0 ? undefined : l, d)),
      },
      {
        weight: 6,
        arbitrary: fc
          .tuple(
            clientArb,
            lifetimeArb,
            fc.constantFrom(undefined, undefined, 4 as const, 6 as const),
          )
          .map(
            ([i, l, f]) =>
              new RequestCmd(`Refresh ${l} family=${f}`, i, Method.Refresh, refreshFill(l, f)),
          ),
      },
      {
        weight: 12,
        arbitrary: fc
          .tuple(clientArb, peerArb)
          .map(
            ([i, p]) =>
              new RequestCmd(
                `CreatePermission ${p}`,
                i,
                Method.CreatePermission,
                permissionFill(p),
              ),
          ),
      },
      { weight: 24, arbitrary: channelBindArb },
      { weight: 16, arbitrary: advanceArb.map((ms) => new AdvanceCmd(ms)) },
      { weight: 6, arbitrary: fc.constant(new TimeoutCmd()) },
      { weight: 1, arbitrary: clientArb.map(revoke) },
      { weight: 1, arbitrary: fc.constant(closeConnection) },
      { weight: 1, arbitrary: fc.constant(closeAll) },
    ),
  ],
  { maxCommands: 60, size: "medium" },
);

describe("channel offload: the runtime's entries are the server's own data path", () => {
  it("holds after every step of random operations and clocks, late timers included", () => {
    const tally: Tally = { offered: 0, refreshed: 0, endedByTimer: 0, endedOtherwise: 0 };
    fc.assert(
      fc.property(commandsArb, (cmds) => {
        const h = new Harness({ channelOffload: true, lifetimes: { nonce: 1e9 } });
        const clients = [
          new TestClient(h, { address: "192.0.2.10", username: "alice" }),
          new TestClient(h, { address: "2001:db8:c::11", username: "bob" }),
          new TestClient(h, { address: "192.0.2.30", username: "carol", connection: 7 }),
        ];
        for (const c of clients) c.learn(c.ask(c.build(Method.Refresh)));
        const real: Real = { h, clients, view: new OffloadView(), relays: [[], [], []], tally };
        // Every client starts with an allocation, so a run spends its steps on channels.
        for (const i of [0, 1, 2]) allocate(i, undefined, i === 0).run({}, real);
        fc.modelRun(() => ({ model: {}, real }), cmds);
      }),
      { numRuns: 200 },
    );
    // Not vacuous: entries were offered, moved and ended, by the timer and otherwise.
    // (Typical totals: ~400 offered, ~30 moved, ~20 ended by a timer, ~250 otherwise.)
    expect(tally.offered).toBeGreaterThan(100);
    expect(tally.refreshed).toBeGreaterThan(5);
    expect(tally.endedByTimer).toBeGreaterThan(0);
    expect(tally.endedOtherwise).toBeGreaterThan(50);
    // Bounded (200 runs of at most 60 steps) and CPU-bound: about 2 s, more on a loaded machine.
  }, 30_000);
});
