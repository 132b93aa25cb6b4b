// Model-based test (fc.commands): the server against a small reference model of allocations,
// permissions and channels, over random operations and a random clock. The clock advances
// without handleTimeout too (a late timer): what is expired at `now` must be gone at `now`.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { AttributeType, Method } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { RelayId } from "../src/ids.js";
import type { TurnServerOutput } from "../src/server/types.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, Response, TestClient } from "./harness.js";

const PEERS = ["198.51.100.1", "198.51.100.2", "2001:db8:beef::1"] as const;
const PORTS = [5000, 5001] as const;
const CHANNELS = [0x4000, 0x4001] as const;
const PERMISSION_MS = 300_000;
const CHANNEL_MS = 600_000;
const COOLDOWN_MS = 300_000;

interface ChannelModel {
  peer: string;
  port: number;
  expiresAt: number;
}

interface ClientModel {
  allocatedUntil: number; // 0: none
  relays: Map<4 | 6, RelayId>;
  permissions: Map<string, number>;
  channels: Map<number, ChannelModel>;
}

class Model {
  now: number;
  readonly clients: ClientModel[];
  constructor(now: number, n: number) {
    this.now = now;
    this.clients = Array.from({ length: n }, () => ({
      allocatedUntil: 0,
      relays: new Map(),
      permissions: new Map(),
      channels: new Map(),
    }));
  }
  alive(c: ClientModel): boolean {
    return c.allocatedUntil > this.now;
  }
  /** Forget what a late timer would have removed by now. */
  settle(): void {
    for (const c of this.clients) {
      if (c.allocatedUntil !== 0 && !this.alive(c)) this.free(c);
      for (const [ip, at] of c.permissions) if (at <= this.now) c.permissions.delete(ip);
      for (const [n, ch] of c.channels) {
        if (ch.expiresAt + COOLDOWN_MS <= this.now) c.channels.delete(n);
      }
    }
  }
  free(c: ClientModel): void {
    c.allocatedUntil = 0;
    c.relays.clear();
    c.permissions.clear();
    c.channels.clear();
  }
  /** Every future instant something changes by itself (what pollTimeout must not miss). */
  deadlines(): number[] {
    const out: number[] = [];
    for (const c of this.clients) {
      if (!this.alive(c)) continue;
      out.push(c.allocatedUntil);
      for (const at of c.permissions.values()) out.push(at);
      for (const ch of c.channels.values()) {
        out.push(ch.expiresAt > this.now ? ch.expiresAt : ch.expiresAt + COOLDOWN_MS);
      }
    }
    return out;
  }
}

interface Real {
  readonly h: Harness;
  readonly clients: TestClient[];
}

const familyOf = (ip: string): 4 | 6 => (ip.includes(":") ? 6 : 4);

/** Send a signed request and run the runtime's part: bind relays, collect what comes back. */
function exchange(
  real: Real,
  model: Model,
  i: number,
  method: number,
  fill: (b: StunMessageBuilder) => void,
) {
  const c = real.clients[i]!;
  c.send(c.buildSigned(method, fill));
  const commands: TurnServerOutput[] = [];
  for (;;) {
    const batch = real.h.drain();
    if (batch.length === 0) break;
    for (const cmd of batch) {
      commands.push(cmd);
      if (cmd.type === "open-relay") real.h.server.handleRelayBound(cmd.relay, real.h.now);
    }
  }
  const sent = commands.filter((x) => x.type === "transmit");
  expect(sent).toHaveLength(1);
  const response = c.verified(new Response((sent[0] as { data: Uint8Array }).data));
  // Endings are checked against the model before this request's own effect (a Refresh to 0).
  const before = new Model(model.now, 0);
  (before.clients as ClientModel[]).push(
    ...model.clients.map((x, j) => (j === i ? { ...x, relays: new Map() } : x)),
  );
  checkEndings(before, commands);
  return { response, commands };
}

/** allocation-ended / close-relay may only concern allocations the model says are over. */
function checkEndings(model: Model, commands: readonly TurnServerOutput[]): void {
  for (const cmd of commands) {
    if (cmd.type === "close-relay") {
      const owner = model.clients.find((c) => [...c.relays.values()].includes(cmd.relay));
      if (owner)
        expect(model.alive(owner), `closed relay ${cmd.relay} of a live allocation`).toBe(false);
    }
    expect(cmd.type).not.toBe("close-connection");
  }
}

const clamp = (lifetime: number | undefined) =>
  lifetime === undefined ? 600 : Math.max(600, Math.min(lifetime, 3600));

type Cmd = fc.Command<Model, Real>;

class AllocateCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly lifetime: number | undefined,
    readonly dual: boolean,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const { response, commands } = exchange(r, m, this.i, Method.Allocate, (b) => {
      b.requestedTransport(17);
      if (this.lifetime !== undefined) b.uint32(AttributeType.Lifetime, this.lifetime);
      if (this.dual) b.addressFamily(AttributeType.AdditionalAddressFamily, 6);
    });
    if (m.alive(c)) {
      expect(response.code).toBe(437);
      return;
    }
    expect(response.code).toBe(0);
    expect(response.uint32(AttributeType.Lifetime)).toBe(clamp(this.lifetime));
    m.free(c);
    c.allocatedUntil = m.now + clamp(this.lifetime) * 1000;
    for (const cmd of commands) if (cmd.type === "open-relay") c.relays.set(cmd.family, cmd.relay);
    expect(c.relays.size).toBe(this.dual ? 2 : 1);
  }
  toString = () => `Allocate(${this.i}, ${this.lifetime}, dual=${this.dual})`;
}

class RefreshCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly lifetime: number | undefined,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const { response } = exchange(r, m, this.i, Method.Refresh, (b) => {
      if (this.lifetime !== undefined) b.uint32(AttributeType.Lifetime, this.lifetime);
    });
    if (!m.alive(c)) {
      expect(response.code).toBe(437);
      return;
    }
    expect(response.code).toBe(0);
    if (this.lifetime === 0) {
      m.free(c);
      return;
    }
    c.allocatedUntil = m.now + clamp(this.lifetime) * 1000;
  }
  toString = () => `Refresh(${this.i}, ${this.lifetime})`;
}

class PermissionCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly peer: string,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const { response } = exchange(r, m, this.i, Method.CreatePermission, (b) =>
      b.xorAddress(AttributeType.XorPeerAddress, {
        family: familyOf(this.peer),
        address: this.peer,
        port: 0,
      }),
    );
    if (!m.alive(c)) return void expect(response.code).toBe(437);
    if (!c.relays.has(familyOf(this.peer))) return void expect(response.code).toBe(443);
    expect(response.code).toBe(0);
    c.permissions.set(this.peer, m.now + PERMISSION_MS);
  }
  toString = () => `CreatePermission(${this.i}, ${this.peer})`;
}

class ChannelBindCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly channel: number,
    readonly peer: string,
    readonly port: number,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const { response } = exchange(r, m, this.i, Method.ChannelBind, (b) =>
      b.channelNumber(this.channel).xorAddress(AttributeType.XorPeerAddress, {
        family: familyOf(this.peer),
        address: this.peer,
        port: this.port,
      }),
    );
    if (!m.alive(c)) return void expect(response.code).toBe(437);
    if (!c.relays.has(familyOf(this.peer))) return void expect(response.code).toBe(443);
    const byNumber = c.channels.get(this.channel);
    const byPeer = [...c.channels.entries()].find(
      ([, ch]) => ch.peer === this.peer && ch.port === this.port,
    );
    // RFC 8656 §12, §12.2: bound or cooling down, a number and a peer stay paired.
    if (
      (byNumber && (byNumber.peer !== this.peer || byNumber.port !== this.port)) ||
      (byPeer && byPeer[0] !== this.channel)
    ) {
      return void expect(response.code).toBe(400);
    }
    expect(response.code).toBe(0);
    c.channels.set(this.channel, {
      peer: this.peer,
      port: this.port,
      expiresAt: m.now + CHANNEL_MS,
    });
    c.permissions.set(this.peer, m.now + PERMISSION_MS);
  }
  toString = () =>
    `ChannelBind(${this.i}, ${this.channel.toString(16)}, ${this.peer}:${this.port})`;
}

class ChannelDataCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly channel: number,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const route = r.clients[this.i]!.channelData(this.channel, Uint8Array.of(1, 2, 3));
    r.h.expectNoOutputs();
    const ch = c.channels.get(this.channel);
    const permitted = ch !== undefined && (c.permissions.get(ch.peer) ?? 0) > m.now;
    if (m.alive(c) && ch && ch.expiresAt > m.now && permitted) {
      expect(route).toMatchObject({
        kind: RouteKind.ToPeer,
        peerAddress: ch.peer,
        peerPort: ch.port,
        relay: c.relays.get(familyOf(ch.peer)),
        start: 4,
        end: 7,
      });
    } else {
      expect(route.kind).toBe(RouteKind.None);
    }
  }
  toString = () => `ChannelData(${this.i}, ${this.channel.toString(16)})`;
}

class SendCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly peer: string,
    readonly port: number,
  ) {}
  check = () => true;
  run(m: Model, r: Real): void {
    m.settle();
    const c = m.clients[this.i]!;
    const route = r.clients[this.i]!.sendIndication(this.peer, this.port, Uint8Array.of(4, 5));
    r.h.expectNoOutputs();
    const ok =
      m.alive(c) &&
      c.relays.has(familyOf(this.peer)) &&
      (c.permissions.get(this.peer) ?? 0) > m.now;
    if (ok) {
      expect(route).toMatchObject({
        kind: RouteKind.ToPeer,
        peerAddress: this.peer,
        peerPort: this.port,
      });
      expect(Array.from(route.bytes)).toEqual([4, 5]);
    } else {
      expect(route.kind).toBe(RouteKind.None);
    }
  }
  toString = () => `Send(${this.i}, ${this.peer}:${this.port})`;
}

class PeerDataCmd implements Cmd {
  constructor(
    readonly i: number,
    readonly peer: string,
    readonly port: number,
  ) {}
  check = (m: Readonly<Model>) => m.clients[this.i]!.relays.size > 0;
  run(m: Model, r: Real): void {
    const relay =
      m.clients[this.i]!.relays.get(familyOf(this.peer)) ??
      [...m.clients[this.i]!.relays.values()][0]!;
    m.settle();
    const c = m.clients[this.i]!;
    const route = r.h.peerData(relay, Uint8Array.of(9), this.peer, this.port);
    r.h.expectNoOutputs();
    const ok =
      m.alive(c) &&
      c.relays.get(familyOf(this.peer)) === relay &&
      (c.permissions.get(this.peer) ?? 0) > m.now;
    if (!ok) return void expect(route.kind).toBe(RouteKind.None);
    expect(route.kind).toBe(RouteKind.ToClient);
    expect(route.client).toMatchObject({
      address: r.clients[this.i]!.address,
      port: r.clients[this.i]!.port,
    });
    const bound = [...c.channels.entries()].find(
      ([, ch]) => ch.peer === this.peer && ch.port === this.port && ch.expiresAt > m.now,
    );
    expect(route.channel).toBe(bound ? bound[0] : 0);
  }
  toString = () => `PeerData(${this.i}, ${this.peer}:${this.port})`;
}

class AdvanceCmd implements Cmd {
  constructor(readonly ms: number | "next-timeout") {}
  check = () => true;
  run(m: Model, r: Real): void {
    let to = typeof this.ms === "number" ? m.now + this.ms : (r.h.server.pollTimeout() ?? m.now);
    to = Math.max(to, m.now);
    m.now = to;
    r.h.now = to;
  }
  toString = () => `Advance(${this.ms})`;
}

class TimeoutCmd implements Cmd {
  check = () => true;
  run(m: Model, r: Real): void {
    r.h.server.handleTimeout(m.now);
    const commands = r.h.drain();
    checkEndings(m, commands);
    for (const cmd of commands) expect(["close-relay", "allocation-ended"]).toContain(cmd.type);
    m.settle();
    // With the timer run, the counters are exact.
    const live = m.clients.filter((c) => m.alive(c));
    const s = r.h.server.stats;
    expect(s.allocationsActive).toBe(live.length);
    expect(s.permissionsActive).toBe(live.reduce((n, c) => n + c.permissions.size, 0));
    expect(s.channelsActive).toBe(
      live.reduce(
        (n, c) => n + [...c.channels.values()].filter((ch) => ch.expiresAt > m.now).length,
        0,
      ),
    );
    // pollTimeout: after the timer, strictly in the future and never after a model deadline.
    const next = r.h.server.pollTimeout();
    const deadlines = m.deadlines().filter((t) => t > m.now);
    if (deadlines.length > 0) {
      expect(next).toBeDefined();
      expect(next!).toBeLessThanOrEqual(Math.min(...deadlines));
    }
    if (next !== undefined) expect(next).toBeGreaterThan(m.now);
  }
  toString = () => "Timeout";
}

const clientArb = fc.integer({ min: 0, max: 1 });
const peerArb = fc.constantFrom(...PEERS);
const portArb = fc.constantFrom(...PORTS);
const channelArb = fc.constantFrom(...CHANNELS);
const lifetimeArb = fc.option(fc.constantFrom(0, 1, 600, 900, 3600, 100_000), { nil: undefined });
const advanceArb = fc.oneof(
  fc.constantFrom(1, 999, 1000, 60_000, 299_999, 300_000, 300_001, 600_000, 900_000),
  fc.integer({ min: 1, max: 1_000_000 }),
  fc.constant("next-timeout" as const),
);

const commandsArb = fc.commands(
  [
    fc
      .tuple(
        clientArb,
        lifetimeArb.filter((l) => l !== 0),
        fc.boolean(),
      )
      .map(([i, l, d]) => new AllocateCmd(i, l, d)),
    fc.tuple(clientArb, lifetimeArb).map(([i, l]) => new RefreshCmd(i, l)),
    fc.tuple(clientArb, peerArb).map(([i, p]) => new PermissionCmd(i, p)),
    fc
      .tuple(clientArb, channelArb, peerArb, portArb)
      .map(([i, n, p, o]) => new ChannelBindCmd(i, n, p, o)),
    fc.tuple(clientArb, channelArb).map(([i, n]) => new ChannelDataCmd(i, n)),
    fc.tuple(clientArb, peerArb, portArb).map(([i, p, o]) => new SendCmd(i, p, o)),
    fc.tuple(clientArb, peerArb, portArb).map(([i, p, o]) => new PeerDataCmd(i, p, o)),
    advanceArb.map((ms) => new AdvanceCmd(ms)),
    fc.constant(new TimeoutCmd()),
  ],
  { maxCommands: 60 },
);

describe("model-based: TurnServer against a reference model", () => {
  it("agrees with the model of allocations, permissions and channels over random operations and clocks", () => {
    fc.assert(
      fc.property(commandsArb, (cmds) => {
        const h = new Harness({ lifetimes: { nonce: 1e9 } });
        const clients = [
          new TestClient(h, { address: "192.0.2.10", username: "alice" }),
          new TestClient(h, { address: "2001:db8:c::11", username: "bob" }),
        ];
        for (const c of clients) c.learn(c.ask(c.build(Method.Refresh)));
        const model = new Model(h.now, clients.length);
        fc.modelRun(() => ({ model, real: { h, clients } }), cmds);
      }),
      { numRuns: 300 },
    );
  });
});
