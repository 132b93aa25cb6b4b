// One tunnel: one exposed service through one relay IP. The decisions of its life (when to
// allocate, renew credentials, re-allocate, give up on a silent relay, back off, release for an
// access window) are lifecycle.ts, a pure state machine; this file is its driver. It owns the
// lifecycle's one timer and the credential fetches, and hands the rest of the I/O to its parts:
//
//   tunnel/control.ts     the control connection to the relay (dgram, TCP or TLS)
//   tunnel/udp-flows.ts   a UDP service's data path: per peer a socket towards the target
//   tunnel/tcp-pipes.ts   a TCP service's data path: RFC 6062 data connections piped to the target
//   tunnel/peer-filter.ts who may reach the target (defence in depth behind the relay)
//   tunnel/traffic.ts     bytes and connections counted, per tunnel and for the process
//   tunnel/tls-trust.ts   how a turns: relay is verified
//   tunnel/event-log.ts   the lifecycle's events as log lines
//
// The loop (ARCHITECTURE.md, "The call order"), the same as relay-server's driver and the
// Firezone relay's: every input (an operator command, the timer, credentials, the control
// connection opening, failing or delivering a message) is one call into the lifecycle, and then
// drive(): drain pollOutput() in order (transmits onto the control connection; I/O to start;
// data-path events; events to log), then re-arm the one lifecycle timer at pollTimeout(). The
// parts never call back into this loop: they report through the small interfaces they were
// given (ControlEvents), and the data path uses the current TurnClient directly.

import { isIP } from "node:net";
import type { RandomSource, TransportAddress } from "@turnpike/relay-core/client";
import type { Logger } from "@turnpike/runtime-kit";
import type { ServiceSpec } from "./config/index.js";
import type { CredentialSource } from "./credentials.js";
import { TunnelLifecycle, type TunnelOutput, type TunnelState } from "./lifecycle.js";
import type { PinClaims } from "./pins.js";
import type { RelayAddress } from "./redirects.js";
import { TargetDialer } from "./targets.js";
import { ControlConnection } from "./tunnel/control.js";
import { logLifecycleEvent } from "./tunnel/event-log.js";
import { PeerFilter } from "./tunnel/peer-filter.js";
import { TcpPipes } from "./tunnel/tcp-pipes.js";
import { relayTlsOptions, type TlsTrust } from "./tunnel/tls-trust.js";
import { Traffic, type TunnelCounters } from "./tunnel/traffic.js";
import { UDP_FLOW_IDLE_MS, UdpFlows } from "./tunnel/udp-flows.js";
import type { ControlTransport, TurnUri } from "./uri.js";

export type { TlsTrust } from "./tunnel/tls-trust.js";
export type { TunnelCounters } from "./tunnel/traffic.js";

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
  /** --tcp-splice: TCP pipes in the kernel where possible (tunnel/spliced-pipe.ts; default auto). */
  readonly tcpSplice?: "auto" | "off";
}

export class Tunnel {
  private readonly life: TunnelLifecycle;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly wallNow: () => number;
  private readonly controlTransport: ControlTransport;
  /** The control connection of the current attempt, if one is open or opening. */
  private control: ControlConnection | undefined;
  /** The lifecycle's one timer, armed at its pollTimeout(). */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private readonly traffic: Traffic;
  private readonly peers: PeerFilter;
  /** The data path: flows for a UDP service, pipes for a TCP one. */
  private readonly flows: UdpFlows | undefined;
  private readonly pipes: TcpPipes | undefined;

  constructor(private readonly o: TunnelOptions) {
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
    this.log = o.logger.child({ service: o.service.name, relay: o.relayIp });
    // RFC 6062 needs a stream control connection; a turn: URI serves TCP on the same port.
    this.controlTransport =
      o.service.protocol === "tcp" && o.uri.transport === "udp" ? "tcp" : o.uri.transport;
    this.life = new TunnelLifecycle({
      serviceName: o.service.name,
      relayIp: o.relayIp,
      relayPort: o.uri.port,
      family: isIP(o.relayIp) === 6 ? 6 : 4,
      control: this.controlTransport,
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
    this.traffic = new Traffic(o.counters);
    this.peers = new PeerFilter(o.service.allowPeers.ips, this.log);
    const dataPath = {
      target: o.service.target,
      dialer: new TargetDialer(o.allowMetadataTargets === true),
      log: this.log,
      traffic: this.traffic,
      peers: this.peers,
      client: () => this.life.client,
    };
    if (o.service.protocol === "udp") {
      this.flows = new UdpFlows({
        ...dataPath,
        idleMs: o.udpFlowIdleMs ?? UDP_FLOW_IDLE_MS,
        now: this.now,
        transmit: (bytes, payload) => this.control?.send(bytes, payload),
      });
    } else {
      this.pipes = new TcpPipes({
        ...dataPath,
        // RFC 6062 data connections go where the control connection went (a redirect too).
        relay: () => this.life.relay,
        tls: this.controlTransport === "tls" ? () => this.tlsOptions() : undefined,
        splice: o.tcpSplice ?? "auto",
      });
    }
  }

  // -------------------------------------------------------------------------------------------
  // What GET /list and the metrics read

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

  /** The relay as a TURN URI with its address: where a draining relay sent it, if it did. */
  get relayLabel(): string {
    const relay = this.life.relay;
    const h = relay.family === 6 ? `[${relay.ip}]` : relay.ip;
    const transport = this.controlTransport === "tls" ? "tcp" : this.controlTransport;
    return `${this.o.uri.secure ? "turns" : "turn"}:${h}:${relay.port}?transport=${transport}`;
  }

  /** UDP peer flows, or bound RFC 6062 connections. */
  get openConnections(): number {
    return this.flows?.size ?? this.pipes?.open ?? 0;
  }

  /** Peer to target. */
  get bytesIn(): number {
    // Spliced pipes count in the kernel: their bytes are added when read (here and bytesOut).
    this.pipes?.syncCounters();
    return this.traffic.bytesIn;
  }

  /** Target to peer. */
  get bytesOut(): number {
    this.pipes?.syncCounters();
    return this.traffic.bytesOut;
  }

  /** UDP peer flows that got no channel (all 4096 numbers bound or cooling down). */
  get channelsExhausted(): number {
    return this.flows?.channelsExhausted ?? 0;
  }

  /** Datagrams and connection attempts from peers outside --allow-peer (a permissive relay). */
  get peersRefused(): number {
    return this.peers.refused;
  }

  // -------------------------------------------------------------------------------------------
  // Inputs: each is one call into the lifecycle, then drive()

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

  private onTimer(): void {
    this.life.handleTimeout(this.now());
    this.drive();
  }

  private onControlOpened(attempt: number): void {
    this.life.handleConnected(attempt, this.now());
    this.drive();
  }

  private onControlFailed(attempt: number, reason: string): void {
    this.life.handleTransportFailed(attempt, reason, this.now());
    this.drive();
  }

  /** One datagram or frame from the relay; peer data in it goes on to the UDP flows. */
  private onRelayMessage(attempt: number, bytes: Uint8Array): void {
    const data = this.life.handleInput(attempt, bytes, this.now());
    if (data?.peer !== undefined) {
      this.flows?.fromPeer(data.peer, data.bytes.subarray(data.start, data.end));
    }
    this.drive();
  }

  // -------------------------------------------------------------------------------------------
  // The loop

  /** After every input: carry out what the lifecycle asks for, in order, then re-arm its timer. */
  private drive(): void {
    for (let o = this.life.pollOutput(); o !== undefined; o = this.life.pollOutput()) {
      this.perform(o);
    }
    this.rearmTimer();
  }

  private perform(o: TunnelOutput): void {
    switch (o.type) {
      // I/O the lifecycle asks for; what comes of it is a later input.
      case "transmit":
        this.control?.send(o.bytes);
        return;
      case "fetch-credentials":
        void this.fetchCredentials(o.attempt);
        return;
      case "connect":
        void this.connect(o.attempt, o.relay);
        return;
      case "disconnect":
        this.disconnect(o.release);
        return;
      // The data path's business.
      case "ready":
        this.flows?.startSweep();
        break;
      case "channel-bound":
        this.flows?.channelBound(o.peer, o.channel);
        return;
      case "connection-attempt":
        this.pipes?.accept(o.peer, o.connectionId);
        return;
      case "down":
        this.o.counters.reconnects++;
        break;
    }
    logLifecycleEvent(this.log, o, {
      target: `${this.o.service.protocol}://${this.o.service.target.host}:${this.o.service.target.port}`,
      now: this.now,
      wallNow: this.wallNow,
    });
  }

  /** The lifecycle's one timer at its pollTimeout(); none when it has nothing scheduled. */
  private rearmTimer(): void {
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
      this.onTimer();
    }, delay);
  }

  // -------------------------------------------------------------------------------------------
  // The I/O the lifecycle asks for

  private async fetchCredentials(attempt: number): Promise<void> {
    try {
      const creds = await this.o.credentials.get();
      this.life.handleCredentials(attempt, creds, this.now(), this.wallNow());
    } catch (err) {
      this.life.handleCredentialsFailed(attempt, (err as Error).message, this.now());
    }
    this.drive();
  }

  /** For a UDP service the target's address first, then the control connection to `relay`. */
  private async connect(attempt: number, relay: RelayAddress): Promise<void> {
    if (this.flows !== undefined) {
      try {
        await this.flows.resolveTarget();
      } catch (err) {
        const reason = `target ${this.o.service.target.host}: ${(err as Error).message}`;
        this.onControlFailed(attempt, reason);
        return;
      }
      if (attempt !== this.life.attempt) return;
    }
    this.control = new ControlConnection(
      {
        transport: this.controlTransport,
        relayIp: relay.ip,
        port: relay.port,
        tls: () => this.tlsOptions(),
      },
      {
        opened: () => this.onControlOpened(attempt),
        message: (bytes) => this.onRelayMessage(attempt, bytes),
        failed: (reason) => this.onControlFailed(attempt, reason),
      },
    );
  }

  /** The lifecycle is done with this allocation: close its connection, flows and pipes. */
  private disconnect(release: boolean): void {
    this.control?.close(release);
    this.control = undefined;
    this.flows?.closeAll();
    this.pipes?.closeAll();
  }

  private tlsOptions() {
    // The relay this attempt dials: its own, or a draining relay's alternate (same name).
    return relayTlsOptions(this.o.uri, this.life.relay, this.o.tls);
  }
}
