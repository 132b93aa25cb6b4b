// A tiny Firezone-style harness for TurnServer: feed inputs, assert the exact list of
// outputs (failing on any leftover), and play a TURN client with the codec.
import { expect } from "vitest";
import { type PasswordAlgorithmName, StaticCredentials } from "../src/auth/credentials.js";
import { longTermKeyMd5, longTermKeySha256 } from "../src/auth/long-term-key.js";
import {
  readBytes,
  readErrorCode,
  readString,
  readUint32,
  readXorAddress,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "../src/codec/attributes.js";
import { encodeChannelData } from "../src/codec/channel-data.js";
import {
  AttributeType,
  MessageClass,
  Method,
  PasswordAlgorithm,
  TransportProtocol,
} from "../src/codec/constants.js";
import { decodeStun, type StunMessage } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import {
  type ConnectionId,
  connectionId,
  type ListenerId,
  listenerId,
  type RelayId,
} from "../src/ids.js";
import { PeerAddressPolicy } from "../src/policy/peer-address-policy.js";
import { SeededRandom } from "../src/rng.js";
import type { TurnServerOptions } from "../src/server/options.js";
import { TurnServer } from "../src/server/server.js";
import type { ClientEndpoint, Route, RouteKind, TurnServerOutput } from "../src/server/types.js";

export const REALM = "turnpike.test";
export const SOFTWARE = "turnpike-test";
/** Monotonic ms at the start of every test (not 0, so "0 means unset" bugs show). */
export const T0 = 1_000_000;
/** Wall clock at T0: 2025-01-01T00:00:00Z, for TURN REST usernames. */
export const UNIX_T0 = 1_735_689_600;

/** Peers in the documentation ranges, allowed explicitly (the default policy denies them). */
export const PEER_POLICY = () =>
  new PeerAddressPolicy({ allow: ["198.51.100.0/24", "2001:db8:beef::/48"] });

export const USERS: readonly [string, string][] = [
  ["alice", "alice-pass"],
  ["bob", "bob-pass"],
  ["carol", "carol-pass"],
];

export type OutputOf<T extends TurnServerOutput["type"]> = Extract<TurnServerOutput, { type: T }>;

export class Harness {
  readonly server: TurnServer;
  now = T0;

  constructor(options: Partial<TurnServerOptions> = {}) {
    this.server = new TurnServer({
      realm: REALM,
      credentials: new StaticCredentials(USERS),
      random: new SeededRandom("harness"),
      relayAddresses: { ip4: { bind: "127.0.0.1" }, ip6: { bind: "::1" } },
      software: SOFTWARE,
      peerPolicy: PEER_POLICY(),
      unixTimeOffsetMs: UNIX_T0 * 1000 - T0,
      ...options,
    });
  }

  advance(seconds: number): void {
    this.now += seconds * 1000;
  }

  /** Advance and run the timer as the runtime would. */
  tick(seconds: number): void {
    this.advance(seconds);
    this.server.handleTimeout(this.now);
  }

  /** Every queued output, in order. */
  drain(): TurnServerOutput[] {
    const out: TurnServerOutput[] = [];
    for (let c = this.server.pollOutput(); c !== undefined; c = this.server.pollOutput()) {
      out.push(c);
    }
    return out;
  }

  /** The queued outputs must be exactly these (each matched with toMatchObject), no more. */
  expectOutputs(
    expected: readonly ({ type: TurnServerOutput["type"] } & Record<string, unknown>)[],
  ): TurnServerOutput[] {
    const got = this.drain();
    expect(
      got.map((c) => c.type),
      "output types",
    ).toEqual(expected.map((c) => c.type));
    for (let i = 0; i < got.length; i++) expect(got[i]).toMatchObject(expected[i]!);
    return got;
  }

  expectNoOutputs(): void {
    this.expectOutputs([]);
  }

  peerData(relay: RelayId, data: Uint8Array, address: string, port: number): RouteSnapshot {
    const kind = this.server.handlePeerData(relay, data, address, port, this.now);
    return snapshot(kind, this.server.route);
  }
}

/** A copy of the reused Route, with the routed bytes cut out. */
export interface RouteSnapshot {
  readonly kind: RouteKind;
  readonly relay: RelayId;
  readonly peerAddress: string;
  readonly peerPort: number;
  readonly client: ClientEndpoint | undefined;
  readonly channel: number;
  readonly bytes: Uint8Array;
  readonly start: number;
  readonly end: number;
  readonly data: Uint8Array;
}

export function snapshot(kind: RouteKind, r: Route): RouteSnapshot {
  return {
    kind,
    relay: r.relay,
    peerAddress: r.peerAddress,
    peerPort: r.peerPort,
    client: r.client,
    channel: r.channel,
    bytes: r.data.slice(r.start, r.end),
    start: r.start,
    end: r.end,
    data: r.data,
  };
}

/** A decoded response, with helpers; integrity verification is the caller's choice. */
export class Response {
  readonly msg: StunMessage;
  constructor(readonly bytes: Uint8Array) {
    const r = decodeStun(bytes);
    if (!r.ok) throw new Error(`server sent an undecodable message: ${r.error}`);
    this.msg = r.message;
  }
  /** 0 for a success response. */
  get code(): number {
    return this.msg.messageClass === MessageClass.ErrorResponse
      ? (readErrorCode(this.msg)?.code ?? -1)
      : 0;
  }
  xorAddress(type: number) {
    return readXorAddress(this.msg, type);
  }
  xorAddresses(type: number) {
    return this.msg.attributes
      .filter((a) => a.type === type)
      .map((a) => a.type)
      .map(() => readXorAddress(this.msg, type));
  }
  uint32(type: number) {
    return readUint32(this.msg, type);
  }
  string(type: number) {
    return readString(this.msg, type);
  }
  has(type: number): boolean {
    return this.msg.attributes.some((a) => a.type === type);
  }
}

export interface ClientOptions {
  readonly address?: string;
  readonly port?: number;
  readonly listener?: number;
  /** TCP client on this connection id (opened by the constructor); UDP when absent. */
  readonly connection?: number;
  readonly username?: string;
  readonly password?: string;
  readonly algorithm?: PasswordAlgorithmName;
}

export interface AllocateOptions {
  readonly extra?: (b: StunMessageBuilder) => void;
  readonly lifetime?: number;
}

/** A TURN client speaking through the harness: long-term credentials, nonce handling. */
export class TestClient {
  readonly address: string;
  readonly port: number;
  readonly listener: ListenerId;
  readonly connection: ConnectionId | undefined;
  username: string;
  password: string;
  readonly algorithm: PasswordAlgorithmName;
  nonce: string | undefined;
  offeredAlgorithms: Uint8Array | undefined;
  private readonly rng: SeededRandom;
  lastTransactionId = new Uint8Array(12);
  /** Relay socket ids from the last successful allocate (4 and/or 6). */
  relays: { family: 4 | 6; relay: RelayId; port: number }[] = [];

  constructor(
    readonly h: Harness,
    options: ClientOptions = {},
  ) {
    this.address = options.address ?? "192.0.2.10";
    this.port = options.port ?? 40000;
    this.listener = listenerId(options.listener ?? 0);
    this.connection =
      options.connection === undefined ? undefined : connectionId(options.connection);
    this.username = options.username ?? "alice";
    this.password = options.password ?? USERS.find(([u]) => u === this.username)?.[1] ?? "";
    this.algorithm = options.algorithm ?? "md5";
    this.rng = new SeededRandom(`${this.address}|${this.port}|${this.connection}|${this.username}`);
    if (this.connection !== undefined) {
      h.server.handleConnectionOpened(
        this.connection,
        this.listener,
        "tcp",
        this.address,
        this.port,
      );
    }
  }

  get family(): 4 | 6 {
    return this.address.includes(":") ? 6 : 4;
  }

  get key(): Uint8Array {
    return this.algorithm === "sha256"
      ? longTermKeySha256(this.username, REALM, this.password)
      : longTermKeyMd5(this.username, REALM, this.password);
  }

  newTransactionId(): Uint8Array {
    const tid = new Uint8Array(12);
    this.rng.fillBytes(tid);
    this.lastTransactionId = tid;
    return tid;
  }

  /** Raw bytes from this client's 5-tuple. */
  send(data: Uint8Array): RouteSnapshot {
    const s = this.h.server;
    const kind =
      this.connection === undefined
        ? s.handleUdpClient(this.listener, data, this.address, this.port, this.h.now)
        : s.handleStreamClient(this.connection, data, this.h.now);
    return snapshot(kind, s.route);
  }

  /** Send `data`; exactly one transmit must follow (and nothing else). */
  ask(data: Uint8Array): Response {
    this.send(data);
    const [cmd] = this.h.expectOutputs([{ type: "transmit" }]) as [OutputOf<"transmit">];
    this.expectToMe(cmd.client);
    return new Response(cmd.data);
  }

  expectToMe(client: ClientEndpoint): void {
    expect(client).toMatchObject({ address: this.address, port: this.port });
    if (this.connection !== undefined) expect(client.connection).toBe(this.connection);
  }

  /** An unauthenticated request of `method` (what a client sends first). */
  build(
    method: number,
    fill?: (b: StunMessageBuilder) => void,
    tid = this.newTransactionId(),
  ): Uint8Array {
    const b = new StunMessageBuilder(method, MessageClass.Request, tid);
    fill?.(b);
    return b.fingerprint().build();
  }

  /** An authenticated request with this client's credentials and current nonce. */
  buildSigned(
    method: number,
    fill?: (b: StunMessageBuilder) => void,
    tid = this.newTransactionId(),
  ): Uint8Array {
    const b = new StunMessageBuilder(method, MessageClass.Request, tid);
    fill?.(b);
    b.string(AttributeType.Username, this.username)
      .string(AttributeType.Realm, REALM)
      .string(AttributeType.Nonce, this.nonce ?? "no-nonce");
    if (this.algorithm === "sha256") {
      b.passwordAlgorithm(PasswordAlgorithm.Sha256);
      b.bytes(AttributeType.PasswordAlgorithms, this.offeredAlgorithms ?? new Uint8Array(0));
      b.messageIntegritySha256(this.key);
    } else {
      b.messageIntegrity(this.key);
    }
    return b.fingerprint().build();
  }

  /** Learn the nonce from a 401/438 (asserting REALM, NONCE and PASSWORD-ALGORITHMS). */
  learn(r: Response): void {
    expect(r.string(AttributeType.Realm)).toBe(REALM);
    const nonce = r.string(AttributeType.Nonce);
    expect(nonce).toBeDefined();
    this.nonce = nonce;
    this.offeredAlgorithms = readBytes(r.msg, AttributeType.PasswordAlgorithms)?.slice();
  }

  /** The 401 dance when needed; returns the response to the authenticated request. */
  request(method: number, fill?: (b: StunMessageBuilder) => void): Response {
    if (this.nonce === undefined) {
      const challenge = this.ask(this.build(method, fill));
      expect(challenge.code).toBe(401);
      this.learn(challenge);
    }
    let r = this.ask(this.buildSigned(method, fill));
    if (r.code === 438) {
      // The nonce went stale (RFC 8489 §9.2.4): take the fresh one and try once more.
      this.learn(r);
      r = this.ask(this.buildSigned(method, fill));
    }
    return this.verified(r);
  }

  /** Responses to authenticated requests are signed with our key (RFC 8489 §9.2.4). */
  verified(r: Response): Response {
    if (r.code === 401 || r.code === 438 || r.code === 400) return r;
    const ok =
      this.algorithm === "sha256"
        ? verifyMessageIntegritySha256(r.msg, this.key)
        : verifyMessageIntegrity(r.msg, this.key);
    expect(ok, `integrity of a ${r.code || "success"} response`).toBe(true);
    return r;
  }

  /**
   * Allocate a UDP relay: the request yields exactly the open-relay output(s); bound, the
   * success and allocation-created follow. Returns the success response.
   */
  allocate(options: AllocateOptions = {}): Response {
    const fill = (b: StunMessageBuilder) => {
      b.requestedTransport(TransportProtocol.Udp);
      if (options.lifetime !== undefined) b.uint32(AttributeType.Lifetime, options.lifetime);
      options.extra?.(b);
    };
    if (this.nonce === undefined) {
      const challenge = this.ask(this.build(Method.Allocate, fill));
      expect(challenge.code).toBe(401);
      this.learn(challenge);
    }
    this.send(this.buildSigned(Method.Allocate, fill));
    let outputs = this.h.drain();
    const first = outputs[0];
    if (outputs.length === 1 && first?.type === "transmit") {
      const r = new Response(first.data);
      if (r.code === 438) {
        this.learn(r);
        this.send(this.buildSigned(Method.Allocate, fill));
        outputs = this.h.drain();
      }
    }
    expect(outputs.length).toBeGreaterThan(0);
    if (outputs[0]!.type === "transmit") {
      // Refused at once (quota, family, draining...): the only output.
      expect(outputs.map((c) => c.type)).toEqual(["transmit"]);
      return this.verified(new Response((outputs[0] as OutputOf<"transmit">).data));
    }
    for (const c of outputs) expect(c.type).toBe("open-relay");
    const opens = outputs as OutputOf<"open-relay">[];
    for (const o of opens) this.h.server.handleRelayBound(o.relay, this.h.now);
    const [sent, created] = this.h.expectOutputs([
      { type: "transmit" },
      { type: "allocation-created" },
    ]) as [OutputOf<"transmit">, OutputOf<"allocation-created">];
    this.expectToMe(sent.client);
    const r = this.verified(new Response(sent.data));
    expect(r.code).toBe(0);
    expect(created.username).toBe(this.username);
    this.relays = opens.map((o) => ({ family: o.family, relay: o.relay, port: o.port }));
    return r;
  }

  relayFor(family: 4 | 6 = 4): RelayId {
    const r = this.relays.find((x) => x.family === family);
    if (!r) throw new Error(`no IPv${family} relay`);
    return r.relay;
  }

  refresh(lifetime?: number): Response {
    return this.request(Method.Refresh, (b) => {
      if (lifetime !== undefined) b.uint32(AttributeType.Lifetime, lifetime);
    });
  }

  createPermission(...peers: string[]): Response {
    return this.request(Method.CreatePermission, (b) => {
      for (const p of peers) {
        b.xorAddress(AttributeType.XorPeerAddress, {
          family: p.includes(":") ? 6 : 4,
          address: p,
          port: 0,
        });
      }
    });
  }

  channelBind(channel: number, peer: string, port: number): Response {
    return this.request(Method.ChannelBind, (b) =>
      b.channelNumber(channel).xorAddress(AttributeType.XorPeerAddress, {
        family: peer.includes(":") ? 6 : 4,
        address: peer,
        port,
      }),
    );
  }

  /** A Send indication (RFC 8656 §11.2): unauthenticated, answered by nothing. */
  sendIndication(peer: string, port: number, data: Uint8Array): RouteSnapshot {
    const b = new StunMessageBuilder(Method.Send, MessageClass.Indication, this.newTransactionId())
      .xorAddress(AttributeType.XorPeerAddress, {
        family: peer.includes(":") ? 6 : 4,
        address: peer,
        port,
      })
      .bytes(AttributeType.Data, data);
    return this.send(b.build());
  }

  channelData(channel: number, data: Uint8Array): RouteSnapshot {
    // Over TCP the StreamFramer has already cut the stream padding off (RFC 8656 §12.5).
    return this.send(encodeChannelData(channel, data));
  }
}
