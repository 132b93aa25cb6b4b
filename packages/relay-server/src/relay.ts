// The socket driver: executes relay-core's decisions. UDP goes through a UdpPath (udp/: the
// batched native module, or node:dgram), TCP and TLS through node:net and node:tls here.
//
// It owns every socket and the one timer, and follows relay-core's call order (see
// packages/relay-core/README.md): after each handle* call, act on the returned route at once,
// then drain pollOutput(), then re-arm the timer from pollTimeout(). It knows nothing of
// yargs or OpenTelemetry: configuration arrives as RelayConfig, metrics leave as plain counters.
//
// Data path (the part that runs per packet):
//   client -> peer: relay-core returns ToPeer with a byte range of the received bytes; the UDP
//     path sends it from the allocation's relay socket without a copy.
//   peer -> client: relay-core returns ToClient with a channel number; the 4-byte ChannelData
//     header goes in front of the payload without concatenating (RFC 8656 §12.4), with 4-byte
//     padding on TCP/TLS (§12.5). See udp/batch-path.ts for the batched UDP details.

import { readFileSync } from "node:fs";
import net from "node:net";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  AUTH_FAILURE_REASONS,
  type ClientEndpoint,
  CombinedCredentials,
  type ConnectionId,
  type CredentialStore,
  connectionId,
  DROP_REASONS,
  type ListenerId,
  listenerId,
  MAX_STREAM_FRAME,
  MAX_UNAUTHENTICATED_STREAM_FRAME,
  methodName,
  PeerAddressPolicy,
  type PeerConnectionId,
  parseIp,
  type RelayId,
  RouteKind,
  SeededRandom,
  SharedSecretCredentials,
  StaticCredentials,
  StreamFramer,
  TurnServer,
  type TurnServerOutput,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import { CryptoRandom, type Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, dupFd, tcpListen } from "@turnpike/udp-batch";
import type { RelayConfig, SocketAddress } from "./config/types.js";
import { formatSocketAddress } from "./config/values.js";
import {
  type ConnectionLedger,
  LocalConnectionLedger,
  SharedConnectionLedger,
} from "./connection-ledger.js";
import type { AllocationRow } from "./discovery.js";
import { type RelayStats, type RelayTelemetry, recordRelayed, relaySlot } from "./stats.js";
import type { RelayAddresses, RelayDeps, RunningRelay, WorkerContext } from "./types.js";
import { selectUdpPath } from "./udp/select.js";
import type { UdpHost, UdpPath } from "./udp/udp-path.js";
import { type HandOverMessage, holdForOwner, RemoteConnection } from "./workers/hand-over.js";

/** Messages workers route to each other (through the supervisor). */
type RoutedMessage =
  /** RFC 6062 hand-over: `up` from the worker holding the socket to the owner, else down. */
  | { readonly r: "hand-over"; readonly up: boolean; readonly m: HandOverMessage }
  /** A pinned port another worker must release for `principal`, and the answer. */
  | {
      readonly r: "release-pin";
      readonly id: number;
      readonly family: 4 | 6;
      readonly port: number;
      readonly principal: string;
    }
  | { readonly r: "pin-released"; readonly id: number; readonly result: string }
  /** A worker died: drop what was held for it or adopted from it. */
  | { readonly r: "worker-gone"; readonly index: number };

/** A TCP/TLS client whose socket buffers more than this is not fed more relayed data. */
const STREAM_HIGH_WATER = 1 << 20;
/**
 * A connection without an allocation whose answers pile up unread past this is not read from
 * until they drain (then its idle clock runs out): a stranger cannot park responses here.
 */
const UNAUTHENTICATED_WRITE_LIMIT = 64 << 10;
/**
 * Socket buffers: the listening socket takes every client's traffic, so a burst while the
 * event loop is busy (GC, a batch of Allocates) must fit in the kernel's queue rather than be
 * dropped there. Linux caps the request at net.core.rmem_max / wmem_max (4 MiB here).
 */
const LISTENER_BUFFER_BYTES = 4 << 20;
// Relay sockets keep the kernel default: each carries one allocation's peers, and two
// setsockopt calls per allocation showed up in the allocation-setup profile.
/** Zero bytes for ChannelData padding on streams (RFC 8656 §12.5). */
const PADDING = Buffer.alloc(3);
/**
 * Upper bound on a TLS handshake (a few round trips, even on a slow mobile link), counted from
 * the TCP accept whatever arrives meanwhile: a handshake dribbled a byte at a time ends too.
 */
const TLS_HANDSHAKE_MS = 10_000;

const SLOT_TCP_C2P = relaySlot("client_to_peer", "tcp");
const SLOT_TCP_P2C = relaySlot("peer_to_client", "tcp");
const SLOT_TLS_C2P = relaySlot("client_to_peer", "tls");
const SLOT_TLS_P2C = relaySlot("peer_to_client", "tls");

/** An accepted TCP connection (for TLS: from the TCP accept on, through the handshake). */
interface Admission {
  /** Its source for --max-connections-per-ip: the IPv4 address, or the IPv6 /64. */
  readonly source: string;
  /** Counted against its source: true until it authenticates (allocation or ConnectionBind). */
  counted: boolean;
  /** Handed over by another worker, which holds (and counts) the socket itself. */
  readonly remote?: boolean;
}

interface StreamClient {
  readonly id: ConnectionId;
  readonly socket: net.Socket;
  readonly framer: StreamFramer;
  readonly transport: "tcp" | "tls";
  readonly admission: Admission;
  /** RFC 6062 §5.4: after ConnectionBind the connection is a raw pipe to this peer socket. */
  pipe: net.Socket | undefined;
  /** Holds an allocation: full-size frames, no idle limit, not counted against its source. */
  authenticated: boolean;
  /** performance.now() of the last complete frame: bytes alone do not keep a connection. */
  lastFrameAt: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** Its ConnectionBind belongs to this worker (RFC 6062 across workers; see hand-over.ts). */
  handOverTo: number | undefined;
  readonly listener: ListenerId;
}

export async function startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay> {
  const driver = new RelayDriver(config, deps);
  try {
    await driver.listen();
  } catch (err) {
    await driver.close();
    throw err;
  }
  return driver;
}

class RelayDriver implements RunningRelay, UdpHost {
  ready = false;
  draining = false;

  readonly core: TurnServer;
  readonly stats: RelayStats;
  readonly telemetry: RelayTelemetry;
  private readonly log: Logger;
  private readonly udp: UdpPath;
  private readonly udpFallbackReason: string | undefined;
  /** The next UDP listener id (the id relay-core sees for UDP clients), in bind order. */
  private nextUdpListener = 0;
  private readonly streamServers: net.Server[] = [];
  private readonly streams = new Map<ConnectionId, StreamClient>();
  private nextConnectionId = 1;
  /** TCP relayed-address listeners still binding (UDP relay sockets live in the UdpPath). */
  private readonly pendingRelays = new Map<RelayId, net.Server>();
  /** --max-connections and --max-connections-per-ip: this engine's, or the workers' shared. */
  private readonly connections: ConnectionLedger;
  /** Set when this driver is one of several workers. */
  private readonly worker: WorkerContext | undefined;
  /** RFC 6062 across workers: connections this worker holds for others, and adopted ones. */
  private readonly heldForOthers = new Map<
    number,
    {
      readonly owner: number;
      readonly socket: net.Socket;
      readonly handle: (m: HandOverMessage) => void;
    }
  >();
  private readonly adopted = new Map<
    string,
    { readonly from: number; readonly remote: RemoteConnection }
  >();
  private nextHandOver = 1;
  /** Pinned-port releases asked of the other workers, waiting for their answers. */
  private readonly pinReleases = new Map<
    number,
    { waiting: number; other: boolean; done: () => void }
  >();
  /** TLS handshakes under way by 4-tuple ("addr|port|localPort"), with their deadline. */
  private readonly handshakes = new Map<
    string,
    { readonly admission: Admission; readonly raw: net.Socket; readonly timer: NodeJS.Timeout }
  >();
  private readonly peerPolicy: PeerAddressPolicy;
  /** RFC 6062: TCP relayed addresses (listeners) and peer connections by CONNECTION-ID. */
  private readonly tcpRelays = new Map<RelayId, net.Server>();
  private readonly peerSockets = new Map<PeerConnectionId, net.Socket>();
  /** Peer connections joined to a client data connection (RFC 6062 §5.4). */
  private readonly pipedPeers = new Set<PeerConnectionId>();
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private wallClockTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private drainWaiter: (() => void) | undefined;
  private bound: { udp: SocketAddress[]; tcp: SocketAddress[]; tls: SocketAddress[] } = {
    udp: [],
    tcp: [],
    tls: [],
  };

  constructor(
    private readonly config: RelayConfig,
    deps: RelayDeps,
  ) {
    this.log = deps.logger;
    this.stats = deps.metrics.stats;
    this.telemetry = deps.metrics.telemetry;
    const stores: CredentialStore[] = [new SharedSecretCredentials([config.token])];
    if (config.users.length > 0) {
      stores.unshift(new StaticCredentials(config.users.map((u) => [u.username, u.password])));
    }
    // Listeners configured with port 0 add their real port once bound (listenUdp/listenStream).
    this.peerPolicy = new PeerAddressPolicy({
      allow: config.allowPeers,
      deny: config.denyPeers,
      allowLoopback: config.allowLoopbackPeers,
      allowSelf: config.allowSelfPeer,
      self: {
        addresses: config.selfAddresses,
        ports: {
          udp: config.listen.map((a) => a.port),
          tcp: [
            ...[...config.listen, ...config.tlsListen].map((a) => a.port),
            ...(deps.ownPorts ?? []),
          ],
        },
        relayPorts: { min: config.minPort, max: config.maxPort },
      },
    });
    const w = deps.worker;
    this.worker = w;
    this.connections = w
      ? new SharedConnectionLedger(w.limits)
      : new LocalConnectionLedger(config.maxConnections, config.maxConnectionsPerIp);
    this.core = new TurnServer({
      realm: config.realm,
      credentials: stores.length === 1 ? stores[0]! : new CombinedCredentials(stores),
      random:
        config.rngSeed !== undefined
          ? new SeededRandom(config.rngSeed + (w?.index ?? 0))
          : new CryptoRandom(),
      // Workers: one nonce secret, quotas and the unauthenticated rate held together, and
      // CONNECTION-IDs that name the worker owning them (pool.ts).
      ...(w && {
        secret: w.secret,
        allocationQuota: {
          acquire: (principal: string) => w.limits.acquireAllocation(principal),
          release: (principal: string) => w.limits.releaseAllocation(principal),
        },
        unauthenticatedLimiter: {
          // Every worker's buckets on one clock: wall-clock milliseconds.
          allow: (source: string, now: number) =>
            w.limits.allowUnauthenticated(source, performance.timeOrigin + now),
        },
        connectionIds: { index: w.index, count: w.count },
      }),
      relayAddresses: {
        ip4: config.relayIp4 ? { bind: config.relayIp4, advertised: config.publicIp4 } : undefined,
        ip6: config.relayIp6 ? { bind: config.relayIp6, advertised: config.publicIp6 } : undefined,
      },
      // A worker relays on its slice of the range (a peer's datagram reaches its owner).
      minPort: w?.portSlice.minPort ?? config.minPort,
      maxPort: w?.portSlice.maxPort ?? config.maxPort,
      pinnedPorts: config.pinnedPorts,
      revokedUsers: [...config.revoke, ...config.revokeFileUsers],
      software: config.software,
      peerPolicy: this.peerPolicy,
      maxAllocations: config.maxAllocations,
      maxAllocationsPerUser: config.maxAllocationsPerUser,
      maxPermissionsPerAllocation: config.maxPermissions,
      maxChannelsPerAllocation: config.maxChannels,
      legacyChannelNumbers: config.legacyChannelNumbers,
      maxUnauthenticatedRate: config.maxUnauthenticatedRate,
      unixTimeOffsetMs: Date.now() - performance.now(),
      alternateServer: config.alternateServer
        ? {
            family: config.alternateServer.family,
            address: config.alternateServer.ip,
            port: config.alternateServer.port,
          }
        : undefined,
    });
    this.stats.beforeCollect = () => this.syncGauges();
    const choice = selectUdpPath(config.udpIo, this);
    this.udp = choice.path;
    this.udpFallbackReason = choice.fallbackReason;
    this.stats.udpIo = this.udp.kind;
    w?.onRoute((from, message) => this.onRoute(from, message as RoutedMessage));
  }

  /** Which UDP data path runs ("batch" or "dgram"), for the log, /readyz and metrics. */
  get udpIo(): "batch" | "dgram" {
    return this.udp.kind;
  }

  // ---------------------------------------------------------------------------------------
  // Listeners

  async listen(): Promise<void> {
    for (const addr of this.config.listen) {
      await this.listenUdp(addr);
      await this.listenStream(addr, "tcp");
    }
    if (this.config.tlsListen.length > 0) {
      const cert = readFileSync(this.config.tlsCert!);
      const key = readFileSync(this.config.tlsKey!);
      for (const addr of this.config.tlsListen) await this.listenStream(addr, "tls", { cert, key });
    }
    // Wall-clock jumps matter only for TURN REST expiry; a periodic resync is plenty.
    this.wallClockTimer = setInterval(
      () => this.core.setUnixTimeOffset(Date.now() - performance.now()),
      10_000,
    );
    this.wallClockTimer.unref();
    this.ready = true;
    // The CLI logs the bound addresses ("listening"); this line says what relays where, and
    // on which UDP data path (with the reason when the batched one could not be used).
    this.log.info("ready", {
      relayIp4: this.config.relayIp4,
      relayIp6: this.config.relayIp6,
      ports: `${this.worker?.portSlice.minPort ?? this.config.minPort}-${this.worker?.portSlice.maxPort ?? this.config.maxPort}`,
      udpIo: this.udp.kind,
      ...(this.udpFallbackReason !== undefined ? { udpIoFallback: this.udpFallbackReason } : {}),
      pinnedPorts:
        this.config.pinnedPorts === undefined
          ? undefined
          : `${this.config.pinnedPorts.min}-${this.config.pinnedPorts.max}`,
    });
  }

  private async listenUdp(addr: SocketAddress): Promise<void> {
    const id = listenerId(this.nextUdpListener++);
    const bound = await this.udp.listen(id, addr, {
      fd: this.worker?.listenFds?.udp[id],
      bufferBytes: LISTENER_BUFFER_BYTES,
      // Workers share the address; the kernel keeps each client 5-tuple on one of them.
      reusePort: this.worker !== undefined,
    });
    this.bound.udp.push(bound);
    this.peerPolicy.addSelfPort(bound.port, "udp");
  }

  private listenStream(
    addr: SocketAddress,
    transport: "tcp" | "tls",
    tlsOptions?: tls.TlsOptions,
  ): Promise<void> {
    const listener = listenerId(this.streamServers.length);
    const server =
      transport === "tls"
        ? tls.createServer(
            // The handshake deadline is ours (onTlsAccept): Node's is off.
            { ...tlsOptions, handshakeTimeout: 0, allowHalfOpen: true },
            (socket) => this.onTlsSecure(listener, socket),
          )
        : // Half-open: an RFC 6062 data connection may send FIN after its request and still
          // be owed the peer's reply; each side's end is forwarded, not imposed.
          net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
            const admission = this.admit(socket);
            if (admission) this.onStreamConnection(listener, "tcp", socket, admission);
          });
    this.streamServers.push(server);
    server.on("error", (err) =>
      this.log.warn(`${transport} listener error`, { error: err.message }),
    );
    if (transport === "tls") {
      // The TCP accept, before any TLS byte: admission and the handshake's own clock.
      server.on("connection", (raw: net.Socket) => this.onTlsAccept(raw));
      // With a listener attached Node leaves the socket open: a failed handshake would
      // otherwise hold its connection until the client gives up.
      server.on("tlsClientError", (err, socket) => {
        this.log.debug("tls handshake failed", { error: err.message });
        socket.destroy();
      });
    }
    // Plain TCP on a TURN port may still start a TLS handshake or garbage: the framer rejects it.
    const at = this.streamListenTarget(addr, transport, listener);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(at, () => {
        server.off("error", reject);
        const a = server.address() as net.AddressInfo;
        this.bound[transport].push({ ip: a.address, port: a.port, family: addr.family });
        this.peerPolicy.addSelfPort(a.port, "tcp");
        resolve();
      });
    });
  }

  /**
   * Where a TCP/TLS listener binds. Workers share it with SO_REUSEPORT; where the native module
   * loads, its socket also steers by source address, so an RFC 6062 data connection reaches the
   * worker of its control connection (udp-batch's tcpListen). Otherwise the kernel's 4-tuple
   * hash spreads them and ConnectionBinds are handed over between workers (hand-over.ts).
   */
  private streamListenTarget(
    addr: SocketAddress,
    transport: "tcp" | "tls",
    listener: ListenerId,
  ): net.ListenOptions {
    const w = this.worker;
    if (w === undefined) return { host: addr.ip, port: addr.port, ipv6Only: addr.family === 6 };
    // The supervisor's socket: this worker owns (and closes) a duplicate of it.
    const fds = w.listenFds;
    const tcpListeners = this.config.listen.length;
    const kept = transport === "tcp" ? fds?.tcp[listener] : fds?.tls[listener - tcpListeners];
    if (kept !== undefined) return { fd: dupFd(kept) } as net.ListenOptions;
    if (batchIoAvailability().available) {
      const fd = tcpListen({
        family: addr.family,
        address: addr.ip,
        port: addr.port,
        steerGroup: w.count,
      });
      return { fd } as net.ListenOptions;
    }
    return {
      host: addr.ip,
      port: addr.port,
      ipv6Only: addr.family === 6,
      ...({ reusePort: true } as object),
    };
  }

  // ---------------------------------------------------------------------------------------
  // Client traffic

  /**
   * A TCP connection was accepted (for TURNS before any TLS byte). Refused beyond
   * --max-connections, or beyond --max-connections-per-ip connections of its source that have
   * not authenticated yet: one source cannot take every slot with connections that say nothing
   * (or a byte a second). Counted until it closes, per source until it authenticates.
   */
  private admit(socket: net.Socket): Admission | undefined {
    const source = sourceOf(stripMapped(socket.remoteAddress ?? ""));
    const verdict = this.closed ? "total" : this.connections.admit(source);
    if (verdict !== "ok") {
      this.telemetry.drop(
        verdict === "per-ip" ? "client-connection-per-ip-limit" : "client-connection-limit",
      );
      socket.destroy();
      return undefined;
    }
    const admission: Admission = { source, counted: true };
    socket.once("close", () => {
      this.connections.release(source, admission.counted);
      admission.counted = false;
    });
    return admission;
  }

  /** The connection authenticated: it no longer counts against its source. */
  private uncount(admission: Admission): void {
    if (!admission.counted || admission.remote) return;
    admission.counted = false;
    this.connections.recount(admission.source, -1);
  }

  /** Its allocation ended: unauthenticated again (it is not closed for being over the cap). */
  private recount(admission: Admission): void {
    if (admission.counted || admission.remote) return;
    admission.counted = true;
    this.connections.recount(admission.source, 1);
  }

  /** TURNS: the TCP accept. The handshake gets a fixed deadline, whatever bytes arrive. */
  private onTlsAccept(raw: net.Socket): void {
    const admission = this.admit(raw);
    if (admission === undefined) return;
    const key = fourTuple(raw);
    const timer = setTimeout(
      () => {
        this.handshakes.delete(key);
        this.log.debug("tls handshake timed out", { remote: key });
        raw.destroy();
      },
      Math.min(this.config.tcpIdleTimeout * 1000, TLS_HANDSHAKE_MS),
    );
    this.handshakes.set(key, { admission, raw, timer });
    raw.once("close", () => {
      const pending = this.handshakes.get(key);
      if (pending?.raw !== raw) return;
      clearTimeout(pending.timer);
      this.handshakes.delete(key);
    });
  }

  /** TURNS: the handshake completed in time. */
  private onTlsSecure(listener: ListenerId, socket: tls.TLSSocket): void {
    const key = fourTuple(socket);
    const pending = this.handshakes.get(key);
    if (pending === undefined) {
      socket.destroy(); // its deadline passed as the handshake finished
      return;
    }
    clearTimeout(pending.timer);
    this.handshakes.delete(key);
    this.onStreamConnection(listener, "tls", socket, pending.admission);
  }

  private onStreamConnection(
    listener: ListenerId,
    transport: "tcp" | "tls",
    socket: net.Socket,
    admission: Admission,
  ): StreamClient {
    const id = connectionId(this.nextConnectionId++);
    const client: StreamClient = {
      id,
      socket,
      // Until it holds an allocation a connection may send Binding, Allocate or ConnectionBind
      // requests only: a header claiming more breaks the stream at once.
      framer: new StreamFramer({ maxFrameLength: MAX_UNAUTHENTICATED_STREAM_FRAME }),
      transport,
      admission,
      pipe: undefined,
      authenticated: false,
      lastFrameAt: performance.now(),
      idleTimer: undefined,
      handOverTo: undefined,
      listener,
    };
    this.streams.set(id, client);
    socket.setNoDelay(true);
    this.armIdle(client);
    const remoteAddress = stripMapped(socket.remoteAddress ?? "");
    this.core.handleConnectionOpened(
      id,
      listener,
      transport,
      remoteAddress,
      socket.remotePort ?? 0,
    );
    const slot = transport === "tls" ? SLOT_TLS_C2P : SLOT_TCP_C2P;
    socket.on("data", (chunk: Buffer) => this.onStreamData(client, chunk, slot));
    socket.on("error", (err) => this.log.debug("client connection error", { error: err.message }));
    // A TURN control connection that ends is done; a piped one forwards its end to the peer.
    socket.on("end", () => {
      if (client.pipe === undefined && client.handOverTo === undefined) socket.end();
    });
    socket.on("close", () => {
      clearTimeout(client.idleTimer);
      if (client.handOverTo !== undefined) return; // relay-core forgot it at the hand-over
      this.streams.delete(id);
      this.core.handleConnectionClosed(id, performance.now());
      this.flush();
    });
    return client;
  }

  /**
   * The idle clock of a connection without an allocation: only complete frames reset it
   * (onStreamData), so a byte a second, a frame that never completes or a TLS session that
   * sends nothing ends after --tcp-idle-timeout. One timer per connection, re-armed for the
   * remainder when it fires, so the data path only stores a number.
   */
  private armIdle(client: StreamClient): void {
    const remaining = this.config.tcpIdleTimeout * 1000 - (performance.now() - client.lastFrameAt);
    client.idleTimer = setTimeout(() => this.onIdleTimer(client), Math.max(0, remaining));
  }

  private onIdleTimer(client: StreamClient): void {
    client.idleTimer = undefined;
    if (client.authenticated || client.pipe !== undefined || client.socket.destroyed) return;
    if (performance.now() - client.lastFrameAt >= this.config.tcpIdleTimeout * 1000) {
      this.log.debug("idle client connection closed", { connection: client.id });
      client.socket.destroy();
      return;
    }
    this.armIdle(client);
  }

  /**
   * An allocation was created (or ended) on a stream connection. With one it is governed by the
   * allocation (RFC 8656 §3.1, lifetime and Refresh) and by the user's quotas: full-size frames,
   * no idle limit, no per-source count. Without, back to the unauthenticated rules.
   */
  private setAuthenticated(connection: ConnectionId, authenticated: boolean): void {
    const client = this.streams.get(connection);
    if (client === undefined || client.pipe !== undefined) return;
    client.authenticated = authenticated;
    client.framer.maxFrameLength = authenticated
      ? MAX_STREAM_FRAME
      : MAX_UNAUTHENTICATED_STREAM_FRAME;
    clearTimeout(client.idleTimer);
    client.idleTimer = undefined;
    if (authenticated) {
      this.uncount(client.admission);
    } else {
      this.recount(client.admission);
      client.lastFrameAt = performance.now();
      this.armIdle(client);
    }
  }

  private onStreamData(client: StreamClient, chunk: Buffer, slot: number): void {
    if (client.handOverTo !== undefined) return; // another worker's now: hand-over.ts relays it
    if (client.pipe !== undefined) {
      this.pipeChunk(client.socket, client.pipe, chunk, slot);
      return;
    }
    const framer = client.framer;
    framer.push(chunk);
    const now = performance.now();
    for (let frame = framer.next(); frame !== undefined; frame = framer.next()) {
      client.lastFrameAt = now;
      if (this.core.handleStreamClient(client.id, frame, now) === RouteKind.ToPeer) {
        this.udp.sendToPeer(slot);
        continue;
      }
      // A control message: act on it now, since a ConnectionBind turns the rest of this very
      // chunk into raw peer data (RFC 6062 §5.4).
      this.flush();
      if (client.handOverTo !== undefined) {
        this.handOver(client, frame, framer.takeRemaining());
        return;
      }
      const pipe = client.pipe as net.Socket | undefined;
      if (pipe !== undefined) {
        const rest = framer.takeRemaining();
        if (rest.length > 0) this.pipeChunk(client.socket, pipe, Buffer.from(rest), slot);
        return;
      }
    }
    if (framer.error) {
      // Neither STUN nor ChannelData, or a frame larger than this connection may send: the
      // stream can't be resynchronised (RFC 8656 §12.5).
      this.telemetry.drop(framer.error === "oversized-frame" ? "oversized-frame" : "framing-error");
      client.socket.destroy();
    }
    this.flush();
    // Answers the client does not read: stop reading its requests until they drain (ws-style).
    const socket = client.socket;
    const limit = client.authenticated ? STREAM_HIGH_WATER : UNAUTHENTICATED_WRITE_LIMIT;
    if (socket.writableLength > limit && !socket.isPaused() && !socket.destroyed) {
      socket.pause();
      socket.once("drain", () => socket.resume());
    }
  }

  // ---------------------------------------------------------------------------------------
  // Peer traffic for stream clients (UdpHost)

  sendStreamToClient(client: ClientEndpoint, copy: boolean): void {
    const r = this.core.route;
    const stream = this.streams.get(client.connection);
    if (stream === undefined) return;
    const socket = stream.socket;
    if (socket.writableLength > STREAM_HIGH_WATER) {
      // The client reads slower than its peers send: UDP cannot be paused, so drop and count.
      this.telemetry.drop("backpressure");
      return;
    }
    const length = r.end - r.start;
    // A write that cannot complete at once keeps its buffer: bytes in a reused receive arena
    // must be copied first.
    const payload = copy
      ? Buffer.from(r.data.subarray(r.start, r.end))
      : r.start === 0 && r.end === r.data.length
        ? r.data
        : Buffer.from(r.data.buffer, r.data.byteOffset + r.start, length);
    if (r.channel === 0) {
      socket.write(payload);
    } else {
      // TCP keeps written buffers until they are flushed, so each header is its own buffer.
      const header = Buffer.allocUnsafe(4);
      writeChannelDataHeader(header, 0, r.channel, length);
      socket.cork();
      socket.write(header);
      socket.write(payload);
      const pad = (4 - (length & 3)) & 3;
      if (pad > 0) socket.write(PADDING.subarray(0, pad));
      socket.uncork();
    }
    recordRelayed(this.stats, stream.transport === "tls" ? SLOT_TLS_P2C : SLOT_TCP_P2C, length);
  }

  // ---------------------------------------------------------------------------------------
  // Outputs and the timer

  /**
   * Drain relay-core's outputs, re-arm the single timer (relay-core's call order), and send
   * what the UDP path queued.
   */
  private flush(): void {
    this.drainOutputs();
    this.arm();
    this.udp.flush();
  }

  drainOutputs(): void {
    for (let c = this.core.pollOutput(); c !== undefined; c = this.core.pollOutput()) {
      this.execute(c);
    }
  }

  armTimer(): void {
    this.arm();
  }

  debug(message: string, fields: Record<string, unknown>): void {
    this.log.debug(message, fields);
  }

  private execute(c: TurnServerOutput): void {
    switch (c.type) {
      case "transmit":
        this.sendControl(c.client, c.data);
        this.telemetry.response(
          methodName(c.method),
          c.errorCode === 0 ? "success" : "error",
          c.errorCode,
        );
        return;
      case "open-relay":
        if (c.protocol === "tcp") this.openTcpRelay(c.relay, c.bindAddress, c.port);
        else if (c.pinnedFor !== undefined && this.worker !== undefined) this.openPinnedRelay(c);
        else this.udp.openRelay(c.relay, c.family, c.bindAddress, c.port);
        return;
      case "hand-over-connection": {
        const client = this.streams.get(c.connection);
        if (client !== undefined) client.handOverTo = c.owner;
        return;
      }
      case "close-relay": {
        if (this.udp.closeRelay(c.relay)) return;
        const socket = this.tcpRelays.get(c.relay) ?? this.pendingRelays.get(c.relay);
        this.tcpRelays.delete(c.relay);
        this.pendingRelays.delete(c.relay);
        socket?.close();
        return;
      }
      case "close-connection": {
        const stream = this.streams.get(c.connection);
        // A piped data connection ends gracefully so relayed bytes still buffered get out.
        if (stream?.pipe !== undefined) stream.socket.end();
        else stream?.socket.destroy();
        return;
      }
      case "connect-peer":
        this.connectPeer(c.peerConnection, c.relay, c.family, c.address, c.port);
        return;
      case "bind-connection":
        this.bindConnection(c.peerConnection, c.dataConnection);
        return;
      case "close-peer-connection": {
        // A piped peer gets a graceful end (its last bytes still reach the client); one still
        // dialing or waiting for ConnectionBind is paused and would never read the peer's FIN,
        // so it is destroyed.
        const socket = this.peerSockets.get(c.peerConnection);
        this.peerSockets.delete(c.peerConnection);
        if (socket === undefined) return;
        if (this.pipedPeers.delete(c.peerConnection)) socket.end();
        else socket.destroy();
        return;
      }
      case "allocation-created":
        if (c.client.transport !== "udp") this.setAuthenticated(c.client.connection, true);
        this.telemetry.allocationCreated(c.client.transport, c.relayed[0]?.family ?? 4);
        if (this.log.enabled("debug")) {
          this.log.debug("allocation created", {
            allocation: c.allocation,
            client: `${c.client.transport}:${c.client.address}:${c.client.port}`,
            username: c.username,
            relayed: c.relayed.map((r) => `${r.address}:${r.port}`),
            lifetime: c.lifetimeSeconds,
          });
        }
        return;
      case "allocation-ended":
        if (c.client.transport !== "udp") this.setAuthenticated(c.client.connection, false);
        this.telemetry.allocationEnded(
          c.client.transport,
          c.families[0] ?? 4,
          c.reason === "expired" ? "expired" : "deleted",
          c.lifetimeSeconds,
        );
        if (c.reason === "taken-over") {
          // A pinned port moved to a newer allocation of the same user: a tunnel restarted, or
          // two tunnels share one credential (then this repeats: worth a warning).
          this.log.warn("pinned port taken over by a newer allocation of the same user", {
            allocation: c.allocation,
            staleClient: `${c.client.transport}:${c.client.address}:${c.client.port}`,
          });
        } else if (c.reason === "revoked") {
          this.log.info("allocation of a revoked user ended", { allocation: c.allocation });
        } else if (this.log.enabled("debug")) {
          this.log.debug("allocation ended", { allocation: c.allocation, reason: c.reason });
        }
        if (this.draining && this.core.allocationCount === 0) this.drainWaiter?.();
        return;
    }
  }

  private sendControl(client: ClientEndpoint, data: Uint8Array): void {
    if (client.transport === "udp") {
      this.udp.sendControl(client, data);
      return;
    }
    const stream = this.streams.get(client.connection);
    if (stream && !stream.socket.destroyed) stream.socket.write(data);
  }

  // ---------------------------------------------------------------------------------------
  // RFC 6062 TCP relaying

  private openTcpRelay(relay: RelayId, address: string, port: number): void {
    const server = net.createServer(
      { noDelay: true, pauseOnConnect: true, allowHalfOpen: true },
      (socket) => this.onPeerConnection(relay, socket),
    );
    this.pendingRelays.set(relay, server);
    const onBindError = (err: Error) => {
      if (this.pendingRelays.get(relay) !== server) return;
      this.pendingRelays.delete(relay);
      server.close();
      this.log.debug("tcp relay port bind failed", { port, error: err.message });
      this.core.handleRelayBindFailed(relay, performance.now());
      this.flush();
    };
    server.once("error", onBindError);
    server.listen({ host: address, port, exclusive: true }, () => {
      server.off("error", onBindError);
      if (this.pendingRelays.get(relay) !== server) {
        server.close();
        return;
      }
      this.pendingRelays.delete(relay);
      this.tcpRelays.set(relay, server);
      server.on("error", (err) => this.log.debug("tcp relay error", { error: err.message }));
      this.core.handleRelayBound(relay, performance.now());
      this.flush();
    });
  }

  /** RFC 6062 §5.3: a peer connects to a TCP relayed address; held paused until bound. */
  private onPeerConnection(relay: RelayId, socket: net.Socket): void {
    const id = this.core.handlePeerConnectionAccepted(
      relay,
      stripMapped(socket.remoteAddress ?? ""),
      socket.remotePort ?? 0,
      performance.now(),
    );
    if (id === undefined) {
      socket.destroy();
      this.flush();
      return;
    }
    this.trackPeerSocket(id, socket);
    this.flush();
  }

  /** RFC 6062 §5.2: dial the peer from the relayed address for a Connect request. */
  private connectPeer(
    id: PeerConnectionId,
    relay: RelayId,
    family: 4 | 6,
    address: string,
    port: number,
  ): void {
    const server = this.tcpRelays.get(relay);
    const local = server?.address() as net.AddressInfo | undefined;
    const socket = net.connect({
      host: address,
      port,
      family,
      localAddress: local?.address,
      noDelay: true,
      allowHalfOpen: true,
    });
    socket.pause();
    // Known from the start, so a dial the core gives up on (allocation gone, 30 s timeout) is
    // found and destroyed by close-peer-connection.
    this.peerSockets.set(id, socket);
    const onError = () => {
      if (this.peerSockets.get(id) === socket) this.peerSockets.delete(id);
      socket.destroy();
      this.core.handlePeerConnectFailed(id, performance.now());
      this.flush();
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      if (this.peerSockets.get(id) !== socket) {
        socket.destroy(); // cancelled while dialing
        return;
      }
      this.trackPeerSocket(id, socket);
      this.core.handlePeerConnected(id, performance.now());
      this.flush();
    });
  }

  private trackPeerSocket(id: PeerConnectionId, socket: net.Socket): void {
    this.peerSockets.set(id, socket);
    socket.on("error", (err) => this.log.debug("peer connection error", { error: err.message }));
    socket.on("close", () => {
      if (this.peerSockets.get(id) === socket) this.peerSockets.delete(id);
      this.pipedPeers.delete(id);
      this.core.handlePeerConnectionClosed(id, performance.now());
      this.flush();
    });
  }

  /** RFC 6062 §5.4: join a client data connection and a peer connection. */
  private bindConnection(id: PeerConnectionId, connection: ConnectionId): void {
    const client = this.streams.get(connection);
    const peer = this.peerSockets.get(id);
    if (client === undefined || peer === undefined) {
      client?.socket.destroy();
      peer?.destroy();
      return;
    }
    client.pipe = peer;
    this.pipedPeers.add(id);
    // The data connection is no longer a TURN control connection: authenticated by its
    // ConnectionBind, and no idle limit of its own.
    this.uncount(client.admission);
    clearTimeout(client.idleTimer);
    client.idleTimer = undefined;
    const slot = client.transport === "tls" ? SLOT_TLS_P2C : SLOT_TCP_P2C;
    peer.on("data", (chunk: Buffer) => this.pipeChunk(peer, client.socket, chunk, slot));
    peer.on("end", () => client.socket.end());
    client.socket.on("end", () => peer.end());
    peer.resume();
  }

  /** Forward one chunk, pausing the source while the destination's buffer is full (ws-style). */
  private pipeChunk(from: net.Socket, to: net.Socket, chunk: Buffer, slot: number): void {
    recordRelayed(this.stats, slot, chunk.length);
    if (!to.write(chunk) && !from.isPaused()) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  }

  // ---------------------------------------------------------------------------------------
  // Workers: RFC 6062 hand-over and pinned ports (workers/pool.ts, workers/hand-over.ts)

  /** relay-core handed this connection's ConnectionBind to the worker that owns its id. */
  private handOver(client: StreamClient, frame: Uint8Array, rest: Uint8Array): void {
    const w = this.worker!;
    const owner = client.handOverTo!;
    clearTimeout(client.idleTimer);
    this.streams.delete(client.id);
    // The ConnectionBind authenticated here already; the owner answers it.
    this.uncount(client.admission);
    const socket = client.socket;
    socket.pause();
    const h = this.nextHandOver++;
    const bytes = new Uint8Array(frame.length + rest.length);
    bytes.set(frame, 0);
    bytes.set(rest, frame.length);
    const handle = holdForOwner(
      socket,
      h,
      (m) => w.route(owner, { r: "hand-over", up: true, m } satisfies RoutedMessage),
      {
        transport: client.transport,
        listener: client.listener,
        address: stripMapped(socket.remoteAddress ?? ""),
        port: socket.remotePort ?? 0,
        bytes,
      },
    );
    this.heldForOthers.set(h, { owner, socket, handle });
    socket.once("close", () => this.heldForOthers.delete(h));
    this.log.debug("connection handed over", { connection: client.id, owner });
  }

  private onRoute(from: number, message: RoutedMessage): void {
    switch (message.r) {
      case "hand-over": {
        const m = message.m;
        if (!message.up) {
          this.heldForOthers.get(m.h)?.handle(m);
          return;
        }
        if (m.k === "adopt") {
          this.adopt(from, m);
          return;
        }
        this.adopted.get(`${from}:${m.h}`)?.remote.receive(m);
        return;
      }
      case "release-pin": {
        const result = this.core.releasePinnedPort(
          message.family,
          message.port,
          message.principal,
          performance.now(),
        );
        this.flush();
        this.worker!.route(from, {
          r: "pin-released",
          id: message.id,
          result,
        } satisfies RoutedMessage);
        return;
      }
      case "pin-released": {
        const ask = this.pinReleases.get(message.id);
        if (ask === undefined) return;
        if (message.result === "other") ask.other = true;
        if (--ask.waiting === 0) ask.done();
        return;
      }
      case "worker-gone":
        for (const held of this.heldForOthers.values()) {
          if (held.owner === message.index) held.socket.destroy();
        }
        for (const a of this.adopted.values()) if (a.from === message.index) a.remote.destroy();
        return;
    }
  }

  /** Another worker hands us a data connection whose ConnectionBind names one of our ids. */
  private adopt(from: number, m: Extract<HandOverMessage, { k: "adopt" }>): void {
    const w = this.worker!;
    const key = `${from}:${m.h}`;
    const remote = new RemoteConnection(
      m.h,
      (msg) => w.route(from, { r: "hand-over", up: false, m: msg } satisfies RoutedMessage),
      m.address,
      m.port,
    );
    this.adopted.set(key, { from, remote });
    remote.once("close", () => this.adopted.delete(key));
    // The holder counts the socket against the limits; here it is a connection like any other.
    const admission: Admission = { source: sourceOf(m.address), counted: false, remote: true };
    // A RemoteConnection offers the part of net.Socket this driver uses (hand-over.ts).
    const client = this.onStreamConnection(
      m.listener,
      m.transport,
      remote as unknown as net.Socket,
      admission,
    );
    const slot = m.transport === "tls" ? SLOT_TLS_C2P : SLOT_TCP_C2P;
    this.onStreamData(
      client,
      Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.length),
      slot,
    );
  }

  /**
   * A pinned relay port (workers): if another worker holds it (the same principal's stale
   * allocation: a tunnel that restarted and came back through another worker), that worker
   * releases it at once and the bind is tried again, as a takeover within one engine is.
   */
  private openPinnedRelay(c: Extract<TurnServerOutput, { type: "open-relay" }>): void {
    const w = this.worker!;
    const retry = (err: Error): boolean => {
      if ((err as NodeJS.ErrnoException).code !== "EADDRINUSE" || w.count < 2) return false;
      const id = this.nextHandOver++;
      const fail = () => {
        this.core.handleRelayBindFailed(c.relay, performance.now());
        this.flush();
      };
      const timer = setTimeout(() => {
        this.pinReleases.delete(id);
        fail();
      }, 2000);
      this.pinReleases.set(id, {
        waiting: w.count - 1,
        other: false,
        done: () => {
          clearTimeout(timer);
          const ask = this.pinReleases.get(id)!;
          this.pinReleases.delete(id);
          if (ask.other) {
            fail();
            return;
          }
          // Released (or free by now): one more bind, which answers relay-core either way.
          this.udp.openRelay(c.relay, c.family, c.bindAddress, c.port);
          this.flush();
        },
      });
      for (let i = 0; i < w.count; i++) {
        if (i === w.index) continue;
        w.route(i, {
          r: "release-pin",
          id,
          family: c.family,
          port: c.port,
          principal: c.pinnedFor!,
        } satisfies RoutedMessage);
      }
      return true;
    };
    this.udp.openRelay(c.relay, c.family, c.bindAddress, c.port, retry);
  }

  /** One timer for the whole relay, at relay-core's pollTimeout(). */
  private arm(): void {
    const at = this.core.pollTimeout();
    if (at === undefined || this.closed) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.timer !== undefined && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, Math.ceil(at - performance.now())));
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.core.handleTimeout(performance.now());
    this.flush();
  }

  /** Gauges and core counters, copied only when metrics are collected. */
  private syncGauges(): void {
    this.udp.collect();
    const s = this.core.stats;
    this.stats.permissionsActive = s.permissionsActive;
    this.stats.channelsActive = s.channelsActive;
    this.stats.connectionsActive = this.streams.size;
    for (const reason of DROP_REASONS) {
      if (s.drops[reason] > 0) this.stats.drops.set(reason, s.drops[reason]);
    }
    for (const reason of AUTH_FAILURE_REASONS) {
      if (s.authFailures[reason] > 0) this.stats.authFailures.set(reason, s.authFailures[reason]);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Lifecycle

  allocations(): AllocationRow[] {
    const now = performance.now();
    // Monotonic instants to wall-clock ones, for people and platforms.
    const wall = (t: number) => new Date(Date.now() + (t - now)).toISOString();
    return this.core.allocations(now).map((a) => {
      const relayed = a.relayed.map((r) => formatSocketAddress({ ip: r.address, port: r.port }));
      return {
        user: a.user,
        pinnedPort: a.pinnedPort ?? null,
        transport: a.transport,
        relayedAddress: relayed[0] ?? null,
        relayedAddresses: relayed,
        clientTransport: a.client.transport,
        clientAddress: formatSocketAddress({ ip: a.client.address, port: a.client.port }),
        peers: a.peers,
        createdAt: wall(a.createdAt),
        expiresAt: wall(a.expiresAt),
      };
    });
  }

  setRevokedUsers(users: Iterable<string>): number {
    const ended = this.core.setRevokedUsers(users, performance.now());
    this.flush();
    return ended;
  }

  addresses(): RelayAddresses {
    return { udp: [...this.bound.udp], tcp: [...this.bound.tcp], tls: [...this.bound.tls] };
  }

  drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.core.startDraining();
    this.log.info("draining", { allocations: this.core.allocationCount, timeoutMs });
    if (this.core.allocationCount === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.drainWaiter = undefined;
        resolve();
      }
      this.drainWaiter = done;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.core.closeAll(performance.now());
    this.flush();
    if (this.timer) clearTimeout(this.timer);
    if (this.wallClockTimer) clearInterval(this.wallClockTimer);
    for (const s of this.pendingRelays.values()) s.close();
    this.pendingRelays.clear();
    for (const s of this.tcpRelays.values()) s.close();
    this.tcpRelays.clear();
    for (const s of this.peerSockets.values()) s.destroy();
    this.peerSockets.clear();
    for (const c of this.streams.values()) c.socket.destroy();
    for (const h of this.handshakes.values()) h.raw.destroy();
    await Promise.all([
      this.udp.close(),
      ...this.streamServers.map(
        (s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r())),
      ),
    ]).catch(() => undefined);
    this.log.info("closed");
  }
}

/**
 * The source a connection counts against: an IPv4 address, or the /64 of an IPv6 one (a single
 * subscriber usually holds a whole /64, RFC 6177).
 */
function sourceOf(address: string): string {
  const ip = address.includes(":") ? parseIp(address) : undefined;
  if (ip === undefined) return address;
  return `${Buffer.from(ip.bytes.subarray(0, 8)).toString("hex")}::/64`;
}

function fourTuple(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localPort}`;
}

/** A dual-stack TCP listener reports IPv4 clients as ::ffff:a.b.c.d. */
function stripMapped(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
