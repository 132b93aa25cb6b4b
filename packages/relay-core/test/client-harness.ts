/**
 * A seeded in-memory network for TurnClient against the real TurnServer (the quinn/str0m way):
 * bytes move between the two state machines through a queue with latency, and a `fate`
 * function can drop, duplicate or delay each datagram. The harness acknowledges the server's
 * open-relay outputs, plays the peers on the relayed side, and advances a virtual clock to
 * whichever of the two asks to be woken first.
 */
import { StaticCredentials } from "../src/auth/credentials.js";
import { TurnClient } from "../src/client/turn-client.js";
import type { TurnClientEvent, TurnClientOptions } from "../src/client/types.js";
import type { TransportAddress } from "../src/codec/address.js";
import { encodeChannelData } from "../src/codec/channel-data.js";
import {
  type ConnectionId,
  connectionId,
  listenerId,
  type PeerConnectionId,
  type RelayId,
} from "../src/ids.js";
import { PeerAddressPolicy } from "../src/policy/peer-address-policy.js";
import { SeededRandom } from "../src/rng.js";
import type { Lifetimes, TurnServerOptions } from "../src/server/options.js";
import { TurnServer } from "../src/server/server.js";
import { RouteKind, type TurnServerOutput } from "../src/server/types.js";

export const REALM = "turnpike.test";
export const USERNAME = "alice";
export const PASSWORD = "wonderland";
export const CLIENT = { address: "127.0.0.2", port: 40000 } as const;
export const PEER: TransportAddress = { family: 4, address: "127.0.0.3", port: 7000 };

export type Direction = "to-server" | "to-client";
/** What happens to the `seq`-th datagram in a direction: copies 0 drops it, 2 duplicates it. */
export type Fate = (direction: Direction, seq: number) => { copies: number; delay: number };

export interface HarnessOptions {
  readonly seed?: number | string;
  readonly transport?: "udp" | "tcp";
  readonly client?: Partial<TurnClientOptions>;
  readonly server?: Partial<TurnServerOptions>;
  readonly lifetimes?: Partial<Lifetimes>;
  readonly users?: readonly (readonly [string, string])[];
  /** One-way latency in ms (default 5). */
  readonly latency?: number;
  readonly fate?: Fate;
}

interface InFlight {
  readonly at: number;
  readonly seq: number;
  readonly direction: Direction;
  readonly bytes: Uint8Array;
}

export interface PeerDelivery {
  readonly at: number;
  readonly relayPort: number;
  readonly peer: TransportAddress;
  readonly payload: Uint8Array;
}

export interface ClientDelivery {
  readonly at: number;
  readonly peer: TransportAddress | undefined;
  readonly channel: number;
  readonly payload: Uint8Array;
}

interface RelayRecord {
  readonly port: number;
  open: boolean;
}

const CONNECTION = connectionId(1);
const LISTENER = listenerId(0);

export class Harness {
  now = 0;
  readonly server: TurnServer;
  readonly client: TurnClient;
  readonly transport: "udp" | "tcp";
  /** Every client event, with the instant it was drained. */
  readonly events: { at: number; event: TurnClientEvent }[] = [];
  readonly serverOutputs: { at: number; output: TurnServerOutput }[] = [];
  /** What the relay sent to peers. */
  readonly peerInbox: PeerDelivery[] = [];
  /** What the client's data path handed out. */
  readonly clientInbox: ClientDelivery[] = [];
  /** Every message the client transmitted (before the network's fate). */
  readonly sentByClient: { at: number; bytes: Uint8Array }[] = [];
  readonly relays = new Map<RelayId, RelayRecord>();
  /** RFC 6062 data connections: what the server wrote on each (connection id -> messages). */
  readonly dataInbox = new Map<ConnectionId, Uint8Array[]>();
  /** How the harness answers the server's connect-peer outputs (RFC 6062 §5.2). */
  connectOutcome: "connected" | "refused" | "silent" = "connected";
  private readonly queue: InFlight[] = [];
  private seq = 0;
  private readonly sent: Record<Direction, number> = { "to-server": 0, "to-client": 0 };
  private readonly latency: number;
  fate: Fate | undefined;

  constructor(options: HarnessOptions = {}) {
    const seed = options.seed ?? 1;
    this.transport = options.transport ?? "udp";
    this.latency = options.latency ?? 5;
    this.fate = options.fate;
    this.server = new TurnServer({
      realm: REALM,
      credentials: new StaticCredentials(options.users ?? [[USERNAME, PASSWORD]]),
      random: new SeededRandom(`server-${seed}`),
      relayAddresses: { ip4: { bind: "127.0.0.1" } },
      peerPolicy: new PeerAddressPolicy({ allowLoopback: true }),
      lifetimes: options.lifetimes,
      ...options.server,
    });
    this.client = new TurnClient({
      username: USERNAME,
      password: PASSWORD,
      random: new SeededRandom(`client-${seed}`),
      transport: this.transport,
      ...options.client,
    });
    if (this.transport === "tcp") {
      this.server.handleConnectionOpened(CONNECTION, LISTENER, "tcp", CLIENT.address, CLIENT.port);
    }
  }

  /** Client events of one type, in order. */
  eventsOf<T extends TurnClientEvent["type"]>(type: T): Extract<TurnClientEvent, { type: T }>[] {
    return this.events
      .map((e) => e.event)
      .filter((e): e is Extract<TurnClientEvent, { type: T }> => e.type === type);
  }

  /** The relayed port of the client's allocation, as the server opened it. */
  get relayPort(): number {
    const relayed = this.client.relayedAddress;
    if (relayed === undefined) throw new Error("not allocated");
    return relayed.port;
  }

  /** Run until `predicate` holds, or `limit` ms of virtual time pass (then false). */
  runUntil(predicate: () => boolean, limit = 120_000): boolean {
    const end = this.now + limit;
    this.pump();
    while (!predicate()) {
      if (!this.step(end)) return predicate();
    }
    return true;
  }

  /** Advance virtual time to `now + ms`, handling everything due on the way. */
  advance(ms: number): void {
    const end = this.now + ms;
    this.pump();
    while (this.step(end)) {
      // keep going
    }
    this.now = end;
  }

  /** A peer sends `payload` from `from` to the client's relayed address. */
  peerSends(payload: Uint8Array, from: TransportAddress = PEER): void {
    const port = this.relayPort;
    const relay = [...this.relays].find(([, r]) => r.port === port && r.open)?.[0];
    if (relay === undefined) return;
    const kind = this.server.handlePeerData(relay, payload, from.address, from.port, this.now);
    if (kind !== RouteKind.ToClient) return;
    const r = this.server.route;
    const data = r.data.subarray(r.start, r.end);
    const bytes =
      r.channel !== 0 ? encodeChannelData(r.channel, data, this.transport === "tcp") : data.slice();
    this.send("to-client", bytes);
    this.pump();
  }

  /** The client's runtime writes data bytes (ChannelData or a Send indication) to the server. */
  clientSends(bytes: Uint8Array): void {
    this.send("to-server", bytes);
  }

  /** RFC 6062 §4.3: the client's runtime opens a new TCP connection to the server. */
  openDataConnection(connection: ConnectionId, port: number): void {
    this.server.handleConnectionOpened(connection, LISTENER, "tcp", CLIENT.address, port);
    this.dataInbox.set(connection, []);
  }

  /** Write one frame on a data connection; the server's answers land in `dataInbox`. */
  writeData(connection: ConnectionId, bytes: Uint8Array): void {
    this.server.handleStreamClient(connection, bytes, this.now);
    this.pump();
  }

  /** A peer opens a TCP connection to the relayed address (RFC 6062 §5.3). */
  peerConnects(from: TransportAddress = PEER): PeerConnectionId | undefined {
    const port = this.relayPort;
    const relay = [...this.relays].find(([, r]) => r.port === port && r.open)?.[0];
    if (relay === undefined) return undefined;
    const id = this.server.handlePeerConnectionAccepted(relay, from.address, from.port, this.now);
    this.pump();
    return id;
  }

  /** Deliver what is due and fire timers up to `end`; false once nothing is left before it. */
  private step(end: number): boolean {
    const next = this.nextInstant();
    if (next === undefined || next > end) return false;
    this.now = Math.max(this.now, next);
    while (this.queue.length > 0 && this.queue[0]!.at <= this.now) {
      this.deliver(this.queue.shift()!);
      this.pump();
    }
    const clientAt = this.client.pollTimeout();
    if (clientAt !== undefined && clientAt <= this.now) this.client.handleTimeout(this.now);
    const serverAt = this.server.pollTimeout();
    if (serverAt !== undefined && serverAt <= this.now) this.server.handleTimeout(this.now);
    this.pump();
    return true;
  }

  private nextInstant(): number | undefined {
    let next = this.queue[0]?.at;
    for (const t of [this.client.pollTimeout(), this.server.pollTimeout()]) {
      if (t !== undefined && (next === undefined || t < next)) next = t;
    }
    return next;
  }

  /** Move every queued output of both machines onto the network. */
  pump(): void {
    for (let guard = 0; guard < 10_000; guard++) {
      let moved = false;
      for (let out = this.client.pollOutput(); out; out = this.client.pollOutput()) {
        if (out.type === "transmit") {
          this.sentByClient.push({ at: this.now, bytes: out.data });
          this.send("to-server", out.data);
        } else {
          this.events.push({ at: this.now, event: out });
        }
        moved = true;
      }
      for (let o = this.server.pollOutput(); o; o = this.server.pollOutput()) {
        this.serverOutputs.push({ at: this.now, output: o });
        this.execute(o);
        moved = true;
      }
      if (!moved) return;
    }
    throw new Error("harness: outputs never drained");
  }

  private execute(c: TurnServerOutput): void {
    switch (c.type) {
      case "transmit":
        if (c.client.transport !== "udp" && c.client.connection !== CONNECTION) {
          const inbox = this.dataInbox.get(c.client.connection) ?? [];
          inbox.push(c.data);
          this.dataInbox.set(c.client.connection, inbox);
          return;
        }
        this.send("to-client", c.data);
        return;
      case "connect-peer":
        if (this.connectOutcome === "connected") {
          this.server.handlePeerConnected(c.peerConnection, this.now);
        } else if (this.connectOutcome === "refused") {
          this.server.handlePeerConnectFailed(c.peerConnection, this.now);
        }
        return;
      case "open-relay":
        this.relays.set(c.relay, { port: c.port, open: true });
        this.server.handleRelayBound(c.relay, this.now);
        return;
      case "close-relay": {
        const r = this.relays.get(c.relay);
        if (r) r.open = false;
        return;
      }
      default:
        return;
    }
  }

  private send(direction: Direction, bytes: Uint8Array): void {
    const n = this.sent[direction]++;
    // TCP is reliable and ordered: no fate applies to it.
    const fate =
      this.transport === "udp" && this.fate ? this.fate(direction, n) : { copies: 1, delay: 0 };
    for (let i = 0; i < fate.copies; i++) {
      const at = this.now + this.latency + Math.max(0, fate.delay) + i;
      const item: InFlight = { at, seq: this.seq++, direction, bytes };
      // Stable insertion by (at, seq): equal instants keep their sending order.
      let k = this.queue.length;
      while (k > 0 && this.queue[k - 1]!.at > at) k--;
      this.queue.splice(k, 0, item);
    }
  }

  private deliver(item: InFlight): void {
    if (item.direction === "to-server") {
      const kind =
        this.transport === "udp"
          ? this.server.handleUdpClient(LISTENER, item.bytes, CLIENT.address, CLIENT.port, this.now)
          : this.server.handleStreamClient(CONNECTION, item.bytes, this.now);
      if (kind === RouteKind.ToPeer) {
        const r = this.server.route;
        const relay = this.relays.get(r.relay);
        this.peerInbox.push({
          at: this.now,
          relayPort: relay?.port ?? -1,
          peer: { family: 4, address: r.peerAddress, port: r.peerPort },
          payload: r.data.slice(r.start, r.end),
        });
      }
      return;
    }
    const data = this.client.handleInput(item.bytes, this.now);
    if (data !== undefined) {
      this.clientInbox.push({
        at: this.now,
        peer: data.peer,
        channel: data.channel,
        payload: data.bytes.slice(data.start, data.end),
      });
    }
  }
}

export function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function decodeText(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}
