/**
 * Tunnel lifecycles (src/lifecycle.ts) against relay-core's real TurnServer on an in-memory
 * network, in simulated time: both are sans-IO state machines, so minutes of credential ttls,
 * keep-alives, backoff windows and access windows run in milliseconds. The harness plays the
 * driver (tunnel.ts): it executes each tunnel's outputs (control datagrams with a latency,
 * credential fetches from a real CredentialSource on the simulated wall clock, control
 * connections that open at once, as a connected UDP socket does), acknowledges the relay's
 * open-relay commands, and advances the clock to whichever machine asks to be woken first.
 *
 * `relayUp = false` is a network partition (every datagram to or from the relay is lost, the
 * relay keeps its state); `restartRelay()` is a kill -9 (a new TurnServer, nothing remembered);
 * `kill(tunnel)` is a tunnel process killed (its allocation stays on the relay).
 */
import {
  type AllocationEndReason,
  AttributeType,
  decodeStun,
  listenerId,
  MessageClass,
  Method,
  PeerAddressPolicy,
  type RelayId,
  RouteKind,
  readString,
  readUint32,
  SeededRandom,
  SharedSecretCredentials,
  TurnServer,
  type TurnServerOptions,
} from "@turnpike/relay-core";
import { type CredentialSource, createCredentialSource } from "../src/credentials.js";
import {
  TunnelLifecycle,
  type TunnelLifecycleOptions,
  type TunnelOutput,
} from "../src/lifecycle.js";
import { PinClaims } from "../src/pins.js";

export const TOKEN = "lifecycle-secret";
export const REALM = "lifecycle.test";
/** Simulated time 0 on the wall clock: Wednesday 2 July 2025, 12:00 in Berlin (CEST). */
export const WALL_EPOCH = Date.UTC(2025, 6, 2, 10, 0, 0);
/** Relay ports only pinned credentials get (auth/pinned-username.ts). */
export const PINNED_PORTS = { min: 40_000, max: 40_099 } as const;
/** The one peer the tunnels allow, as the platform. */
export const PEER = { address: "127.0.0.1", port: 7000 } as const;
const RELAY_IP = "127.0.0.1";
const TUNNEL_IP = "127.0.0.2";

export interface SimTunnel {
  readonly name: string;
  readonly life: TunnelLifecycle;
  /** Every output in the order drained, with the instant. */
  readonly outputs: { at: number; output: TunnelOutput }[];
  /** Peer data that reached the tunnel (its data path would forward it to the target). */
  readonly received: { at: number; payload: Uint8Array }[];
  /** The instant of the last datagram from the relay. */
  lastFromRelay: number;
  /** The control socket's local port and the attempt it belongs to; undefined when closed. */
  port: number | undefined;
  attempt: number;
  /** false once killed: nothing drives it any more. */
  alive: boolean;
  readonly credentials: CredentialSource;
}

interface Task {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void | Promise<void>;
}

/** Events of one type from a tunnel's outputs, with their instants. */
export function outputsOf<T extends TunnelOutput["type"]>(
  t: SimTunnel,
  type: T,
): { at: number; output: Extract<TunnelOutput, { type: T }> }[] {
  return t.outputs.filter(
    (o): o is { at: number; output: Extract<TunnelOutput, { type: T }> } => o.output.type === type,
  );
}

/**
 * Every Refresh request a tunnel transmitted (retransmissions included), with its instant,
 * USERNAME and LIFETIME (0 = a release, RFC 8656 §8).
 */
export function refreshes(
  t: SimTunnel,
): { at: number; username: string | undefined; lifetime: number | undefined }[] {
  const out: { at: number; username: string | undefined; lifetime: number | undefined }[] = [];
  for (const { at, output } of outputsOf(t, "transmit")) {
    const d = decodeStun(output.bytes);
    if (!d.ok || d.message.method !== Method.Refresh) continue;
    if (d.message.messageClass !== MessageClass.Request) continue;
    out.push({
      at,
      username: readString(d.message, AttributeType.Username),
      lifetime: readUint32(d.message, AttributeType.Lifetime),
    });
  }
  return out;
}

export class TunnelNet {
  now = 0;
  server: TurnServer;
  /** false: a partition, every datagram to or from the relay is lost. */
  relayUp = true;
  /** One-way latency, ms. */
  latency = 5;
  /** Drops datagrams towards the tunnels while it returns true (the relay's answers lost). */
  loseToTunnel: (at: number) => boolean = () => false;
  readonly tunnels: SimTunnel[] = [];
  /** Why the relay ended allocations, in order. */
  readonly ended: { at: number; reason: AllocationEndReason }[] = [];
  /** One process's pin registry (a restarted process gets a new one: see addTunnel). */
  readonly pins = new PinClaims();
  private readonly tasks: Task[] = [];
  private seq = 0;
  private stepsAtThisInstant = 0;
  private nextPort = 50_000;
  private relaySeed = 0;
  /** Relay id -> relayed port, as the relay opened them. */
  private readonly relays = new Map<RelayId, number>();

  constructor(private readonly serverOptions: Partial<TurnServerOptions> = {}) {
    this.server = this.newServer();
  }

  /** The simulated wall clock (ms). */
  wall(): number {
    return WALL_EPOCH + this.now;
  }

  date(): Date {
    return new Date(this.wall());
  }

  /** TURN REST credentials minted from the relay's token (`--token`), `ttl` seconds. */
  restCredentials(user: string, ttl: number): CredentialSource {
    return createCredentialSource(
      { kind: "token", token: TOKEN, name: user, ttl },
      { nowMs: () => this.wall() },
    );
  }

  addTunnel(
    name: string,
    credentials: CredentialSource,
    options: Partial<TunnelLifecycleOptions> = {},
  ): SimTunnel {
    const life = new TunnelLifecycle({
      serviceName: name,
      relayIp: RELAY_IP,
      relayPort: 3478,
      family: 4,
      control: "udp",
      requestedTransport: "udp",
      allowedPeers: [PEER.address],
      random: new SeededRandom(`tunnel-${name}`),
      jitter: seededJitter(name),
      keepalive: 15,
      backoffBase: 0.5,
      backoffMax: 30,
      lifetime: 600,
      software: "lifecycle-test",
      pins: this.pins,
      ...options,
    });
    const t: SimTunnel = {
      name,
      life,
      credentials,
      outputs: [],
      received: [],
      lastFromRelay: 0,
      port: undefined,
      attempt: -1,
      alive: true,
    };
    this.tunnels.push(t);
    return t;
  }

  /** Calls `input` on the tunnel's machine at the current instant, then executes its outputs. */
  async act(t: SimTunnel, input: (life: TunnelLifecycle, now: number) => void): Promise<void> {
    input(t.life, this.now);
    await this.drain(t);
  }

  async start(t: SimTunnel): Promise<void> {
    await this.act(t, (life) => life.start());
  }

  /** kill -9 of the tunnel's process: no release, nothing drives it any more. */
  kill(t: SimTunnel): void {
    t.alive = false;
    t.port = undefined;
  }

  /** kill -9 of the relay and a fresh start on the same address: it remembers nothing. */
  restartRelay(): void {
    this.server = this.newServer();
    this.relays.clear();
  }

  /** A peer (the platform) sends `payload` to the tunnel's relayed address. */
  peerSends(t: SimTunnel, payload: Uint8Array): void {
    const port = t.life.relayedAddress?.port;
    const relay = [...this.relays].find(([, p]) => p === port)?.[0];
    if (relay === undefined) return;
    const kind = this.server.handlePeerData(relay, payload, PEER.address, PEER.port, this.now);
    if (kind === RouteKind.ToClient) {
      const r = this.server.route;
      // No channel is bound here (no data path): the relay sends a Data indication.
      this.toTunnel(r.client.port, r.data.slice(r.start, r.end));
    }
    this.drainServer();
  }

  /** Runs until `predicate` holds or `limit` ms of simulated time pass (then false). */
  async runUntil(predicate: () => boolean, limit: number): Promise<boolean> {
    const end = this.now + limit;
    while (!predicate()) {
      if (!(await this.step(end))) return predicate();
    }
    return true;
  }

  /** Advances simulated time by `ms`, handling everything due on the way. */
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    while (await this.step(end)) {
      // keep going
    }
    this.now = end;
  }

  // -------------------------------------------------------------------------------------------

  private newServer(): TurnServer {
    return new TurnServer({
      realm: REALM,
      credentials: new SharedSecretCredentials([TOKEN]),
      random: new SeededRandom(`relay-${this.relaySeed++}`),
      relayAddresses: { ip4: { bind: RELAY_IP } },
      pinnedPorts: PINNED_PORTS,
      peerPolicy: new PeerAddressPolicy({ allowLoopback: true }),
      unixTimeOffsetMs: WALL_EPOCH,
      ...this.serverOptions,
    });
  }

  private schedule(at: number, run: () => void | Promise<void>): void {
    const task: Task = { at, seq: this.seq++, run };
    let k = this.tasks.length;
    while (k > 0 && this.tasks[k - 1]!.at > at) k--;
    this.tasks.splice(k, 0, task);
  }

  private nextInstant(): number | undefined {
    let next = this.tasks[0]?.at;
    const consider = (at: number | undefined) => {
      if (at !== undefined && (next === undefined || at < next)) next = at;
    };
    for (const t of this.tunnels) if (t.alive) consider(t.life.pollTimeout());
    consider(this.server.pollTimeout());
    return next;
  }

  /** Handles the earliest instant with work, if it is at or before `end`. */
  private async step(end: number): Promise<boolean> {
    const next = this.nextInstant();
    if (next === undefined || next > end) return false;
    // A machine that keeps asking for the same instant without moving on is a bug: say so.
    this.stepsAtThisInstant = next > this.now ? 0 : this.stepsAtThisInstant + 1;
    if (this.stepsAtThisInstant > 10_000) throw new Error(`no progress at ${this.now} ms`);
    this.now = Math.max(this.now, next);
    while (this.tasks.length > 0 && this.tasks[0]!.at <= this.now) {
      await this.tasks.shift()!.run();
    }
    for (const t of this.tunnels) {
      const at = t.alive ? t.life.pollTimeout() : undefined;
      if (at !== undefined && at <= this.now)
        await this.act(t, (life, now) => life.handleTimeout(now));
    }
    const serverAt = this.server.pollTimeout();
    if (serverAt !== undefined && serverAt <= this.now) {
      this.server.handleTimeout(this.now);
      this.drainServer();
    }
    return true;
  }

  /** What tunnel.ts does: execute every output of the machine, in order. */
  private async drain(t: SimTunnel): Promise<void> {
    for (let o = t.life.pollOutput(); o !== undefined; o = t.life.pollOutput()) {
      t.outputs.push({ at: this.now, output: o });
      switch (o.type) {
        case "transmit":
          this.toRelay(t, o.bytes);
          break;
        case "fetch-credentials": {
          const attempt = o.attempt;
          this.schedule(this.now, async () => {
            if (!t.alive) return;
            try {
              const creds = await t.credentials.get();
              t.life.handleCredentials(attempt, creds, this.now, this.wall());
            } catch (err) {
              t.life.handleCredentialsFailed(attempt, (err as Error).message, this.now);
            }
            await this.drain(t);
          });
          break;
        }
        case "connect": {
          // A new socket: a new local port (a new 5-tuple for the relay).
          const attempt = o.attempt;
          t.port = this.nextPort++;
          t.attempt = attempt;
          this.schedule(this.now, () =>
            this.act(t, (life, now) => life.handleConnected(attempt, now)),
          );
          break;
        }
        case "disconnect":
          t.port = undefined;
          break;
        default:
          break;
      }
    }
  }

  private toRelay(t: SimTunnel, bytes: Uint8Array): void {
    const port = t.port;
    if (!this.relayUp || port === undefined) return;
    this.schedule(this.now + this.latency, () => {
      if (!this.relayUp) return;
      this.server.handleUdpClient(listenerId(0), bytes, TUNNEL_IP, port, this.now);
      this.drainServer();
    });
  }

  private toTunnel(port: number, bytes: Uint8Array): void {
    if (!this.relayUp) return;
    this.schedule(this.now + this.latency, async () => {
      if (!this.relayUp || this.loseToTunnel(this.now)) return;
      const t = this.tunnels.find((x) => x.alive && x.port === port);
      if (t === undefined) return;
      t.lastFromRelay = this.now;
      const attempt = t.attempt;
      await this.act(t, (life, now) => {
        const data = life.handleInput(attempt, bytes, now);
        if (data !== undefined) {
          t.received.push({ at: now, payload: data.bytes.slice(data.start, data.end) });
        }
      });
    });
  }

  private drainServer(): void {
    for (let c = this.server.pollOutput(); c !== undefined; c = this.server.pollOutput()) {
      switch (c.type) {
        case "transmit":
          this.toTunnel(c.client.port, c.data);
          break;
        case "open-relay":
          this.relays.set(c.relay, c.port);
          this.server.handleRelayBound(c.relay, this.now);
          break;
        case "close-relay":
          this.relays.delete(c.relay);
          break;
        case "allocation-ended":
          this.ended.push({ at: this.now, reason: c.reason });
          break;
        default:
          break;
      }
    }
  }
}

/** A replayable uniform source in [0, 1) per name (the backoff jitter). */
export function seededJitter(name: string): () => number {
  const r = new SeededRandom(`jitter-${name}`);
  return () => r.nextUint32() / 2 ** 32;
}

const hello = new TextEncoder().encode("hello from the platform");

/** Runs the network until `t` is ready (at most `limit` steps); throws with its last error. */
export async function ready(h: TunnelNet, t: SimTunnel, limit = 1000): Promise<void> {
  const ok = await h.runUntil(() => t.life.state === "ready", limit);
  if (!ok)
    throw new Error(`${t.name} not ready by ${h.now} ms: ${JSON.stringify(t.life.lastError)}`);
}

/** The relay still routes peer data to the tunnel's relayed address. */
export async function reachable(h: TunnelNet, t: SimTunnel): Promise<boolean> {
  const before = t.received.length;
  h.peerSends(t, hello);
  await h.advance(50);
  return t.received.length === before + 1;
}
