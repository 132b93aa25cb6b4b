/**
 * The TURN client state machine (RFC 8656 client side, RFC 6062 §4 for TCP relaying): one
 * allocation on one server, sans-IO. Bytes from the server and `now` go in; bytes to send,
 * events and the next timeout come out; the data path returns byte ranges, not events.
 *
 * Call order for a runtime (the same as the server's, see README.md): after any `handle*` or
 * API call, drain `pollOutput()` (write each "transmit" to the control connection, act on each
 * event), then arm one timer at `pollTimeout()` and call `handleTimeout(now)` when it fires.
 *
 * This file is the surface: the application's requests, the inputs, the timer and the outputs.
 * Each concern lives in the module named for it:
 *
 *   allocation.ts       state, addresses, lifetime and when to refresh (RFC 8656 §7, §8)
 *   requests.ts         what each request carries; the requests in flight (RFC 8489 §6.2)
 *   transaction.ts      one request's retransmissions and timeout (RFC 8489 §6.2.1, §6.2.2)
 *   responses.ts        what each answer, or its absence, changes, method by method
 *   authentication.ts   signing, 401/438/441, PASSWORD-ALGORITHMS (RFC 8489 §9.2)
 *   wants.ts            the permissions and channels kept (RFC 8656 §9, §10, §12)
 *   data-path.ts        ChannelData and Data/Send indications (RFC 8656 §11, §12)
 *   connection-bind.ts  RFC 6062 §4.3 data connections
 *   options.ts          the options resolved, with their defaults
 */

import type { TransportAddress } from "../codec/address.js";
import { readUint32, readXorAddress } from "../codec/attributes.js";
import { AttributeType, MessageClass, Method } from "../codec/constants.js";
import { decodeStun, type StunMessage } from "../codec/message.js";
import type { PeerConnectionId } from "../ids.js";
import { OutputQueue } from "../output-queue.js";
import { formatIp, parseIp } from "../policy/ip.js";
import { ClientAllocation } from "./allocation.js";
import { RequestSigner } from "./authentication.js";
import { ConnectionBinds } from "./connection-bind.js";
import { ClientDataPath } from "./data-path.js";
import { type ClientSettings, clientSettings } from "./options.js";
import { Requests } from "./requests.js";
import { Responses } from "./responses.js";
import { newTransactionId, type Operation, type Transaction } from "./transaction.js";
import type {
  ConnectionBindResult,
  TurnClientOptions,
  TurnClientOutput,
  TurnClientState,
  TurnClientStats,
  TurnData,
} from "./types.js";
import { CHANNEL_COOLDOWN_MS, type ChannelState, type PermissionState, Wants } from "./wants.js";

/** The keep-alive Binding request: it carries nothing, and is not signed. */
const BINDING: Operation = { kind: "binding" };

export class TurnClient {
  readonly stats: TurnClientStats = { requests: 0, retransmissions: 0, timeouts: 0, dropped: 0 };
  /** The data-path view returned by `handleInput` / `decodeData`; reused for every packet. */
  readonly data: TurnData;

  readonly #options: TurnClientOptions;
  readonly #settings: ClientSettings;
  readonly #allocation = new ClientAllocation();
  readonly #signer: RequestSigner;
  readonly #requests: Requests;
  readonly #responses: Responses;
  readonly #timedOut: (tx: Transaction, now: number) => void;
  readonly #binds: ConnectionBinds;
  readonly #wants = new Wants();
  readonly #dataPath: ClientDataPath;

  #lastActivity: number | undefined;
  /** pollTimeout's answer, recomputed only after a control-path change (not per data packet). */
  #timeout: number | undefined;
  #timeoutDirty = true;

  /** Transmits and events, in the order they happened (drained with pollOutput). */
  readonly #outputs = new OutputQueue<TurnClientOutput>();

  constructor(options: TurnClientOptions) {
    const settings = clientSettings(options);
    this.#options = options;
    this.#settings = settings;
    const emit = (output: TurnClientOutput) => {
      this.#outputs.push(output);
    };
    this.#signer = new RequestSigner(
      { username: options.username, password: options.password },
      options.realm,
    );
    this.#requests = new Requests(
      options,
      settings.requestedTransport,
      settings.timing,
      this.#signer,
      this.stats,
      emit,
    );
    this.#responses = new Responses(
      settings,
      this.#allocation,
      this.#wants,
      this.#signer,
      this.#requests,
      emit,
    );
    this.#timedOut = (tx, now) => this.#responses.timedOut(tx, now);
    this.#binds = new ConnectionBinds(this.#signer, options.random, options.software);
    this.#dataPath = new ClientDataPath(this.#wants, options.transport !== "udp");
    this.data = this.#dataPath.view;
  }

  // -------------------------------------------------------------------------------------------
  // State a runtime reads

  get state(): TurnClientState {
    return this.#allocation.state;
  }

  /** XOR-RELAYED-ADDRESS once allocated. */
  get relayedAddress(): TransportAddress | undefined {
    return this.#allocation.relayed;
  }

  /** XOR-MAPPED-ADDRESS from the Allocate success (our public address). */
  get mappedAddress(): TransportAddress | undefined {
    return this.#allocation.mapped;
  }

  /** `now` of the last valid input from the server: a runtime's dead-server detector reads it. */
  get lastActivity(): number | undefined {
    return this.#lastActivity;
  }

  /** The lifetime (seconds) the server granted last. */
  get lifetime(): number {
    return this.#allocation.lifetime;
  }

  get realm(): string | undefined {
    return this.#signer.realm;
  }

  /**
   * True once the server answered 441 to credentials set with `setCredentials` and this
   * allocation's requests went back to the ones that created it, or that it last accepted in a
   * Refresh (RFC 8656 §5; coturn insists on the creating USERNAME).
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
    const allocation = this.#allocation;
    if (allocation.state === "allocating" || allocation.state === "allocated") return;
    this.#requests.clear();
    allocation.reset();
    this.#signer.restart();
    this.#wants.restart();
    allocation.state = "allocating";
    this.#requests.start({ kind: "allocate" }, now);
  }

  /**
   * Refresh the allocation now (it also happens by itself before the lifetime ends). Returns
   * whether a Refresh was queued: false when there is no allocation or one is already in
   * flight (its answer then speaks for the credentials it was signed with, not for any set
   * since with `setCredentials`).
   */
  refresh(now: number): boolean {
    if (this.#allocation.state !== "allocated" || this.#requests.inFlight("refresh")) return false;
    this.#timeoutDirty = true;
    this.#requests.start({ kind: "refresh", lifetime: this.#options.lifetime }, now);
    return true;
  }

  /**
   * RFC 8656 §8.1: Refresh with LIFETIME 0 deletes the allocation. The client is "released" at
   * once (nothing more is refreshed); the event "released" follows the answer.
   */
  release(now: number): void {
    this.#timeoutDirty = true;
    const state = this.#allocation.state;
    if (state !== "allocated" && state !== "allocating") return;
    this.#requests.clear();
    this.#wants.clear();
    this.#allocation.end("released");
    if (state === "allocated") this.#requests.start({ kind: "release" }, now);
    else this.#outputs.push({ type: "released" });
  }

  /**
   * TURN REST credentials are renewed before their ttl runs out: the next request uses these.
   * RFC 8656 §5 lets a server insist on the USERNAME that created the allocation (441): then the
   * client goes back to that one for this allocation's requests.
   */
  setCredentials(username: string, password: string): void {
    this.#signer.setCredentials({ username, password });
  }

  /**
   * RFC 8656 §9, §10: keep a permission for `peerIp` (any port) until removePermission,
   * refreshed every `permissionRefreshInterval`. Sent once allocated. An unparsable IP is a
   * programmer error.
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
    if (this.#allocation.state === "allocated" && !p.inFlight) this.#sendPermission(p, now);
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
   * RFC 8656 §12: bind the next free channel number (from 0x4000) to `peer` and keep it bound;
   * returns the number at once ("channel-bound" follows the success). The same peer gets the
   * same number back. Sent once allocated.
   */
  bindChannel(peer: TransportAddress, now: number): number {
    this.#timeoutDirty = true;
    const allocated = this.#allocation.state === "allocated";
    const ip = canonicalIp(peer.address);
    const canonical: TransportAddress = { family: ip.family, address: ip.text, port: peer.port };
    const peerKey = `${ip.text}|${peer.port}`;
    const existing = this.#wants.channelsByPeer.get(peerKey);
    if (existing !== undefined) {
      if (!existing.wanted) {
        existing.wanted = true;
        this.#wants.permissionFor(existing).channels++;
        if (allocated && !existing.inFlight) this.#sendChannelBind(existing, now);
      }
      return existing.number;
    }
    const channel = this.#wants.addChannel(canonical, peerKey);
    if (allocated) this.#sendChannelBind(channel, now);
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
    if (this.#allocation.state !== "allocated") return;
    this.#timeoutDirty = true;
    const canonical: TransportAddress = { family: ip.family, address: ip.text, port: peer.port };
    this.#requests.start({ kind: "connect", peer: canonical }, now);
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
        if (!this.#responses.handle(msg, now)) return this.#drop();
        this.#lastActivity = now;
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
    this.#requests.expire(now, this.#timedOut);
    if (this.#allocation.state !== "allocated") return;
    if (this.#allocation.refreshAt <= now && !this.#requests.inFlight("refresh")) {
      this.#requests.start({ kind: "refresh", lifetime: this.#options.lifetime }, now);
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
    const keepalive = this.#keepalive();
    if (keepalive !== undefined && now >= this.#requests.lastSentAt + this.#settings.keepaliveMs) {
      this.#requests.start(keepalive, now);
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
    let next = this.#requests.nextAt();
    if (this.#allocation.state === "allocated") {
      const refreshAt = this.#allocation.refreshAt;
      if (!this.#requests.inFlight("refresh") && refreshAt < next) next = refreshAt;
      for (const p of this.#wants.permissions.values()) {
        if (!p.inFlight && p.refreshAt < next) next = p.refreshAt;
      }
      for (const c of this.#wants.channels.values()) {
        if (c.inFlight) continue;
        const at = c.wanted ? c.refreshAt : c.expiresAt + CHANNEL_COOLDOWN_MS;
        if (at < next) next = at;
      }
      if (this.#keepalive() !== undefined) {
        const at = this.#requests.lastSentAt + this.#settings.keepaliveMs;
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
    return this.#dataPath.sendIndication(canonical, data, newTransactionId(this.#options.random));
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
      if (this.#allocation.state !== "allocated" || this.#settings.requestedTransport !== "tcp") {
        return this.#drop();
      }
      const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
      const connectionId = readUint32(msg, AttributeType.ConnectionId) as
        | PeerConnectionId
        | undefined;
      if (peer === undefined || connectionId === undefined) return this.#drop();
      this.#lastActivity = now;
      this.#outputs.push({ type: "connection-attempt", peer, connectionId });
      return undefined;
    }
    return this.#drop();
  }

  // -------------------------------------------------------------------------------------------
  // Bookkeeping

  #sendPermission(p: PermissionState, now: number): void {
    this.#requests.start({ kind: "permission", permission: p }, now);
  }

  #sendChannelBind(c: ChannelState, now: number): void {
    this.#requests.start({ kind: "channel", channel: c }, now);
  }

  /** The keep-alive to send when one is due (allocated), unless one is already in flight. */
  #keepalive(): Operation | undefined {
    if (this.#settings.keepaliveMs === 0) return undefined;
    if (this.#options.keepaliveRequest === "refresh") {
      // The Refresh the allocation gets anyway, sooner: same lifetime asked for.
      if (this.#requests.inFlight("refresh")) return undefined;
      return { kind: "refresh", lifetime: this.#options.lifetime };
    }
    return this.#requests.inFlight("binding") ? undefined : BINDING;
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
