// One tunnel: one exposed service through one relay IP. The decisions of its life (when to
// allocate, renew credentials, re-allocate, give up on a silent relay, back off, release for an
// access window) are lifecycle.ts, a pure state machine; this file is its driver and the data
// path. It owns what does I/O: the control connection towards the relay (dgram for
// turn:?transport=udp, net for transport=tcp, tls for turns:), the timers, the credential
// fetches, and per peer the sockets towards the private target.
//
// Call order after every input (relay bytes, a timer, a credential answer, an API call): the
// machine's handle*() -> drain pollOutput() (transmits onto the control connection, I/O to
// start, events to log) -> re-arm the one lifecycle timer at pollTimeout(). Same loop as
// relay-server's driver and Firezone's: flush, events, timers. The data path has timers of its
// own: an idle-flow sweep while ready, and per TCP connection a ConnectionBind deadline, a
// target connect deadline and a half-close deadline.
//
// Data paths:
//   UDP service: per peer (ip:port) a local dgram socket connected to the target. Peer -> target:
//   ChannelData / Data indication from the relay -> that peer's socket; the first datagram of a
//   peer also binds a channel (RFC 8656 §12) so replies travel as 4-byte-header ChannelData
//   (header and payload handed to the kernel as two buffers, never concatenated).
//   TCP service (RFC 6062 §4.3): on ConnectionAttempt, a NEW data connection to the relay,
//   ConnectionBind on it, then the target is dialled and both sockets are piped (pause/resume
//   backpressure, one write per read, no copy; plain TCP reads into reused buffers, see
//   runtime-kit reused-read-buffer.ts); a target that refuses gets the data connection ended
//   cleanly, which makes the relay close the peer's connection.

import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { lookup } from "node:dns/promises";
import { isIP, connect as netConnect, type Socket } from "node:net";
import {
  type ConnectionOptions,
  createSecureContext,
  rootCertificates,
  type SecureContext,
  connect as tlsConnect,
} from "node:tls";
import {
  formatIp,
  formatTransportAddress,
  type PeerConnectionId,
  parseIp,
  type RandomSource,
  StreamFramer,
  type TransportAddress,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import { forwardChunk, type Logger, ReusedReadBuffer } from "@turnpike/runtime-kit";
import type { ServiceSpec } from "./config.js";
import type { CredentialSource } from "./credentials.js";
import {
  type PinClaims,
  TunnelLifecycle,
  type TunnelOutput,
  type TunnelState,
} from "./lifecycle.js";
import { refusingLookup, targetRefusal } from "./targets.js";
import type { ControlTransport, TurnUri } from "./uri.js";

/** Process-wide counters (metrics read them at collection time). */
export interface TunnelCounters {
  reconnects: number;
  connectionsOpened: number;
  connectionsFailed: number;
  bytesIn: number;
  bytesOut: number;
}

export interface TunnelOptions {
  readonly serviceId: string;
  readonly service: ServiceSpec;
  readonly uri: TurnUri;
  readonly relayIp: string;
  readonly credentials: CredentialSource;
  readonly random: RandomSource;
  /** A uniform number in [0, 1) for backoff jitter. */
  readonly jitter: () => number;
  readonly logger: Logger;
  readonly counters: TunnelCounters;
  /** Seconds. */
  readonly keepalive: number;
  /** Idle UDP peer flows are closed after this many ms (default UDP_FLOW_IDLE_MS). */
  readonly udpFlowIdleMs?: number;
  readonly backoffBase: number;
  readonly backoffMax: number;
  readonly lifetime: number;
  readonly software: string;
  /** Monotonic ms. */
  readonly now?: () => number;
  /** Wall-clock ms (credential expiry). */
  readonly wallNow?: () => number;
  /** How turns: (TLS) relays are verified. Default: Node's bundled CAs, verification on. */
  readonly tls?: TlsTrust;
  /** Which tunnel of this process serves each pinned relay port (one at a time). */
  readonly pins?: PinClaims;
  /** --allow-metadata-targets: do not refuse names that resolve to metadata addresses. */
  readonly allowMetadataTargets?: boolean;
}

/** Trust for TLS control and data connections (turns:). */
export interface TlsTrust {
  /** PEM certificates to trust; undefined = Node's bundled roots only. */
  readonly ca?: readonly string[];
  /** false only for tests (--insecure-skip-verify). */
  readonly rejectUnauthorized: boolean;
  /** The name the certificate must carry, and the SNI (--tls-servername); default the URI's host name. */
  readonly servername?: string;
}

/** UDP peer flows idle this long are closed (their local socket freed). */
const UDP_FLOW_IDLE_MS = 120_000;
/** At most this many UDP peer flows per tunnel (each holds a local socket). */
const MAX_UDP_FLOWS = 1024;
/** RFC 6062 §5.4: the server drops unbound connections after 30 s; we give up a bit earlier. */
const CONNECTION_BIND_TIMEOUT_MS = 25_000;
/** A target that drops SYNs would hold the peer for the kernel's ~2 min; give up sooner. */
const TARGET_CONNECT_TIMEOUT_MS = 10_000;

interface UdpFlow {
  readonly key: string;
  readonly peer: TransportAddress;
  readonly socket: DgramSocket;
  /** undefined: no channel number was free, the flow answers with Send indications. */
  readonly channel: number | undefined;
  bound: boolean;
  lastUse: number;
}

const PADDING = new Uint8Array(3);

export class Tunnel {
  openConnections = 0;
  bytesIn = 0;
  bytesOut = 0;
  /** UDP peer flows that got no channel (all 4096 numbers bound or cooling down). */
  channelsExhausted = 0;
  /** Datagrams and connection attempts from peers outside --allow-peer (a permissive relay). */
  peersRefused = 0;

  private readonly life: TunnelLifecycle;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly control: ControlTransport;
  private udp: DgramSocket | undefined;
  private stream: Socket | undefined;
  private framer: StreamFramer | undefined;
  /** The lifecycle's one timer, armed at its pollTimeout(). */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  /** The allowed peer IPs, canonical (formatIp). */
  private readonly allowed: ReadonlySet<string>;
  private readonly flows = new Map<string, UdpFlow>();
  private readonly pipes = new Set<Socket>();
  private targetAddress: { ip: string; family: 4 | 6 } | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TunnelOptions) {
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
    this.log = o.logger.child({ service: o.service.name, relay: o.relayIp });
    this.allowed = new Set(
      o.service.allowPeers.ips.map((ip) => {
        const parsed = parseIp(ip);
        return parsed === undefined ? ip : formatIp(parsed);
      }),
    );
    // RFC 6062 needs a stream control connection; a turn: URI serves TCP on the same port.
    this.control =
      o.service.protocol === "tcp" && o.uri.transport === "udp" ? "tcp" : o.uri.transport;
    this.life = new TunnelLifecycle({
      serviceName: o.service.name,
      relayIp: o.relayIp,
      family: isIP(o.relayIp) === 6 ? 6 : 4,
      control: this.control,
      requestedTransport: o.service.protocol,
      allowedPeers: o.service.allowPeers.ips,
      random: o.random,
      jitter: o.jitter,
      keepalive: o.keepalive,
      backoffBase: o.backoffBase,
      backoffMax: o.backoffMax,
      lifetime: o.lifetime,
      software: o.software,
      ...(o.pins !== undefined ? { pins: o.pins } : {}),
    });
  }

  get state(): TunnelState {
    return this.life.state;
  }

  get relayedAddress(): TransportAddress | undefined {
    return this.life.relayedAddress;
  }

  get pinnedPort(): number | undefined {
    return this.life.pinnedPort;
  }

  get lastError(): string | undefined {
    return this.life.lastError;
  }

  get reconnects(): number {
    return this.life.reconnects;
  }

  get credentialRenewals(): number {
    return this.life.credentialRenewals;
  }

  get serviceName(): string {
    return this.o.service.name;
  }

  get relayLabel(): string {
    const h = this.o.relayIp.includes(":") ? `[${this.o.relayIp}]` : this.o.relayIp;
    return `${this.o.uri.secure ? "turns" : "turn"}:${h}:${this.o.uri.port}?transport=${this.control === "tls" ? "tcp" : this.control}`;
  }

  start(): void {
    this.life.start();
    this.drive();
  }

  /** Release the allocation and close everything; the tunnel is done. */
  stop(): void {
    this.life.stop(this.now());
    this.drive();
  }

  /** Outside the access windows: release, and stay idle until `reopen()`. */
  closeWindow(): void {
    this.life.closeWindow(this.now());
    this.drive();
  }

  /** Created while the window is closed: nothing to release, just show the state. */
  closeWindowIdle(): void {
    this.life.closeWindowIdle();
  }

  reopen(): void {
    this.life.reopen();
    this.drive();
  }

  // -------------------------------------------------------------------------------------------
  // The lifecycle loop

  /** Carry out everything the lifecycle asks for, then re-arm its timer. */
  private drive(): void {
    for (let o = this.life.pollOutput(); o !== undefined; o = this.life.pollOutput()) {
      this.perform(o);
    }
    this.armTimer();
  }

  private perform(o: TunnelOutput): void {
    switch (o.type) {
      case "transmit":
        this.sendControl(o.bytes);
        return;
      case "fetch-credentials":
        void this.fetchCredentials(o.attempt);
        return;
      case "connect":
        void this.openControl(o.attempt);
        return;
      case "disconnect":
        this.closeAll(o.release);
        return;
      case "ready": {
        this.log.info("tunnel ready", {
          relayed: formatTransportAddress(o.relayed),
          lifetime: o.lifetime,
          target: `${this.o.service.protocol}://${this.o.service.target.host}:${this.o.service.target.port}`,
        });
        const idle = this.o.udpFlowIdleMs ?? UDP_FLOW_IDLE_MS;
        if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
        this.sweepTimer = setInterval(() => this.sweepFlows(), Math.min(30_000, idle / 2));
        this.sweepTimer.unref();
        return;
      }
      case "down":
        this.o.counters.reconnects++;
        this.log[o.wasReady ? "warn" : "info"]("tunnel down, reconnecting", {
          reason: o.reason,
          delayMs: o.delayMs,
          attempt: o.failures,
        });
        return;
      case "window-closed":
        this.log.info("access window closed: allocation released");
        return;
      case "window-opened":
        this.log.info("access window open: allocating");
        return;
      case "reallocating":
        this.log.info("credentials about to expire: re-allocating with fresh ones", {
          refusedInPlace: o.refusedInPlace,
        });
        return;
      case "renewed":
        this.log.info("credentials renewed in place", {
          relayed: o.relayed ? formatTransportAddress(o.relayed) : undefined,
          renewals: o.renewals,
        });
        return;
      case "renewal-refused":
        this.log.info(
          "the relay refused renewed credentials for this allocation (441): re-allocating before the old ones expire",
          {
            at:
              o.reallocateAt === undefined
                ? undefined
                : new Date(o.reallocateAt - this.now() + this.wallNow()).toISOString(),
          },
        );
        return;
      case "renewal-failed":
        this.log.warn("could not renew credentials, trying again", { err: o.error });
        return;
      case "pin-ignored":
        this.log.warn("the relay did not honour the pinned port: serving on a dynamic port", {
          pinnedPort: o.pinnedPort,
          relayed: formatTransportAddress(o.relayed),
        });
        return;
      case "permission-refused":
        this.log.warn("permission refused", { peer: o.peerIp, code: o.code, reason: o.reason });
        return;
      case "channel-bound": {
        const flow = this.flows.get(formatTransportAddress(o.peer));
        if (flow !== undefined && flow.channel === o.channel) flow.bound = true;
        return;
      }
      case "channel-bind-failed":
        this.log.debug("channel bind failed", {
          peer: formatTransportAddress(o.peer),
          code: o.code,
        });
        return;
      case "connection-attempt":
        this.onConnectionAttempt(o.peer, o.connectionId);
        return;
    }
  }

  private armTimer(): void {
    const at = this.life.pollTimeout();
    if (at === undefined) {
      if (this.timer !== undefined) clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.timer !== undefined && at === this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    // setTimeout holds at most ~24.8 days; a later deadline is simply re-armed on the way.
    const delay = Math.max(0, Math.min(at - this.now(), 0x7fffffff));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.life.handleTimeout(this.now());
      this.drive();
    }, delay);
  }

  private async fetchCredentials(attempt: number): Promise<void> {
    try {
      const creds = await this.o.credentials.get();
      this.life.handleCredentials(attempt, creds, this.now(), this.wallNow());
    } catch (err) {
      this.life.handleCredentialsFailed(attempt, (err as Error).message, this.now());
    }
    this.drive();
  }

  // -------------------------------------------------------------------------------------------
  // The control connection

  /** For a UDP service the target's address first, then the control connection. */
  private async openControl(attempt: number): Promise<void> {
    if (this.o.service.protocol === "udp") {
      try {
        await this.resolveTarget();
      } catch (err) {
        this.life.handleTransportFailed(
          attempt,
          `target ${this.o.service.target.host}: ${(err as Error).message}`,
          this.now(),
        );
        this.drive();
        return;
      }
      if (attempt !== this.life.attempt) return;
    }
    const failed = (reason: string) => {
      this.life.handleTransportFailed(attempt, reason, this.now());
      this.drive();
    };
    const opened = () => {
      this.life.handleConnected(attempt, this.now());
      this.drive();
    };
    if (this.control === "udp") {
      const sock = createSocket({ type: isIP(this.o.relayIp) === 6 ? "udp6" : "udp4" });
      this.udp = sock;
      sock.on("message", (msg) => this.onControlDatagram(attempt, msg));
      sock.on("error", (err) => failed(`control socket: ${err.message}`));
      sock.connect(this.o.uri.port, this.o.relayIp, opened);
      return;
    }
    const sock =
      this.control === "tls"
        ? tlsConnect(this.tlsOptions())
        : netConnect({ host: this.o.relayIp, port: this.o.uri.port });
    sock.setNoDelay(true);
    this.stream = sock;
    const framer = new StreamFramer();
    this.framer = framer;
    sock.once(this.control === "tls" ? "secureConnect" : "connect", opened);
    sock.on("data", (chunk: Buffer) => this.onControlChunk(attempt, framer, chunk));
    sock.on("error", (err) => failed(`control connection: ${err.message}`));
    sock.on("close", () => failed("control connection closed by the relay"));
  }

  /**
   * TLS towards the relay: the certificate must name the URI's host (SNI and identity check use
   * the name, the socket the resolved address; an IP literal needs an IP subjectAltName), or
   * the --tls-servername when one is set (a turns:IP URI whose certificate names a DNS name).
   */
  private tlsOptions(): ConnectionOptions {
    const tls = this.o.tls;
    const named = isIP(this.o.uri.host) === 0;
    return {
      host: this.o.relayIp,
      port: this.o.uri.port,
      // Node checks the certificate against `servername` when set (tls.checkServerIdentity).
      servername: tls?.servername ?? (named ? this.o.uri.host : undefined),
      // Without SNI Node checks the identity against `host`: the URI's IP, same as relayIp.
      ...(tls?.ca !== undefined ? { secureContext: trustContext(tls.ca) } : {}),
      rejectUnauthorized: tls?.rejectUnauthorized ?? true,
    };
  }

  private async resolveTarget(): Promise<void> {
    const host = this.o.service.target.host;
    const fam = isIP(host);
    const a = fam !== 0 ? { address: host, family: fam } : await lookup(host);
    // A name may resolve to a metadata service even though the literal was never configured.
    const refusal = targetRefusal(a.address, this.o.allowMetadataTargets === true);
    if (refusal !== undefined) throw new Error(fam !== 0 ? refusal : `${host}: ${refusal}`);
    this.targetAddress = { ip: a.address, family: a.family === 6 ? 6 : 4 };
  }

  /** The lifecycle is done with this allocation: close its connection, flows and pipes. */
  private closeAll(release: boolean): void {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    const udp = this.udp;
    this.udp = undefined;
    // A moment for the release (Refresh lifetime 0) just handed to the socket to leave.
    if (udp !== undefined) setImmediate(() => closeQuietly(udp));
    const stream = this.stream;
    this.stream = undefined;
    this.framer = undefined;
    if (stream !== undefined) {
      if (release) stream.end();
      else stream.destroy();
    }
    for (const f of this.flows.values()) closeQuietly(f.socket);
    this.flows.clear();
    for (const p of this.pipes) p.destroy();
    this.pipes.clear();
    this.openConnections = 0;
  }

  private sendControl(bytes: Uint8Array, payload?: Uint8Array): void {
    if (this.udp !== undefined) {
      if (payload === undefined) this.udp.send(bytes);
      else this.udp.send([bytes, payload]);
      return;
    }
    const s = this.stream;
    if (s === undefined || s.destroyed) return;
    s.write(bytes);
    if (payload !== undefined) {
      s.write(payload);
      // RFC 8656 §12.5: over a stream ChannelData is padded to a multiple of 4.
      const pad = (4 - (payload.length & 3)) & 3;
      if (pad > 0) s.write(PADDING.subarray(0, pad));
    }
  }

  // -------------------------------------------------------------------------------------------
  // Input from the relay

  private onControlDatagram(attempt: number, msg: Buffer): void {
    const data = this.life.handleInput(attempt, msg, this.now());
    if (data?.peer !== undefined)
      this.onPeerDatagram(data.peer, data.bytes.subarray(data.start, data.end));
    this.drive();
  }

  private onControlChunk(attempt: number, framer: StreamFramer, chunk: Buffer): void {
    if (this.framer !== framer) return;
    framer.push(chunk);
    for (let f = framer.next(); f !== undefined; f = framer.next()) {
      const data = this.life.handleInput(attempt, f, this.now());
      if (data?.peer !== undefined)
        this.onPeerDatagram(data.peer, data.bytes.subarray(data.start, data.end));
      if (this.framer !== framer) break;
    }
    if (framer.error !== undefined && this.framer === framer) {
      this.life.handleTransportFailed(
        attempt,
        "the relay sent bytes that are neither STUN nor ChannelData",
        this.now(),
      );
    }
    this.drive();
  }

  /**
   * Defence in depth: the relay enforces the permissions (RFC 8656 §9), but a permissive or
   * misconfigured one must still not get a stranger to the target. Counted, logged at debug.
   */
  private peerAllowed(peer: TransportAddress): boolean {
    const ip = parseIp(peer.address);
    if (ip !== undefined && this.allowed.has(formatIp(ip))) return true;
    this.peersRefused++;
    this.log.debug("traffic from a peer outside --allow-peer dropped", {
      peer: formatTransportAddress(peer),
      refused: this.peersRefused,
    });
    return false;
  }

  // -------------------------------------------------------------------------------------------
  // UDP services

  private onPeerDatagram(peer: TransportAddress, payload: Uint8Array): void {
    if (this.o.service.protocol !== "udp" || this.targetAddress === undefined) return;
    if (!this.peerAllowed(peer)) return;
    const key = formatTransportAddress(peer);
    let flow = this.flows.get(key);
    if (flow === undefined) {
      if (this.flows.size >= MAX_UDP_FLOWS) return;
      flow = this.openFlow(key, peer);
    }
    flow.lastUse = this.now();
    this.bytesIn += payload.length;
    this.o.counters.bytesIn += payload.length;
    const target = this.targetAddress;
    flow.socket.send(payload, this.o.service.target.port, target.ip);
  }

  private openFlow(key: string, peer: TransportAddress): UdpFlow {
    const target = this.targetAddress!;
    const socket = createSocket({ type: target.family === 6 ? "udp6" : "udp4" });
    const client = this.life.client!;
    // RFC 8656 §12: a channel for this peer, so replies cost 4 bytes of header, not 36. There
    // are 4096 numbers and an unbound one stays reserved for its lifetime plus a 5-minute
    // cool-down, so a busy tunnel can run out: then this flow answers with Send indications.
    let channel: number | undefined;
    try {
      channel = client.bindChannel(peer, this.now());
    } catch (err) {
      this.channelsExhausted++;
      if (this.channelsExhausted === 1 || this.channelsExhausted % 1000 === 0) {
        this.log.warn("no channel number free: this peer is served with Send indications", {
          peer: key,
          flowsWithoutChannel: this.channelsExhausted,
          err: (err as Error).message,
        });
      }
    }
    const flow: UdpFlow = { key, peer, socket, channel, bound: false, lastUse: this.now() };
    this.flows.set(key, flow);
    this.openConnections = this.flows.size;
    this.o.counters.connectionsOpened++;
    socket.on("error", (err) => {
      this.log.debug("target socket error", { peer: key, err: err.message });
    });
    // Not connect()ed (sends would be refused until the connect completes); instead every reply
    // must come from the target's address, anything else on this port is dropped.
    const port = this.o.service.target.port;
    socket.on("message", (reply, from) => {
      if (from.port === port && from.address === target.ip) this.onTargetDatagram(flow, reply);
    });
    this.log.debug("udp peer flow opened", { peer: key, channel });
    return flow;
  }

  private onTargetDatagram(flow: UdpFlow, reply: Buffer): void {
    const client = this.life.client;
    if (client === undefined || this.flows.get(flow.key) !== flow) return;
    flow.lastUse = this.now();
    this.bytesOut += reply.length;
    this.o.counters.bytesOut += reply.length;
    if (flow.bound && flow.channel !== undefined) {
      // A fresh 4-byte header per datagram (from Node's pool): the kernel may get the buffers
      // later than this call returns, so a shared header could be overwritten in between.
      const header = Buffer.allocUnsafe(4);
      writeChannelDataHeader(header, 0, flow.channel, reply.length);
      this.sendControl(header, reply);
      return;
    }
    // Until the ChannelBind succeeded: a Send indication (RFC 8656 §11.1).
    this.sendControl(client.sendIndication(flow.peer, reply));
  }

  private sweepFlows(): void {
    const cutoff = this.now() - (this.o.udpFlowIdleMs ?? UDP_FLOW_IDLE_MS);
    for (const f of this.flows.values()) {
      if (f.lastUse >= cutoff) continue;
      this.flows.delete(f.key);
      // Stop refreshing its channel: the client frees the number after the cool-down (RFC 8656
      // §12), so numbers come back instead of running out after 4096 peers.
      if (f.channel !== undefined) this.life.client?.unbindChannel(f.channel);
      closeQuietly(f.socket);
    }
    if (this.o.service.protocol === "udp") this.openConnections = this.flows.size;
  }

  // -------------------------------------------------------------------------------------------
  // TCP services (RFC 6062 §4.3)

  private onConnectionAttempt(peer: TransportAddress, connectionId: PeerConnectionId): void {
    if (this.life.client === undefined || this.o.service.protocol !== "tcp") return;
    if (!this.peerAllowed(peer)) return;
    const gen = this.life.attempt;
    const peerText = formatTransportAddress(peer);
    // Plain TCP reads into one reused buffer (runtime-kit reused-read-buffer.ts: no 64 KiB
    // allocation per read); Node's TLS sockets cannot, they keep 'data' events.
    const reads = this.control === "tls" ? undefined : new ReusedReadBuffer();
    // allowHalfOpen: the peer's FIN (its request is complete) must not close our side before
    // the target's reply has gone back (TCP half-close, RFC 9293 §3.6).
    const data =
      reads === undefined
        ? // Node's tls.connect honours allowHalfOpen; its ConnectionOptions type omits it.
          tlsConnect({ ...this.tlsOptions(), allowHalfOpen: true } as ConnectionOptions)
        : netConnect({
            host: this.o.relayIp,
            port: this.o.uri.port,
            allowHalfOpen: true,
            onread: reads.onread,
          });
    data.setNoDelay(true);
    this.pipes.add(data);
    data.once("close", () => this.pipes.delete(data));
    data.on("error", (err) =>
      this.log.debug("data connection error", { peer: peerText, err: err.message }),
    );
    const bindTimer = setTimeout(() => data.destroy(), CONNECTION_BIND_TIMEOUT_MS);
    data.once("close", () => clearTimeout(bindTimer));
    data.once(this.control === "tls" ? "secureConnect" : "connect", () => {
      const client = this.life.client;
      if (gen !== this.life.attempt || client === undefined) return data.destroy();
      data.write(client.connectionBindRequest(connectionId));
    });
    // Read exactly one frame (the ConnectionBind answer); RFC 6062 §5.4: what follows is the
    // peer's data. The framer gets a copy (a reused read buffer is overwritten by the next
    // read; this is one small read per connection). Returns whether to keep reading.
    let framer = new StreamFramer();
    const onBindBytes = (chunk: Buffer): boolean => {
      framer.push(reads === undefined ? chunk : Buffer.from(chunk));
      const answer = framer.next();
      if (answer === undefined) {
        if (framer.error === undefined) return true;
        data.destroy(); // neither STUN nor ChannelData
        return false;
      }
      const rest = framer.takeRemaining();
      const c = this.life.client;
      if (gen !== this.life.attempt || c === undefined) {
        data.destroy();
        return false;
      }
      const result = c.handleConnectionBindResponse(answer);
      if (!result.ok) {
        if (result.retry !== undefined) {
          // 401/438: a fresh framer for the retried bind's answer.
          framer = new StreamFramer();
          data.write(result.retry);
          return true;
        }
        this.log.warn("connection bind refused", {
          peer: peerText,
          code: result.code,
          reason: result.reason,
        });
        this.o.counters.connectionsFailed++;
        data.destroy();
        return false;
      }
      clearTimeout(bindTimer);
      // Paused until the target answers; the peer's first bytes wait in `rest`.
      this.dialTarget(data, rest, peerText, reads);
      return false;
    };
    if (reads !== undefined) {
      reads.sink = onBindBytes;
      return;
    }
    const onData = (chunk: Buffer) => {
      if (onBindBytes(chunk)) return;
      data.off("data", onData);
      data.pause();
    };
    data.on("data", onData);
  }

  /**
   * The bound data connection meets the target: bytes both ways with backpressure (a full
   * destination pauses the source until 'drain'), each side's FIN forwarded as end() on the
   * other (half-open both ways: a socket closes once both directions ended, or on an error,
   * which destroys both). One write per read, no copy.
   */
  private dialTarget(
    data: Socket,
    early: Uint8Array,
    peerText: string,
    dataReads: ReusedReadBuffer | undefined,
  ): void {
    const { host, port } = this.o.service.target;
    const targetReads = new ReusedReadBuffer();
    // Literal targets were checked when the service was configured; names are checked as they
    // resolve (targets.ts).
    const target = netConnect({
      host,
      port,
      allowHalfOpen: true,
      onread: targetReads.onread,
      ...(this.o.allowMetadataTargets === true ? {} : { lookup: REFUSING_LOOKUP }),
    });
    target.setNoDelay(true);
    this.pipes.add(target);
    this.o.counters.connectionsOpened++;
    // One open connection = one bound data connection, from ConnectionBind success to close.
    const gen = this.life.attempt;
    this.openConnections++;
    data.once("close", (hadError) => {
      if (gen === this.life.attempt) this.openConnections--;
      this.log.debug("tcp connection closed", {
        peer: peerText,
        hadError,
        fromPeer: data.bytesRead,
        toPeer: data.bytesWritten,
      });
    });
    let connected = false;
    // The error handler below then ends the peer's side cleanly, as for a refusal.
    const connectTimer = setTimeout(
      () => target.destroy(new Error(`connect timed out after ${TARGET_CONNECT_TIMEOUT_MS} ms`)),
      TARGET_CONNECT_TIMEOUT_MS,
    );
    target.once("close", () => {
      clearTimeout(connectTimer);
      this.pipes.delete(target);
    });
    target.on("error", (err) => {
      if (!connected) {
        // The target refused or is unreachable: end the peer's side cleanly (FIN, not RST), so
        // the platform sees a closed connection instead of a hang.
        this.o.counters.connectionsFailed++;
        this.log.info("target refused the connection", { peer: peerText, err: err.message });
        if (dataReads !== undefined) dataReads.sink = () => true; // discard until the FIN
        data.end();
        data.resume(); // read the relay's FIN so the socket closes
        // Half-open: a relay that never sends its FIN must not keep the socket forever.
        setTimeout(() => data.destroy(), 5000).unref();
        return;
      }
      this.log.debug("target connection error", { peer: peerText, err: err.message });
      data.destroy();
    });
    data.on("error", () => target.destroy());
    data.once("close", () => target.destroy());
    target.once("close", () => {
      if (!data.destroyed && connected) data.end();
    });
    // target -> peer: the target speaks only once connected, by which time data is bound.
    targetReads.sink = (chunk) => {
      this.bytesOut += chunk.length;
      this.o.counters.bytesOut += chunk.length;
      return forwardChunk(chunk, target, data, targetReads);
    };
    target.once("connect", () => {
      clearTimeout(connectTimer);
      connected = true;
      this.log.debug("tcp connection piped", { peer: peerText });
      if (early.length > 0) {
        this.bytesIn += early.length;
        this.o.counters.bytesIn += early.length;
        target.write(early);
      }
      // peer -> target
      const toTarget = (chunk: Buffer) => {
        this.bytesIn += chunk.length;
        this.o.counters.bytesIn += chunk.length;
        return forwardChunk(chunk, data, target, dataReads);
      };
      if (dataReads !== undefined) {
        dataReads.sink = toTarget;
      } else {
        data.on("data", (chunk: Buffer) => {
          if (!toTarget(chunk)) data.pause();
        });
      }
      data.on("end", () => target.end());
      target.on("end", () => data.end());
      data.resume();
    });
  }
}

const REFUSING_LOOKUP = refusingLookup();

const trustContexts = new WeakMap<readonly string[], SecureContext>();

/** Node's bundled roots plus `ca` (a `ca` option alone would replace them), built once. */
function trustContext(ca: readonly string[]): SecureContext {
  let ctx = trustContexts.get(ca);
  if (ctx === undefined) {
    ctx = createSecureContext({ ca: [...rootCertificates, ...ca] });
    trustContexts.set(ca, ctx);
  }
  return ctx;
}

function closeQuietly(s: DgramSocket): void {
  try {
    s.close();
  } catch {
    // already closed
  }
}
