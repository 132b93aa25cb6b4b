/**
 * The TURN client state machine (RFC 8656 client side, RFC 6062 §4 for TCP relaying): one
 * allocation on one server, sans-IO. Bytes from the server and `now` go in; bytes to send,
 * events and the next timeout come out; the data path returns byte ranges, not events.
 *
 * Call order for a runtime (the same as the server's, see README.md): after any `handle*` or
 * API call, drain `pollOutput()` (write each "transmit" to the control connection, act on each
 * event), then arm one timer at `pollTimeout()` and call `handleTimeout(now)` when it fires.
 *
 *   transaction.ts      requests in flight: retransmission and timeout (RFC 8489 §6.2)
 *   authentication.ts   signing, 401/438/441, PASSWORD-ALGORITHMS (RFC 8489 §9.2)
 *   wants.ts            the permissions and channels kept (RFC 8656 §9, §11, §12)
 *   data-path.ts        ChannelData and Data/Send indications (RFC 8656 §11, §12)
 *   connection-bind.ts  RFC 6062 §4.3 data connections
 */

import type { TransportAddress } from "../codec/address.js";
import {
  AttributeType,
  ErrorCode,
  MessageClass,
  Method,
  TransportProtocol,
} from "../codec/constants.js";
import {
  bytesKey,
  decodeStun,
  hasAttribute,
  readAddress,
  readErrorCode,
  readUint32,
  readXorAddress,
  type StunMessage,
  StunMessageBuilder,
  verifyMessageIntegrity,
} from "../codec/message.js";
import type { PeerConnectionId } from "../ids.js";
import { OutputQueue } from "../output-queue.js";
import { formatIp, parseIp } from "../policy/ip.js";
import type { RandomSource } from "../rng.js";
import { RequestSigner, type Signature } from "./authentication.js";
import { ConnectionBinds } from "./connection-bind.js";
import { ClientDataPath } from "./data-path.js";
import {
  methodOf,
  type Operation,
  type RetransmissionTiming,
  retransmissionTiming,
  type Transaction,
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
import { type ChannelState, type PermissionState, Wants } from "./wants.js";

/** RFC 8656 §7.2: the server's default when it sends no LIFETIME. */
const DEFAULT_ALLOCATION_LIFETIME = 600;
/** RFC 8656 §12: a channel number stays reserved 5 minutes after its binding expires. */
const CHANNEL_LIFETIME_MS = 600_000;
const CHANNEL_COOLDOWN_MS = 300_000;

/** The keep-alive Binding request (RFC 8489 §6.2.1); it carries nothing. */
const BINDING: Operation = { kind: "binding" };

export class TurnClient {
  readonly stats: TurnClientStats = { requests: 0, retransmissions: 0, timeouts: 0, dropped: 0 };
  /** The data-path view returned by `handleInput` / `decodeData`; reused for every packet. */
  readonly data: TurnData;

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

  readonly #signer: RequestSigner;
  readonly #binds: ConnectionBinds;
  readonly #wants = new Wants();
  readonly #dataPath: ClientDataPath;

  readonly #transactions = new Map<string, Transaction>();

  #refreshAt = Number.POSITIVE_INFINITY;
  #lastRequestAt = 0;
  /** pollTimeout's answer, recomputed only after a control-path change (not per data packet). */
  #timeout: number | undefined;
  #timeoutDirty = true;

  /** Transmits and events, in the order they happened (drained with pollOutput). */
  readonly #outputs = new OutputQueue<TurnClientOutput>();

  constructor(options: TurnClientOptions) {
    this.#requestedTransport = options.requestedTransport ?? "udp";
    if (this.#requestedTransport === "tcp" && options.transport === "udp") {
      // RFC 6062 §4.1: TCP allocations are requested over a TCP or TLS control connection.
      throw new Error("requestedTransport tcp needs a tcp or tls control connection");
    }
    this.#options = options;
    this.#random = options.random;
    this.#signer = new RequestSigner(
      { username: options.username, password: options.password },
      options.realm,
    );
    this.#binds = new ConnectionBinds(this.#signer, options.random, options.software);
    this.#dataPath = new ClientDataPath(this.#wants, options.transport !== "udp");
    this.data = this.#dataPath.view;
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
    return this.#signer.realm;
  }

  /**
   * True once the server answered 441 to credentials set with `setCredentials` and this
   * allocation's requests went back to the ones that created it, or that it last accepted in a
   * Refresh (RFC 8656 §7; coturn insists on the creating USERNAME).
   * A runtime renewing TURN REST credentials reads it to know it must re-allocate before the
   * creating credentials expire.
   */
  get usesAllocationCredentials(): boolean {
    return this.#signer.usesAllocationCredentials;
  }

  // -------------------------------------------------------------------------------------------
  // Requests the application makes

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

  /**
   * Refresh the allocation now (it also happens by itself before the lifetime ends). Returns
   * whether a Refresh was queued: false when there is no allocation or one is already in
   * flight (its answer then speaks for the credentials it was signed with, not for any set
   * since with `setCredentials`).
   */
  refresh(now: number): boolean {
    if (this.#state !== "allocated" || this.#inFlight("refresh")) return false;
    this.#start({ kind: "refresh", lifetime: this.#options.lifetime }, now, 0, 0);
    return true;
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
    this.#signer.setCredentials({ username, password });
  }

  /**
   * RFC 8656 §9: keep a permission for `peerIp` (any port) until removePermission, refreshed
   * every `permissionRefreshInterval`. Sent once allocated. An unparsable IP is a programmer error.
   */
  createPermission(peerIp: string, now: number): void {
    this.#timeoutDirty = true;
    const ip = canonicalIp(peerIp);
    let p = this.#wants.permissions.get(ip.text);
    if (p === undefined) {
      p = this.#wants.addPermission(ip.text, ip.family);
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
    const p = this.#wants.permissions.get(formatIp(ip));
    if (p === undefined) return;
    p.explicit = false;
    if (p.channels === 0) this.#wants.permissions.delete(p.ip);
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
    const existing = this.#wants.channelsByPeer.get(peerKey);
    if (existing !== undefined) {
      if (!existing.wanted) {
        existing.wanted = true;
        this.#wants.permissionFor(existing).channels++;
        if (this.#state === "allocated" && !existing.inFlight) this.#sendChannelBind(existing, now);
      }
      return existing.number;
    }
    const channel = this.#wants.addChannel(canonical, peerKey);
    if (this.#state === "allocated") this.#sendChannelBind(channel, now);
    return channel.number;
  }

  /**
   * Stop refreshing a channel. Its number and peer stay reserved until the binding's end plus
   * the 5-minute cool-down (RFC 8656 §12), so a late packet never reaches the wrong peer.
   */
  unbindChannel(channel: number): void {
    this.#timeoutDirty = true;
    const c = this.#wants.channels.get(channel);
    if (c === undefined || !c.wanted) return;
    c.wanted = false;
    this.#wants.releasePermissionRef(c);
    if (!c.bound && !c.inFlight) this.#wants.forgetChannel(c);
  }

  /** The number of a bound (confirmed) channel to `peer`, for the sending side of the data path. */
  channelFor(peer: TransportAddress): number | undefined {
    const ip = parseIp(peer.address);
    if (ip === undefined) return undefined;
    const c = this.#wants.channelsByPeer.get(`${formatIp(ip)}|${peer.port}`);
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
      const data = this.#dataPath.channelData(bytes);
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
    return this.#dataPath.decode(bytes);
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
      for (const p of this.#wants.permissions.values()) {
        if (!p.inFlight && p.refreshAt <= now) this.#sendPermission(p, now);
      }
      for (const c of [...this.#wants.channels.values()]) {
        if (c.wanted) {
          if (!c.inFlight && c.refreshAt <= now) this.#sendChannelBind(c, now);
        } else if (!c.inFlight && c.expiresAt + CHANNEL_COOLDOWN_MS <= now) {
          this.#wants.forgetChannel(c);
        }
      }
      const keepalive = this.#keepaliveOp();
      if (keepalive !== undefined && now >= this.#lastRequestAt + this.#keepaliveMs) {
        this.#start(keepalive, now, 0, 0);
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
    return this.#outputs.poll();
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
      for (const p of this.#wants.permissions.values()) {
        if (!p.inFlight && p.refreshAt < next) next = p.refreshAt;
      }
      for (const c of this.#wants.channels.values()) {
        if (c.inFlight) continue;
        const at = c.wanted ? c.refreshAt : c.expiresAt + CHANNEL_COOLDOWN_MS;
        if (at < next) next = at;
      }
      if (this.#keepaliveOp() !== undefined) {
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
    return this.#dataPath.encodeChannelData(channel, payload);
  }

  /** RFC 8656 §11.1: a Send indication (XOR-PEER-ADDRESS + DATA) for a peer without a channel. */
  sendIndication(peer: TransportAddress, data: Uint8Array): Uint8Array {
    const ip = canonicalIp(peer.address);
    const canonical = { family: ip.family, address: ip.text, port: peer.port };
    return this.#dataPath.sendIndication(canonical, data, this.#transactionId());
  }

  /**
   * RFC 6062 §4.3: the ConnectionBind a runtime writes first on a NEW TCP/TLS connection to the
   * server, signed with the current credentials and the control connection's REALM and NONCE.
   * Read the answer as one frame (StreamFramer) and pass it to handleConnectionBindResponse;
   * after a success, StreamFramer.takeRemaining() holds the first peer bytes.
   */
  connectionBindRequest(connectionId: PeerConnectionId): Uint8Array {
    return this.#binds.request(connectionId);
  }

  /** The answer to a ConnectionBind (one frame). Never throws. */
  handleConnectionBindResponse(bytes: Uint8Array): ConnectionBindResult {
    return this.#binds.handleResponse(bytes);
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
    if (op.kind !== "binding") signature = this.#signer.sign(b, op.kind === "allocate");
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
      const challenge = this.#signer.readChallenge(msg);
      if (challenge === undefined) return false;
      if (code === ErrorCode.StaleNonce) {
        if (tx.staleRetries >= this.#maxStaleRetries) return false;
        this.#signer.learn(challenge);
        this.#start(op, now, tx.staleRetries + 1, tx.challengeRetries);
        return true;
      }
      // 401: the first answer to an unsigned request is the challenge; a signed request gets one
      // more try (a realm or nonce change), then the credentials are wrong.
      if (tx.challengeRetries >= 1 && tx.signature !== undefined) return false;
      this.#signer.learn(challenge);
      this.#start(op, now, tx.staleRetries, tx.challengeRetries + 1);
      return true;
    }
    if (
      code === ErrorCode.WrongCredentials &&
      op.kind !== "allocate" &&
      this.#signer.fallBackToAllocationCredentials(tx.signature)
    ) {
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
        this.#signer.allocated(tx.signature);
        this.#state = "allocated";
        this.#scheduleRefresh(lifetime, now);
        this.#emit({ type: "allocated", relayed, mapped: this.#mapped, lifetime });
        // Permissions and channels asked for while allocating go out now.
        for (const p of this.#wants.permissions.values()) {
          if (p.explicit && !p.inFlight) this.#sendPermission(p, now);
        }
        for (const c of this.#wants.channels.values()) {
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
        this.#signer.accepted(tx.signature);
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
        const p = this.#wants.permissions.get(c.ip);
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
        if (p.channels === 0) this.#wants.permissions.delete(p.ip);
        else p.refreshAt = now + this.#permissionRefreshMs;
        if (wasExplicit) this.#emit({ type: "permission-failed", peerIp: p.ip, code, reason });
        return;
      }
      case "channel": {
        const c = op.channel;
        const wasWanted = c.wanted;
        if (c.wanted) {
          c.wanted = false;
          this.#wants.releasePermissionRef(c);
        }
        if (!c.bound) this.#wants.forgetChannel(c);
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
        if (!op.channel.wanted && !op.channel.bound) this.#wants.forgetChannel(op.channel);
        op.channel.refreshAt = now;
        return;
      default:
        return;
    }
  }

  // -------------------------------------------------------------------------------------------
  // Indications

  #handleIndication(msg: StunMessage, now: number): TurnData | undefined {
    if (msg.method === Method.Data) {
      const data = this.#dataPath.dataIndication(msg);
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
    this.#signer.restart();
    this.#refreshAt = Number.POSITIVE_INFINITY;
    this.#lifetime = 0;
    this.#wants.restart();
  }

  #clearWants(): void {
    this.#wants.clear();
    this.#refreshAt = Number.POSITIVE_INFINITY;
  }

  /** The keep-alive to send when one is due (allocated), unless one is already in flight. */
  #keepaliveOp(): Operation | undefined {
    if (this.#keepaliveMs === 0) return undefined;
    if (this.#options.keepaliveRequest === "refresh") {
      // The Refresh the allocation gets anyway, sooner: same lifetime asked for.
      if (this.#inFlight("refresh")) return undefined;
      return { kind: "refresh", lifetime: this.#options.lifetime };
    }
    return this.#inFlight("binding") ? undefined : BINDING;
  }

  #inFlight(kind: Operation["kind"]): boolean {
    for (const tx of this.#transactions.values()) if (tx.op.kind === kind) return true;
    return false;
  }

  #markInFlight(op: Operation, inFlight: boolean): void {
    if (op.kind === "permission") op.permission.inFlight = inFlight;
    else if (op.kind === "channel") op.channel.inFlight = inFlight;
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

/** A peer IP in canonical text; an unparsable one is a programmer error at the API. */
function canonicalIp(text: string): { text: string; family: 4 | 6 } {
  const ip = parseIp(text);
  if (ip === undefined) throw new TypeError(`invalid peer IP address: ${text}`);
  return { text: formatIp(ip), family: ip.family };
}

function seconds(value: number | undefined, fallback: number): number {
  return (value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback) * 1000;
}
