/**
 * The TURN client state machine (RFC 8656 client side, RFC 6062 §4 for TCP relaying): one
 * allocation on one server, sans-IO. Bytes from the server and `now` go in; bytes to send,
 * events and the next timeout come out; the data path returns byte ranges, not events.
 *
 * Call order for a runtime (the same as the server's, see README.md): after any `handle*` or
 * API call, drain `pollOutput()` (write each "transmit" to the control connection, act on each
 * event), then arm one timer at `pollTimeout()` and call `handleTimeout(now)` when it fires.
 */
import { longTermKeyMd5 } from "../auth/long-term-key.js";
import type { TransportAddress } from "../codec/address.js";
import { CHANNEL_DATA_HEADER_LENGTH, encodeChannelData } from "../codec/channel-data.js";
import {
  AttributeType,
  ErrorCode,
  MAX_CHANNEL,
  MessageClass,
  Method,
  MIN_CHANNEL,
  TransportProtocol,
} from "../codec/constants.js";
import {
  bytesKey,
  decodeStun,
  getAttribute,
  hasAttribute,
  readAddress,
  readErrorCode,
  readString,
  readUint32,
  readXorAddress,
  type StunMessage,
  StunMessageBuilder,
  verifyMessageIntegrity,
} from "../codec/message.js";
import type { PeerConnectionId } from "../ids.js";
import { formatIp, parseIp } from "../policy/ip.js";
import type { RandomSource } from "../rng.js";
import {
  type RetransmissionTiming,
  retransmissionTiming,
  TransactionClock,
} from "./transaction.js";
import type {
  ConnectionBindResult,
  TurnClientEvent,
  TurnClientOptions,
  TurnClientOutput,
  TurnClientState,
  TurnClientStats,
  TurnData,
} from "./types.js";

/** RFC 8656 §7.2: the server's default when it sends no LIFETIME. */
const DEFAULT_ALLOCATION_LIFETIME = 600;
/** RFC 8656 §12: a channel number stays reserved 5 minutes after its binding expires. */
const CHANNEL_LIFETIME_MS = 600_000;
const CHANNEL_COOLDOWN_MS = 300_000;
/** ConnectionBind requests remembered for their answers (RFC 6062 §4.3), oldest evicted. */
const MAX_PENDING_CONNECTION_BINDS = 1024;

interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** What a request was signed with, to check the response's MESSAGE-INTEGRITY (RFC 8489 §9.2.5). */
interface Signature {
  readonly credentials: Credentials;
  readonly key: Uint8Array;
}

interface PermissionState {
  /** Canonical text (RFC 5952 for IPv6). */
  readonly ip: string;
  readonly family: 4 | 6;
  /** Asked for with createPermission (as opposed to only implied by channels). */
  explicit: boolean;
  /** Wanted channels to peers at this IP: ChannelBind needs the permission kept alive. */
  channels: number;
  created: boolean;
  inFlight: boolean;
  refreshAt: number;
}

interface ChannelState {
  readonly number: number;
  readonly peer: TransportAddress;
  readonly peerKey: string;
  readonly ip: string;
  wanted: boolean;
  bound: boolean;
  inFlight: boolean;
  refreshAt: number;
  /** When the server's binding ends if not refreshed (0 before the first success). */
  expiresAt: number;
}

type Operation =
  | { readonly kind: "allocate" }
  | { readonly kind: "refresh"; readonly lifetime: number | undefined }
  | { readonly kind: "release" }
  | { readonly kind: "permission"; readonly permission: PermissionState }
  | { readonly kind: "channel"; readonly channel: ChannelState }
  | { readonly kind: "connect"; readonly peer: TransportAddress }
  | { readonly kind: "binding" };

interface Transaction {
  readonly key: string;
  readonly method: number;
  readonly op: Operation;
  readonly bytes: Uint8Array;
  readonly signature: Signature | undefined;
  readonly clock: TransactionClock;
  /** Answers that made us send the request again with a new transaction (bounded). */
  readonly staleRetries: number;
  readonly challengeRetries: number;
}

interface PendingConnectionBind {
  readonly connectionId: PeerConnectionId;
  readonly signature: Signature | undefined;
  readonly retried: boolean;
}

export class TurnClient {
  readonly stats: TurnClientStats = { requests: 0, retransmissions: 0, timeouts: 0, dropped: 0 };
  /** The data-path view returned by `handleInput` / `decodeData`; reused for every packet. */
  readonly data: TurnData = {
    peer: undefined,
    channel: 0,
    bytes: new Uint8Array(0),
    start: 0,
    end: 0,
  };

  #state: TurnClientState = "idle";
  #relayed: TransportAddress | undefined;
  #mapped: TransportAddress | undefined;
  #lastActivity: number | undefined;
  /** Seconds granted by the last Allocate/Refresh success. */
  #lifetime = 0;

  readonly #options: TurnClientOptions;
  readonly #random: RandomSource;
  readonly #timing: RetransmissionTiming;
  readonly #requestedTransport: "udp" | "tcp";
  readonly #maxStaleRetries: number;
  readonly #permissionRefreshMs: number;
  readonly #channelRefreshMs: number;
  readonly #keepaliveMs: number;

  #credentials: Credentials;
  /**
   * The credentials that created the allocation (or that the server accepted in a later
   * Refresh), used again after a 441 (RFC 8656 §7).
   */
  #allocationCredentials: Credentials | undefined;
  #pinnedToAllocationCredentials = false;
  #realm: string | undefined;
  #nonce: string | undefined;
  #keyCache: { username: string; realm: string; password: string; key: Uint8Array } | undefined;

  readonly #transactions = new Map<string, Transaction>();
  readonly #permissions = new Map<string, PermissionState>();
  readonly #channels = new Map<number, ChannelState>();
  readonly #channelsByPeer = new Map<string, ChannelState>();
  #nextChannel = MIN_CHANNEL;
  readonly #pendingConnectionBinds = new Map<string, PendingConnectionBind>();

  #refreshAt = Number.POSITIVE_INFINITY;
  #lastRequestAt = 0;
  /** pollTimeout's answer, recomputed only after a control-path change (not per data packet). */
  #timeout: number | undefined;
  #timeoutDirty = true;

  /** Transmits and events, in the order they happened (drained with pollOutput). */
  readonly #outputs: TurnClientOutput[] = [];
  #outputHead = 0;

  constructor(options: TurnClientOptions) {
    this.#requestedTransport = options.requestedTransport ?? "udp";
    if (this.#requestedTransport === "tcp" && options.transport === "udp") {
      // RFC 6062 §4.1: TCP allocations are requested over a TCP or TLS control connection.
      throw new Error("requestedTransport tcp needs a tcp or tls control connection");
    }
    this.#options = options;
    this.#random = options.random;
    this.#credentials = { username: options.username, password: options.password };
    this.#realm = options.realm;
    this.#timing = retransmissionTiming(options.transport !== "udp", options.retransmission);
    this.#maxStaleRetries = Math.max(0, options.maxStaleNonceRetries ?? 3);
    this.#permissionRefreshMs = seconds(options.permissionRefreshInterval, 240);
    this.#channelRefreshMs = seconds(options.channelRefreshInterval, 540);
    const keepalive = options.keepaliveInterval ?? (options.transport === "udp" ? 15 : 30);
    this.#keepaliveMs = Number.isFinite(keepalive) && keepalive > 0 ? keepalive * 1000 : 0;
  }

  // -------------------------------------------------------------------------------------------
  // State a runtime reads

  get state(): TurnClientState {
    return this.#state;
  }

  /** XOR-RELAYED-ADDRESS once allocated. */
  get relayedAddress(): TransportAddress | undefined {
    return this.#relayed;
  }

  /** XOR-MAPPED-ADDRESS from the Allocate success (our public address). */
  get mappedAddress(): TransportAddress | undefined {
    return this.#mapped;
  }

  /** `now` of the last valid input from the server: a runtime's dead-server detector reads it. */
  get lastActivity(): number | undefined {
    return this.#lastActivity;
  }

  /** The lifetime (seconds) the server granted last. */
  get lifetime(): number {
    return this.#lifetime;
  }

  get realm(): string | undefined {
    return this.#realm;
  }

  /**
   * True once the server answered 441 to credentials set with `setCredentials` and this
   * allocation's requests went back to the ones that created it, or that it last accepted in a
   * Refresh (RFC 8656 §7; coturn insists on the creating USERNAME).
   * A runtime renewing TURN REST credentials reads it to know it must re-allocate before the
   * creating credentials expire.
   */
  get usesAllocationCredentials(): boolean {
    return this.#pinnedToAllocationCredentials;
  }

  // -------------------------------------------------------------------------------------------
  // Commands

  /**
   * RFC 8656 §7.1: send an Allocate (first without credentials: the server's 401 tells the REALM
   * and NONCE). Allowed from "idle", "failed" and "released" (a fresh start on the same client).
   */
  allocate(now: number): void {
    this.#timeoutDirty = true;
    if (this.#state === "allocating" || this.#state === "allocated") return;
    this.#reset();
    this.#state = "allocating";
    this.#start({ kind: "allocate" }, now, 0, 0);
  }

  /** Refresh the allocation now (it also happens by itself before the lifetime ends). */
  refresh(now: number): void {
    if (this.#state !== "allocated" || this.#inFlight("refresh")) return;
    this.#start({ kind: "refresh", lifetime: this.#options.lifetime }, now, 0, 0);
  }

  /**
   * RFC 8656 §7.3: Refresh with LIFETIME 0 deletes the allocation. The client is "released" at
   * once (nothing more is refreshed); the event "released" follows the answer.
   */
  release(now: number): void {
    this.#timeoutDirty = true;
    if (this.#state === "allocated") {
      this.#transactions.clear();
      this.#clearWants();
      this.#state = "released";
      this.#start({ kind: "release" }, now, 0, 0);
      return;
    }
    if (this.#state === "allocating") {
      this.#transactions.clear();
      this.#clearWants();
      this.#state = "released";
      this.#emit({ type: "released" });
    }
  }

  /**
   * TURN REST credentials are renewed before their ttl runs out: the next request uses these.
   * RFC 8656 §7 lets a server insist on the USERNAME that created the allocation (441): then the
   * client goes back to that one for this allocation's requests.
   */
  setCredentials(username: string, password: string): void {
    this.#credentials = { username, password };
    this.#pinnedToAllocationCredentials = false;
  }

  /**
   * RFC 8656 §9: keep a permission for `peerIp` (any port) until removePermission, refreshed
   * every `permissionRefreshInterval`. Sent once allocated. An unparsable IP is a programmer error.
   */
  createPermission(peerIp: string, now: number): void {
    this.#timeoutDirty = true;
    const ip = canonicalIp(peerIp);
    let p = this.#permissions.get(ip.text);
    if (p === undefined) {
      p = this.#addPermission(ip.text, ip.family);
    } else if (p.explicit) {
      return;
    }
    p.explicit = true;
    if (this.#state === "allocated" && !p.inFlight) this.#sendPermission(p, now);
  }

  /** Stop refreshing the permission (the server lets it lapse within 300 s). */
  removePermission(peerIp: string): void {
    this.#timeoutDirty = true;
    const ip = parseIp(peerIp);
    if (ip === undefined) return;
    const p = this.#permissions.get(formatIp(ip));
    if (p === undefined) return;
    p.explicit = false;
    if (p.channels === 0) this.#permissions.delete(p.ip);
  }

  /**
   * RFC 8656 §11: bind the next free channel number (from 0x4000, RFC 8656 §12 range) to `peer`
   * and keep it bound; returns the number at once ("channel-bound" follows the success). The
   * same peer gets the same number back. Sent once allocated.
   */
  bindChannel(peer: TransportAddress, now: number): number {
    this.#timeoutDirty = true;
    const ip = canonicalIp(peer.address);
    const canonical: TransportAddress = { family: ip.family, address: ip.text, port: peer.port };
    const peerKey = `${ip.text}|${peer.port}`;
    const existing = this.#channelsByPeer.get(peerKey);
    if (existing !== undefined) {
      if (!existing.wanted) {
        existing.wanted = true;
        this.#permissionFor(existing).channels++;
        if (this.#state === "allocated" && !existing.inFlight) this.#sendChannelBind(existing, now);
      }
      return existing.number;
    }
    const number = this.#freeChannelNumber();
    const channel: ChannelState = {
      number,
      peer: canonical,
      peerKey,
      ip: ip.text,
      wanted: true,
      bound: false,
      inFlight: false,
      refreshAt: Number.POSITIVE_INFINITY,
      expiresAt: 0,
    };
    this.#channels.set(number, channel);
    this.#channelsByPeer.set(peerKey, channel);
    this.#permissionFor(channel).channels++;
    if (this.#state === "allocated") this.#sendChannelBind(channel, now);
    return number;
  }

  /**
   * Stop refreshing a channel. Its number and peer stay reserved until the binding's end plus
   * the 5-minute cool-down (RFC 8656 §12), so a late packet never reaches the wrong peer.
   */
  unbindChannel(channel: number): void {
    this.#timeoutDirty = true;
    const c = this.#channels.get(channel);
    if (c === undefined || !c.wanted) return;
    c.wanted = false;
    this.#releasePermissionRef(c);
    if (!c.bound && !c.inFlight) this.#forgetChannel(c);
  }

  /** The number of a bound (confirmed) channel to `peer`, for the sending side of the data path. */
  channelFor(peer: TransportAddress): number | undefined {
    const ip = parseIp(peer.address);
    if (ip === undefined) return undefined;
    const c = this.#channelsByPeer.get(`${formatIp(ip)}|${peer.port}`);
    return c?.bound ? c.number : undefined;
  }

  /** RFC 6062 §4.3: ask the server to open a TCP connection to `peer` ("connected" follows). */
  connect(peer: TransportAddress, now: number): void {
    const ip = canonicalIp(peer.address);
    if (this.#state !== "allocated") return;
    this.#start(
      { kind: "connect", peer: { family: ip.family, address: ip.text, port: peer.port } },
      now,
      0,
      0,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Inputs

  /**
   * One datagram (UDP) or one frame cut by StreamFramer (TCP/TLS) from the server. Control
   * messages update the state (see pollOutput); data (ChannelData, Data indication)
   * comes back as the reused `data` view. Never throws.
   */
  handleInput(bytes: Uint8Array, now: number): TurnData | undefined {
    if (bytes.length === 0) return this.#drop();
    const first = bytes[0]! & 0xc0;
    if (first === 0x40) {
      const data = this.#decodeChannelData(bytes);
      if (data === undefined) return this.#drop();
      this.#lastActivity = now;
      return data;
    }
    if (first !== 0) return this.#drop();
    const decoded = decodeStun(bytes);
    if (!decoded.ok) return this.#drop();
    const msg = decoded.message;
    this.#timeoutDirty = true;
    switch (msg.messageClass) {
      case MessageClass.SuccessResponse:
      case MessageClass.ErrorResponse:
        this.#handleResponse(msg, now);
        return undefined;
      case MessageClass.Indication:
        return this.#handleIndication(msg, now);
      default:
        return this.#drop();
    }
  }

  /**
   * The data path alone, without touching any state: ChannelData of a known channel or a Data
   * indication, as the reused `data` view; undefined for anything else.
   */
  decodeData(bytes: Uint8Array): TurnData | undefined {
    if (bytes.length === 0) return undefined;
    const first = bytes[0]! & 0xc0;
    if (first === 0x40) return this.#decodeChannelData(bytes);
    if (first !== 0) return undefined;
    const decoded = decodeStun(bytes);
    if (!decoded.ok) return undefined;
    const msg = decoded.message;
    if (msg.messageClass !== MessageClass.Indication || msg.method !== Method.Data)
      return undefined;
    return this.#dataIndication(msg);
  }

  /** Retransmissions, timeouts, refreshes and keep-alives due at or before `now`. */
  handleTimeout(now: number): void {
    this.#timeoutDirty = true;
    for (const tx of [...this.#transactions.values()]) {
      if (tx.clock.nextAt > now || this.#transactions.get(tx.key) !== tx) continue;
      if (tx.clock.expire(now) === "retransmit") {
        this.stats.retransmissions++;
        this.#transmit(tx.bytes);
      } else {
        this.#transactions.delete(tx.key);
        this.stats.timeouts++;
        this.#timedOut(tx, now);
      }
    }
    if (this.#state === "allocated") {
      if (this.#refreshAt <= now && !this.#inFlight("refresh")) {
        this.#start({ kind: "refresh", lifetime: this.#options.lifetime }, now, 0, 0);
      }
      for (const p of this.#permissions.values()) {
        if (!p.inFlight && p.refreshAt <= now) this.#sendPermission(p, now);
      }
      for (const c of [...this.#channels.values()]) {
        if (c.wanted) {
          if (!c.inFlight && c.refreshAt <= now) this.#sendChannelBind(c, now);
        } else if (!c.inFlight && c.expiresAt + CHANNEL_COOLDOWN_MS <= now) {
          this.#forgetChannel(c);
        }
      }
      if (
        this.#keepaliveMs > 0 &&
        now >= this.#lastRequestAt + this.#keepaliveMs &&
        !this.#inFlight("binding")
      ) {
        this.#start({ kind: "binding" }, now, 0, 0);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Outputs

  /**
   * The next output, in order: a "transmit" (bytes to write to the server on the control
   * connection) or an event; undefined once all are drained.
   */
  pollOutput(): TurnClientOutput | undefined {
    if (this.#outputHead >= this.#outputs.length) {
      if (this.#outputHead > 0) {
        this.#outputs.length = 0;
        this.#outputHead = 0;
      }
      return undefined;
    }
    const out = this.#outputs[this.#outputHead]!;
    this.#outputs[this.#outputHead++] = undefined as unknown as TurnClientOutput;
    return out;
  }

  /** The next instant `handleTimeout` has work, or undefined. */
  pollTimeout(): number | undefined {
    if (!this.#timeoutDirty) return this.#timeout;
    this.#timeoutDirty = false;
    this.#timeout = this.#computeTimeout();
    return this.#timeout;
  }

  #computeTimeout(): number | undefined {
    let next = Number.POSITIVE_INFINITY;
    for (const tx of this.#transactions.values())
      if (tx.clock.nextAt < next) next = tx.clock.nextAt;
    if (this.#state === "allocated") {
      if (!this.#inFlight("refresh") && this.#refreshAt < next) next = this.#refreshAt;
      for (const p of this.#permissions.values()) {
        if (!p.inFlight && p.refreshAt < next) next = p.refreshAt;
      }
      for (const c of this.#channels.values()) {
        if (c.inFlight) continue;
        const at = c.wanted ? c.refreshAt : c.expiresAt + CHANNEL_COOLDOWN_MS;
        if (at < next) next = at;
      }
      if (this.#keepaliveMs > 0 && !this.#inFlight("binding")) {
        const at = this.#lastRequestAt + this.#keepaliveMs;
        if (at < next) next = at;
      }
    }
    return next === Number.POSITIVE_INFINITY ? undefined : next;
  }

  // -------------------------------------------------------------------------------------------
  // Data path helpers for the runtime

  /** A ChannelData message (padded to 4 bytes on TCP/TLS, RFC 8656 §12.5). */
  encodeChannelData(channel: number, payload: Uint8Array): Uint8Array {
    return encodeChannelData(channel, payload, this.#options.transport !== "udp");
  }

  /** RFC 8656 §11.1: a Send indication (XOR-PEER-ADDRESS + DATA) for a peer without a channel. */
  sendIndication(peer: TransportAddress, data: Uint8Array): Uint8Array {
    const ip = canonicalIp(peer.address);
    return new StunMessageBuilder(Method.Send, MessageClass.Indication, this.#transactionId())
      .xorAddress(AttributeType.XorPeerAddress, {
        family: ip.family,
        address: ip.text,
        port: peer.port,
      })
      .bytes(AttributeType.Data, data)
      .build();
  }

  /**
   * RFC 6062 §4.3: the ConnectionBind a runtime writes first on a NEW TCP/TLS connection to the
   * server, signed with the current credentials and the control connection's REALM and NONCE.
   * Read the answer as one frame (StreamFramer) and pass it to handleConnectionBindResponse;
   * after a success, StreamFramer.takeRemaining() holds the first peer bytes.
   */
  connectionBindRequest(connectionId: PeerConnectionId): Uint8Array {
    return this.#connectionBind(connectionId, this.#nonce, false);
  }

  /** The answer to a ConnectionBind (one frame). Never throws. */
  handleConnectionBindResponse(bytes: Uint8Array): ConnectionBindResult {
    const decoded = decodeStun(bytes);
    if (!decoded.ok) return invalid("malformed");
    const msg = decoded.message;
    if (msg.method !== Method.ConnectionBind) return invalid("not a ConnectionBind response");
    const key = bytesKey(msg.transactionId);
    const pending = this.#pendingConnectionBinds.get(key);
    if (pending === undefined) return invalid("unknown transaction");
    if (msg.messageClass === MessageClass.SuccessResponse) {
      if (pending.signature && !verifyMessageIntegrity(msg, pending.signature.key)) {
        return invalid("bad MESSAGE-INTEGRITY");
      }
      this.#pendingConnectionBinds.delete(key);
      return { ok: true, connectionId: pending.connectionId };
    }
    if (msg.messageClass !== MessageClass.ErrorResponse) return invalid("not a response");
    const error = readErrorCode(msg);
    if (error === undefined) return invalid("no ERROR-CODE");
    if (
      hasAttribute(msg, AttributeType.MessageIntegrity) &&
      pending.signature &&
      !verifyMessageIntegrity(msg, pending.signature.key)
    ) {
      return invalid("bad MESSAGE-INTEGRITY");
    }
    this.#pendingConnectionBinds.delete(key);
    const nonce = readString(msg, AttributeType.Nonce);
    const realm = readString(msg, AttributeType.Realm);
    if (
      (error.code === ErrorCode.StaleNonce || error.code === ErrorCode.Unauthorized) &&
      nonce !== undefined &&
      !pending.retried
    ) {
      // The nonce may be bound to the data connection's own 5-tuple: sign the retry with the one
      // this answer carries, without disturbing the control connection's nonce.
      if (realm !== undefined && this.#realm === undefined) this.#realm = realm;
      const retry = this.#connectionBind(pending.connectionId, nonce, true, realm);
      return { ok: false, code: error.code, reason: error.reason, retry };
    }
    return { ok: false, code: error.code, reason: error.reason };
  }

  // -------------------------------------------------------------------------------------------
  // Requests

  #start(op: Operation, now: number, staleRetries: number, challengeRetries: number): void {
    this.#timeoutDirty = true;
    const method = methodOf(op);
    const id = this.#transactionId();
    const b = new StunMessageBuilder(method, MessageClass.Request, id);
    if (this.#options.software !== undefined) {
      b.string(AttributeType.Software, this.#options.software);
    }
    this.#fill(b, op);
    let signature: Signature | undefined;
    if (op.kind !== "binding") signature = this.#sign(b, op.kind === "allocate");
    const bytes = b.fingerprint().build();
    const tx: Transaction = {
      key: bytesKey(id),
      method,
      op,
      bytes,
      signature,
      clock: new TransactionClock(this.#timing, now),
      staleRetries,
      challengeRetries,
    };
    this.#transactions.set(tx.key, tx);
    this.#markInFlight(op, true);
    this.stats.requests++;
    this.#lastRequestAt = now;
    this.#transmit(bytes);
  }

  #fill(b: StunMessageBuilder, op: Operation): void {
    switch (op.kind) {
      case "allocate": {
        b.requestedTransport(
          this.#requestedTransport === "tcp" ? TransportProtocol.Tcp : TransportProtocol.Udp,
        );
        // RFC 8656 §7.1: IPv4 is the default; only ask when IPv6 is wanted.
        if (this.#options.family === 6) b.addressFamily(AttributeType.RequestedAddressFamily, 6);
        if (this.#options.lifetime !== undefined) {
          b.uint32(AttributeType.Lifetime, this.#options.lifetime);
        }
        return;
      }
      case "refresh":
        if (op.lifetime !== undefined) b.uint32(AttributeType.Lifetime, op.lifetime);
        return;
      case "release":
        b.uint32(AttributeType.Lifetime, 0);
        return;
      case "permission": {
        const p = op.permission;
        b.xorAddress(AttributeType.XorPeerAddress, { family: p.family, address: p.ip, port: 0 });
        return;
      }
      case "channel":
        b.channelNumber(op.channel.number);
        b.xorAddress(AttributeType.XorPeerAddress, op.channel.peer);
        return;
      case "connect":
        b.xorAddress(AttributeType.XorPeerAddress, op.peer);
        return;
      case "binding":
        return;
    }
  }

  /**
   * RFC 8489 §9.2.3: USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once the server told us the
   * realm and a nonce. Allocate always uses the current credentials; other requests those that
   * created the allocation when the server insisted on them (441).
   */
  #sign(b: StunMessageBuilder, isAllocate: boolean, nonce = this.#nonce): Signature | undefined {
    const realm = this.#realm;
    if (realm === undefined || nonce === undefined) return undefined;
    const credentials =
      !isAllocate && this.#pinnedToAllocationCredentials && this.#allocationCredentials
        ? this.#allocationCredentials
        : this.#credentials;
    const key = this.#key(credentials, realm);
    b.string(AttributeType.Username, credentials.username)
      .string(AttributeType.Realm, realm)
      .string(AttributeType.Nonce, nonce)
      .messageIntegrity(key);
    return { credentials, key };
  }

  #key(credentials: Credentials, realm: string): Uint8Array {
    const c = this.#keyCache;
    if (
      c !== undefined &&
      c.username === credentials.username &&
      c.realm === realm &&
      c.password === credentials.password
    ) {
      return c.key;
    }
    const key = longTermKeyMd5(credentials.username, realm, credentials.password);
    this.#keyCache = { ...credentials, realm, key };
    return key;
  }

  #connectionBind(
    connectionId: PeerConnectionId,
    nonce: string | undefined,
    retried: boolean,
    realm?: string,
  ): Uint8Array {
    const id = this.#transactionId();
    const b = new StunMessageBuilder(Method.ConnectionBind, MessageClass.Request, id);
    if (this.#options.software !== undefined) {
      b.string(AttributeType.Software, this.#options.software);
    }
    b.uint32(AttributeType.ConnectionId, connectionId >>> 0);
    let signature: Signature | undefined;
    const useRealm = realm ?? this.#realm;
    if (useRealm !== undefined && nonce !== undefined) {
      const key = this.#key(this.#credentials, useRealm);
      b.string(AttributeType.Username, this.#credentials.username)
        .string(AttributeType.Realm, useRealm)
        .string(AttributeType.Nonce, nonce)
        .messageIntegrity(key);
      signature = { credentials: this.#credentials, key };
    }
    const bytes = b.fingerprint().build();
    if (this.#pendingConnectionBinds.size >= MAX_PENDING_CONNECTION_BINDS) {
      const oldest = this.#pendingConnectionBinds.keys().next();
      if (!oldest.done) this.#pendingConnectionBinds.delete(oldest.value);
    }
    this.#pendingConnectionBinds.set(bytesKey(id), {
      connectionId: (connectionId >>> 0) as PeerConnectionId,
      signature,
      retried,
    });
    return bytes;
  }

  #sendPermission(p: PermissionState, now: number): void {
    this.#start({ kind: "permission", permission: p }, now, 0, 0);
  }

  #sendChannelBind(c: ChannelState, now: number): void {
    this.#start({ kind: "channel", channel: c }, now, 0, 0);
  }

  // -------------------------------------------------------------------------------------------
  // Responses (RFC 8489 §6.3.3, §9.2.5)

  #handleResponse(msg: StunMessage, now: number): void {
    const key = bytesKey(msg.transactionId);
    const tx = this.#transactions.get(key);
    // RFC 8489 §6.3.3: a response must match an outstanding transaction of the same method.
    if (tx === undefined || tx.method !== msg.method) {
      this.#drop();
      return;
    }
    if (msg.messageClass === MessageClass.SuccessResponse) {
      // RFC 8489 §9.2.5: a success to a signed request must carry our MESSAGE-INTEGRITY.
      if (tx.signature !== undefined && !verifyMessageIntegrity(msg, tx.signature.key)) {
        this.#drop();
        return;
      }
      this.#finish(tx, now);
      this.#succeeded(tx, msg, now);
      return;
    }
    const error = readErrorCode(msg);
    if (error === undefined) {
      this.#drop();
      return;
    }
    // Errors other than challenges are signed too when the server could check our request; a
    // forged one (bad MESSAGE-INTEGRITY) is discarded. 401/438 cannot be signed.
    if (
      tx.signature !== undefined &&
      hasAttribute(msg, AttributeType.MessageIntegrity) &&
      !verifyMessageIntegrity(msg, tx.signature.key)
    ) {
      this.#drop();
      return;
    }
    this.#finish(tx, now);
    if (this.#retryAfterError(tx, msg, error.code, now)) return;
    this.#failed(tx, msg, error.code, error.reason, now);
  }

  #finish(tx: Transaction, now: number): void {
    this.#transactions.delete(tx.key);
    this.#markInFlight(tx.op, false);
    this.#lastActivity = now;
  }

  /** 401 / 438 / 441 handling (RFC 8489 §9.2.5, RFC 8656 §7): true when a retry went out. */
  #retryAfterError(tx: Transaction, msg: StunMessage, code: number, now: number): boolean {
    const op = tx.op;
    if (code === ErrorCode.Unauthorized || code === ErrorCode.StaleNonce) {
      const realm = readString(msg, AttributeType.Realm);
      const nonce = readString(msg, AttributeType.Nonce);
      if (nonce === undefined || (realm === undefined && this.#realm === undefined)) return false;
      if (code === ErrorCode.StaleNonce) {
        if (tx.staleRetries >= this.#maxStaleRetries) return false;
        this.#nonce = nonce;
        if (realm !== undefined) this.#realm = realm;
        this.#start(op, now, tx.staleRetries + 1, tx.challengeRetries);
        return true;
      }
      // 401: the first answer to an unsigned request is the challenge; a signed request gets one
      // more try (a realm or nonce change), then the credentials are wrong.
      if (tx.challengeRetries >= 1 && tx.signature !== undefined) return false;
      this.#nonce = nonce;
      if (realm !== undefined) this.#realm = realm;
      this.#start(op, now, tx.staleRetries, tx.challengeRetries + 1);
      return true;
    }
    if (
      code === ErrorCode.WrongCredentials &&
      op.kind !== "allocate" &&
      !this.#pinnedToAllocationCredentials &&
      this.#allocationCredentials !== undefined &&
      tx.signature?.credentials !== this.#allocationCredentials
    ) {
      this.#pinnedToAllocationCredentials = true;
      this.#start(op, now, tx.staleRetries, tx.challengeRetries);
      return true;
    }
    return false;
  }

  #succeeded(tx: Transaction, msg: StunMessage, now: number): void {
    const op = tx.op;
    switch (op.kind) {
      case "allocate": {
        if (this.#state !== "allocating") return;
        const relayed = readXorAddress(msg, AttributeType.XorRelayedAddress);
        if (relayed === undefined) {
          this.#fail("allocate-failed", 0, "no XOR-RELAYED-ADDRESS in the Allocate success");
          return;
        }
        const lifetime = readUint32(msg, AttributeType.Lifetime) ?? DEFAULT_ALLOCATION_LIFETIME;
        this.#relayed = relayed;
        this.#mapped = readXorAddress(msg, AttributeType.XorMappedAddress);
        this.#allocationCredentials = tx.signature?.credentials ?? this.#credentials;
        this.#pinnedToAllocationCredentials = false;
        this.#state = "allocated";
        this.#scheduleRefresh(lifetime, now);
        this.#emit({ type: "allocated", relayed, mapped: this.#mapped, lifetime });
        // Permissions and channels asked for while allocating go out now.
        for (const p of this.#permissions.values()) {
          if (p.explicit && !p.inFlight) this.#sendPermission(p, now);
        }
        for (const c of this.#channels.values()) {
          if (c.wanted && !c.inFlight) this.#sendChannelBind(c, now);
        }
        return;
      }
      case "refresh": {
        if (this.#state !== "allocated") return;
        const lifetime = readUint32(msg, AttributeType.Lifetime) ?? op.lifetime ?? this.#lifetime;
        if (lifetime === 0) {
          this.#state = "released";
          this.#clearWants();
          this.#emit({ type: "released" });
          return;
        }
        // Credentials the server accepted for this allocation are the ones to fall back to
        // after a later 441 (renewed REST credentials it took replace the creating ones).
        if (tx.signature !== undefined) this.#allocationCredentials = tx.signature.credentials;
        this.#scheduleRefresh(lifetime, now);
        this.#emit({ type: "refreshed", lifetime });
        return;
      }
      case "release":
        this.#emit({ type: "released" });
        return;
      case "permission": {
        const p = op.permission;
        p.refreshAt = now + this.#permissionRefreshMs;
        if (!p.created) {
          p.created = true;
          if (p.explicit) this.#emit({ type: "permission-created", peerIp: p.ip });
        }
        return;
      }
      case "channel": {
        const c = op.channel;
        c.refreshAt = now + this.#channelRefreshMs;
        c.expiresAt = now + CHANNEL_LIFETIME_MS;
        // RFC 8656 §11.2: ChannelBind installs or refreshes the peer's permission too.
        const p = this.#permissions.get(c.ip);
        if (p !== undefined && !p.inFlight) p.refreshAt = now + this.#permissionRefreshMs;
        if (!c.bound) {
          c.bound = true;
          if (c.wanted) this.#emit({ type: "channel-bound", peer: c.peer, channel: c.number });
        }
        return;
      }
      case "connect": {
        const connectionId = readUint32(msg, AttributeType.ConnectionId) as
          | PeerConnectionId
          | undefined;
        if (connectionId === undefined) {
          this.#emit({
            type: "connect-failed",
            peer: op.peer,
            code: 0,
            reason: "no CONNECTION-ID in the Connect success",
          });
          return;
        }
        this.#emit({ type: "connected", peer: op.peer, connectionId });
        return;
      }
      case "binding":
        return;
    }
  }

  #failed(tx: Transaction, msg: StunMessage, code: number, reason: string, now: number): void {
    const op = tx.op;
    switch (op.kind) {
      case "allocate": {
        if (this.#state !== "allocating") return;
        const alternate =
          code === ErrorCode.TryAlternate
            ? readAddress(msg, AttributeType.AlternateServer)
            : undefined;
        this.#fail("allocate-failed", code, reason, alternate);
        return;
      }
      case "refresh":
        if (this.#state !== "allocated") return;
        this.#fail("refresh-failed", code, reason);
        return;
      case "release":
        // 437: the allocation was already gone, which is what we wanted.
        this.#emit({ type: "released" });
        return;
      case "permission": {
        const p = op.permission;
        const wasExplicit = p.explicit;
        p.explicit = false;
        if (p.channels === 0) this.#permissions.delete(p.ip);
        else p.refreshAt = now + this.#permissionRefreshMs;
        if (wasExplicit) this.#emit({ type: "permission-failed", peerIp: p.ip, code, reason });
        return;
      }
      case "channel": {
        const c = op.channel;
        const wasWanted = c.wanted;
        if (c.wanted) {
          c.wanted = false;
          this.#releasePermissionRef(c);
        }
        if (!c.bound) this.#forgetChannel(c);
        if (wasWanted) {
          this.#emit({
            type: "channel-bind-failed",
            peer: c.peer,
            channel: c.number,
            code,
            reason,
          });
        }
        return;
      }
      case "connect":
        this.#emit({ type: "connect-failed", peer: op.peer, code, reason });
        return;
      case "binding":
        return;
    }
  }

  #timedOut(tx: Transaction, now: number): void {
    const op = tx.op;
    this.#markInFlight(op, false);
    const peer =
      op.kind === "permission"
        ? { family: op.permission.family, address: op.permission.ip, port: 0 }
        : op.kind === "channel"
          ? op.channel.peer
          : op.kind === "connect"
            ? op.peer
            : undefined;
    this.#emit(
      peer === undefined
        ? { type: "transaction-timeout", method: tx.method }
        : { type: "transaction-timeout", method: tx.method, peer },
    );
    switch (op.kind) {
      case "allocate":
        if (this.#state === "allocating") this.#toFailed();
        return;
      case "refresh":
        if (this.#state === "allocated") this.#toFailed();
        return;
      case "release":
        this.#emit({ type: "released" });
        return;
      case "permission":
        // Still wanted: try again at the next timeout (each attempt lasts 39.5 s).
        op.permission.refreshAt = now;
        return;
      case "channel":
        if (!op.channel.wanted && !op.channel.bound) this.#forgetChannel(op.channel);
        op.channel.refreshAt = now;
        return;
      default:
        return;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Indications and data

  #handleIndication(msg: StunMessage, now: number): TurnData | undefined {
    if (msg.method === Method.Data) {
      const data = this.#dataIndication(msg);
      if (data === undefined) return this.#drop();
      this.#lastActivity = now;
      return data;
    }
    if (msg.method === Method.ConnectionAttempt) {
      // RFC 6062 §4.4: a peer connected to our relayed address; answer with ConnectionBind.
      if (this.#state !== "allocated" || this.#requestedTransport !== "tcp") return this.#drop();
      const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
      const connectionId = readUint32(msg, AttributeType.ConnectionId) as
        | PeerConnectionId
        | undefined;
      if (peer === undefined || connectionId === undefined) return this.#drop();
      this.#lastActivity = now;
      this.#emit({ type: "connection-attempt", peer, connectionId });
      return undefined;
    }
    return this.#drop();
  }

  /** RFC 8656 §11.6: XOR-PEER-ADDRESS and DATA; anything else makes it invalid. */
  #dataIndication(msg: StunMessage): TurnData | undefined {
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    const payload = getAttribute(msg, AttributeType.Data);
    if (peer === undefined || payload === undefined) return undefined;
    // RFC 8656 §11.6: data from an address we asked no permission for is discarded (a spoofed
    // or stray indication must not pass as that peer's traffic).
    if (!this.#permissions.has(peer.address)) return undefined;
    const d = this.data;
    d.peer = peer;
    d.channel = 0;
    d.bytes = msg.bytes;
    d.start = payload.offset;
    d.end = payload.offset + payload.length;
    return d;
  }

  /** RFC 8656 §12.6: data on a channel we bound (and have not forgotten). */
  #decodeChannelData(bytes: Uint8Array): TurnData | undefined {
    // Decoded in place (no view object per packet); over UDP trailing padding is ignored (§12.5).
    if (bytes.length < CHANNEL_DATA_HEADER_LENGTH) return undefined;
    const length = (bytes[2]! << 8) | bytes[3]!;
    if (CHANNEL_DATA_HEADER_LENGTH + length > bytes.length) return undefined;
    const number = (bytes[0]! << 8) | bytes[1]!;
    const c = this.#channels.get(number);
    if (c === undefined || !c.bound) return undefined;
    const d = this.data;
    d.peer = c.peer;
    d.channel = number;
    d.bytes = bytes;
    d.start = CHANNEL_DATA_HEADER_LENGTH;
    d.end = CHANNEL_DATA_HEADER_LENGTH + length;
    return d;
  }

  // -------------------------------------------------------------------------------------------
  // Bookkeeping

  #scheduleRefresh(lifetime: number, now: number): void {
    this.#lifetime = lifetime;
    // A minute of margin (room for a whole UDP transaction, 39.5 s), or a quarter of a short one.
    const delay = lifetime >= 240 ? lifetime - 60 : lifetime * 0.75;
    this.#refreshAt = now + delay * 1000;
  }

  #fail(
    type: "allocate-failed" | "refresh-failed",
    code: number,
    reason: string,
    alternateServer?: TransportAddress,
  ): void {
    this.#toFailed();
    if (type === "allocate-failed" && alternateServer !== undefined) {
      this.#emit({ type, code, reason, alternateServer });
    } else {
      this.#emit({ type, code, reason });
    }
  }

  #toFailed(): void {
    this.#state = "failed";
    this.#transactions.clear();
    this.#refreshAt = Number.POSITIVE_INFINITY;
  }

  #reset(): void {
    this.#transactions.clear();
    this.#relayed = undefined;
    this.#mapped = undefined;
    this.#allocationCredentials = undefined;
    this.#pinnedToAllocationCredentials = false;
    this.#refreshAt = Number.POSITIVE_INFINITY;
    this.#lifetime = 0;
    // Wants survive a restart (a runtime re-allocating keeps its permissions and channels), but
    // nothing is bound on the new allocation yet.
    for (const p of this.#permissions.values()) {
      p.created = false;
      p.inFlight = false;
      p.refreshAt = Number.POSITIVE_INFINITY;
    }
    for (const c of [...this.#channels.values()]) {
      if (!c.wanted) {
        this.#forgetChannel(c);
        continue;
      }
      c.bound = false;
      c.inFlight = false;
      c.refreshAt = Number.POSITIVE_INFINITY;
      c.expiresAt = 0;
    }
  }

  #clearWants(): void {
    this.#permissions.clear();
    this.#channels.clear();
    this.#channelsByPeer.clear();
    this.#refreshAt = Number.POSITIVE_INFINITY;
  }

  #inFlight(kind: Operation["kind"]): boolean {
    for (const tx of this.#transactions.values()) if (tx.op.kind === kind) return true;
    return false;
  }

  #markInFlight(op: Operation, inFlight: boolean): void {
    if (op.kind === "permission") op.permission.inFlight = inFlight;
    else if (op.kind === "channel") op.channel.inFlight = inFlight;
  }

  #addPermission(ip: string, family: 4 | 6): PermissionState {
    const p: PermissionState = {
      ip,
      family,
      explicit: false,
      channels: 0,
      created: false,
      inFlight: false,
      refreshAt: Number.POSITIVE_INFINITY,
    };
    this.#permissions.set(ip, p);
    return p;
  }

  /** The permission a channel's peer needs: created (and refreshed) along with the channel. */
  #permissionFor(c: ChannelState): PermissionState {
    return this.#permissions.get(c.ip) ?? this.#addPermission(c.ip, c.peer.family);
  }

  #releasePermissionRef(c: ChannelState): void {
    const p = this.#permissions.get(c.ip);
    if (p === undefined) return;
    p.channels = Math.max(0, p.channels - 1);
    if (p.channels === 0 && !p.explicit) this.#permissions.delete(p.ip);
  }

  #forgetChannel(c: ChannelState): void {
    if (this.#channels.get(c.number) === c) this.#channels.delete(c.number);
    if (this.#channelsByPeer.get(c.peerKey) === c) this.#channelsByPeer.delete(c.peerKey);
  }

  /** RFC 8656 §12: numbers 0x4000-0x4FFF, the next free one after the last handed out. */
  #freeChannelNumber(): number {
    const span = MAX_CHANNEL - MIN_CHANNEL + 1;
    for (let i = 0; i < span; i++) {
      const n = MIN_CHANNEL + ((this.#nextChannel - MIN_CHANNEL + i) % span);
      if (!this.#channels.has(n)) {
        this.#nextChannel = n + 1 > MAX_CHANNEL ? MIN_CHANNEL : n + 1;
        return n;
      }
    }
    throw new RangeError("all 4096 channel numbers are in use");
  }

  #transactionId(): Uint8Array {
    const id = new Uint8Array(12);
    this.#random.fillBytes(id);
    return id;
  }

  #transmit(data: Uint8Array): void {
    this.#outputs.push({ type: "transmit", data });
  }

  #emit(event: TurnClientEvent): void {
    this.#outputs.push(event);
  }

  #drop(): undefined {
    this.stats.dropped++;
    return undefined;
  }
}

function methodOf(op: Operation): number {
  switch (op.kind) {
    case "allocate":
      return Method.Allocate;
    case "refresh":
    case "release":
      return Method.Refresh;
    case "permission":
      return Method.CreatePermission;
    case "channel":
      return Method.ChannelBind;
    case "connect":
      return Method.Connect;
    case "binding":
      return Method.Binding;
  }
}

/** A peer IP in canonical text; an unparsable one is a programmer error at the API. */
function canonicalIp(text: string): { text: string; family: 4 | 6 } {
  const ip = parseIp(text);
  if (ip === undefined) throw new TypeError(`invalid peer IP address: ${text}`);
  return { text: formatIp(ip), family: ip.family };
}

function seconds(value: number | undefined, fallback: number): number {
  return (value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback) * 1000;
}

function invalid(reason: string): ConnectionBindResult {
  return { ok: false, code: 0, reason };
}
