// The relay engine: one relay-core TurnServer and everything that executes its decisions.
// It owns the rooms (udp/ for UDP, stream/ for TCP and TLS, RFC 6062 included), the one timer
// and, on a worker, the link to the other workers; it knows nothing of yargs or
// OpenTelemetry: configuration arrives as RelayConfig, metrics leave as plain counters.
//
// THE LOOP. Node delivers inputs as callbacks; relay-core's call order (its README, "The call
// order") makes every one of them the same three steps, in afterInput() below:
//
//   input                            arrives in                      relay-core call
//   UDP datagram (batch: each one)   udp/batch-path.ts, dgram-path   handleClientDatagram,
//                                                                    handlePeerDatagram
//   TCP/TLS frame                    stream/clients.ts               handleStreamClient
//   client connection opened/closed  stream/clients.ts               handleConnection*
//   RFC 6062 peer connection         stream/peers.ts                 handlePeerConnection*
//   relay socket bound / not         engine/relay-sockets.ts         handleRelayBound/-Failed
//   the timer                        engine/timer.ts (onTimer here)  handleTimeout
//   operator (a reload), workers     here, shared/worker-link.ts     setRevokedUsers,
//                                                                    setCredentials, ...
//
// A data route (ChannelData, Send/Data) is acted on at once where it arrived, with no output
// and no timer: that is the whole data path. Everything else calls afterInput().
//
// With the kernel data path (kernel/, --kernel-path), bound ChannelData of UDP clients never
// reaches these rooms: relay-core's offload-channel / end-offload outputs put the bindings
// into the kernel's maps (kernel/offload.ts), and the kernel relays them; everything else
// arrives here as before.

import { performance } from "node:perf_hooks";
import { type AllocationId, listenerId, PeerAddressPolicy, TurnServer } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import type { RelayConfig, SocketAddress } from "../config/types.js";
import { revocationList } from "../config/values.js";
import { type AllocationRow, type EndAllocations, parseAllocationRowId } from "../discovery.js";
import { KernelOffload } from "../kernel/offload.js";
import { type EngineKernelPath, engineKernelPath } from "../kernel/share.js";
import { listenFailure } from "../preflight.js";
import { SharedConnectionLedger } from "../shared/connection-ledger.js";
import type { KernelAttachMode, WorkerContext } from "../shared/context.js";
import type { SharedLimits } from "../shared/shared-limits.js";
import { createSharedState, openSharedState } from "../shared/shared-state.js";
import { WorkerLink } from "../shared/worker-link.js";
import { Admissions } from "../stream/admission.js";
import { StreamClients } from "../stream/clients.js";
import { StreamListeners } from "../stream/listeners.js";
import { PeerConnections } from "../stream/peers.js";
import { ProxyGate } from "../stream/proxy-gate.js";
import { readSplicePipePool, splicedPipeLimit } from "../stream/spliced-pipe.js";
import { engineHandshakeLimits, TlsHandshakes } from "../stream/tls-handshakes.js";
import type { RelayAddresses, RelayDeps, ReloadOutcome, RunningRelay } from "../types.js";
import { LISTENER_BUFFER_BYTES } from "../udp/listener-buffers.js";
import { selectUdpPath } from "../udp/select.js";
import type { UdpPath } from "../udp/udp-path.js";
import type { EngineHost } from "./host.js";
import { LegacyPinWarnings } from "./legacy-pins.js";
import { executeOutput, type OutputRooms } from "./outputs.js";
import { RelaySockets } from "./relay-sockets.js";
import { Report } from "./report.js";
import {
  credentialStore,
  peerPolicyOptions,
  processLimits,
  turnServerOptions,
} from "./server-options.js";
import { RelayTimer, unixTimeOffsetMs, WallClockSync } from "./timer.js";

// Socket buffers: LISTENER_BUFFER_BYTES for each UDP listener (udp/listener-buffers.ts says
// why; the preflight warns where the kernel caps it). Relay sockets keep the kernel default:
// each carries one allocation's peers, and two setsockopt calls per allocation showed up in
// the allocation-setup profile.

/** Starts an engine: every listener bound, or every socket closed again and the error thrown. */
export async function startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay> {
  const engine = new RelayEngine(config, deps);
  try {
    await engine.listen();
  } catch (err) {
    await engine.close();
    throw err;
  }
  return engine;
}

class RelayEngine implements RunningRelay {
  ready = false;
  draining = false;

  private readonly core: TurnServer;
  private readonly log: Logger;
  private readonly worker: WorkerContext | undefined;
  private readonly peerPolicy: PeerAddressPolicy;
  private readonly udp: UdpPath;
  private readonly udpFallbackReason: string | undefined;
  private readonly kernel: EngineKernelPath;
  private readonly offload: KernelOffload | undefined;
  private readonly admissions: Admissions;
  private readonly clients: StreamClients;
  private readonly peers: PeerConnections;
  private readonly listeners: StreamListeners;
  private readonly link: WorkerLink | undefined;
  private readonly report: Report;
  private readonly rooms: OutputRooms;
  private readonly timer: RelayTimer;
  private readonly wallClock: WallClockSync;
  private readonly legacyPins: LegacyPinWarnings;
  /** The process-wide limits (a worker's are shared with the others). */
  private readonly limits: SharedLimits;
  /** The configuration whose live settings are in force (applyReloadable), and its generation. */
  private live: RelayConfig;
  private generation: number;
  /** The outputs are being executed (executeOutputs): an input meanwhile joins that run. */
  private executing = false;
  private closed = false;
  private drainWaiter: (() => void) | undefined;
  private readonly bound: { udp: SocketAddress[]; tcp: SocketAddress[]; tls: SocketAddress[] } = {
    udp: [],
    tcp: [],
    tls: [],
  };

  constructor(
    private readonly config: RelayConfig,
    deps: RelayDeps,
  ) {
    const { stats, telemetry } = deps.metrics;
    const w = deps.worker;
    this.log = deps.logger;
    this.worker = w;
    // Chosen (and for one engine opened) first: an explicit --kernel-path that cannot run
    // stops the start before anything else is made.
    this.kernel = engineKernelPath(config, w);
    this.live = config;
    this.generation = deps.configGeneration ?? 1;
    this.limits = w?.shared.limits ?? ownLimits(config, this.generation);
    // A worker (re)started with a newer generation than any engine applied yet.
    this.limits.setLimits(processLimits(config), this.generation);
    // Listeners configured with port 0 add their real port once bound (listen()).
    this.peerPolicy = new PeerAddressPolicy(peerPolicyOptions(config, deps.ownPorts));
    this.core = new TurnServer(
      turnServerOptions(config, {
        worker: w,
        limits: this.limits,
        peerPolicy: this.peerPolicy,
        unixTimeOffsetMs: unixTimeOffsetMs(),
        channelOffload: this.kernel.mode !== "off",
      }),
    );
    const host: EngineHost = {
      core: this.core,
      stats,
      telemetry,
      log: this.log,
      afterInput: () => this.afterInput(),
      deliverToStreamClient: (client, copy) => this.clients.deliver(client, copy),
      sendToPeer: (slot) => this.udp.sendToPeer(slot),
    };
    let choice: ReturnType<typeof selectUdpPath>;
    try {
      choice = selectUdpPath(config.udpIo, host);
    } catch (err) {
      if (this.kernel.mode !== "off") this.kernel.close();
      throw err;
    }
    this.udp = choice.path;
    this.udpFallbackReason = choice.fallbackReason;
    const k = this.kernel;
    this.offload =
      k.mode !== "off"
        ? new KernelOffload({
            kernel: k.kernel,
            buckets: k.buckets,
            listener: (id) => this.bound.udp[id],
            relayed: k.relayed,
            stats,
            log: this.log,
            ...(k.owners && { owners: k.owners }),
          })
        : undefined;
    this.admissions = new Admissions(new SharedConnectionLedger(this.limits), telemetry);
    this.link = w
      ? new WorkerLink(
          w,
          {
            adopt: (remote, m) => this.clients.adopt(remote, m),
            reservationTaken: (token) => {
              this.core.handleReservationTaken(token);
              this.afterInput();
            },
            releasePinnedPort: (release) => {
              this.core.releasePinnedPort(release, now());
              this.afterInput();
            },
          },
          this.log,
        )
      : undefined;
    const idleTimeoutMs = config.tcpIdleTimeout * 1000;
    this.clients = new StreamClients(host, this.admissions, idleTimeoutMs, this.link);
    const splicedPipes = splicedPipeLimit(config, w?.count ?? 1);
    this.peers = new PeerConnections(host, this.clients, splicedPipes);
    stats.tcpSplice = splicedPipes > 0;
    this.listeners = new StreamListeners(
      this.admissions,
      this.clients,
      this.log,
      new TlsHandshakes(engineHandshakeLimits(config, w?.count ?? 1), telemetry, this.log),
      config.listen.length,
      w,
      new ProxyGate(config.proxyProtocol, this.admissions, telemetry, this.log, idleTimeoutMs),
    );
    const connections = () => this.clients.size;
    this.report = new Report(
      this.core,
      this.udp,
      stats,
      telemetry,
      this.log,
      connections,
      w?.index ?? 0,
      this.offload,
    );
    this.rooms = {
      udp: this.udp,
      clients: this.clients,
      peers: this.peers,
      relaySockets: new RelaySockets(host, this.udp, this.peers, this.link),
      report: this.report,
      offload: this.offload,
      allocationEnded: () => {
        if (this.draining && this.core.allocationCount === 0) this.drainWaiter?.();
      },
    };
    this.timer = new RelayTimer(() => this.onTimer());
    this.wallClock = new WallClockSync(this.core);
    this.legacyPins = new LegacyPinWarnings(this.core, this.log);
    stats.udpIo = this.udp.kind;
    stats.kernelPath = this.kernel.mode;
    const readProgramCounters =
      this.kernel.mode !== "off" ? this.kernel.readProgramCounters : undefined;
    stats.beforeCollect = () => {
      this.peers.syncCounters();
      this.report.syncGauges();
      if (stats.tcpSplice) readSplicePipePool(stats);
      readProgramCounters?.(stats.kernelPathDatagrams);
    };
  }

  // ---------------------------------------------------------------------------------------
  // The loop

  /**
   * After every input that returned no route:
   *   1. outputs: drain pollOutput(), carrying each out in order (outputs.ts);
   *   2. timer: re-arm the one timer at pollTimeout() (timer.ts);
   *   3. sends: flush what the UDP path queued outside a receive batch (inside one, the
   *      batch's own flush follows when it returns).
   */
  private afterInput(): void {
    this.executeOutputs();
    this.timer.arm(this.core.pollTimeout());
    this.udp.flush();
  }

  private executeOutputs(): void {
    // An output's result can arrive while it is carried out (a bind that completes at once)
    // and run the loop again: the run already under way picks up what that queued.
    if (this.executing) return;
    this.executing = true;
    try {
      for (let o = this.core.pollOutput(); o !== undefined; o = this.core.pollOutput()) {
        executeOutput(o, this.rooms);
      }
    } finally {
      this.executing = false;
    }
  }

  private onTimer(): void {
    this.core.handleTimeout(now());
    this.afterInput();
  }

  // ---------------------------------------------------------------------------------------
  // Lifecycle

  /** Which UDP data path runs ("batch" or "dgram"), for the log, /readyz and metrics. */
  get udpIo(): "batch" | "dgram" {
    return this.udp.kind;
  }

  /** Which kernel data path runs ("tc", "xdp") or none ("off"), for the log, /readyz and metrics. */
  get kernelPath(): KernelAttachMode | "off" {
    return this.kernel.mode;
  }

  /** Binds every listener in configuration order: per --listen UDP then TCP, then TLS. */
  async listen(): Promise<void> {
    const w = this.worker;
    for (const addr of this.config.listen) {
      const id = listenerId(this.bound.udp.length);
      // A bind that fails says which --listen, as one line (preflight.ts).
      const failed = (err: unknown): never => {
        throw listenFailure("--listen", addr, err);
      };
      const udp = await this.udp
        .listen(id, addr, {
          fd: w?.listenFds?.udp[id],
          bufferBytes: LISTENER_BUFFER_BYTES,
          // Workers share the address; the kernel keeps each client 5-tuple on one of them.
          reusePort: w !== undefined,
        })
        .catch(failed);
      this.bound.udp.push(udp);
      this.peerPolicy.addSelfPort(udp.port, "udp");
      this.boundStream("tcp", await this.listeners.listen(addr, "tcp").catch(failed));
    }
    const pair = this.live.tls;
    for (const addr of this.config.tlsListen) {
      this.boundStream("tls", await this.listeners.listen(addr, "tls", { ...pair }));
    }
    this.wallClock.start();
    this.legacyPins.start();
    this.ready = true;
    if (this.udpFallbackReason !== undefined && (w === undefined || w.index === 0)) {
      // --udp-io auto on node:dgram: the relay works, at about twice the CPU per packet (README,
      // "Data path and cores"). Said once per process (worker 0 for all of them).
      this.log.warn("--udp-io auto: the batched UDP path is unavailable, relaying on node:dgram", {
        reason: this.udpFallbackReason,
      });
    }
    // The CLI logs the bound addresses ("listening"); this line says what relays where, on
    // which UDP data path (with the reason when the batched one could not be used) and
    // whether the kernel relays bound ChannelData (where, or why not when auto fell back).
    const c = this.config;
    const k = this.kernel;
    this.log.info("ready", {
      relayIp4: c.relayIp4,
      relayIp6: c.relayIp6,
      ports: `${w?.portSlice.minPort ?? c.minPort}-${w?.portSlice.maxPort ?? c.maxPort}`,
      udpIo: this.udp.kind,
      kernelPath: k.mode,
      ...(k.mode !== "off"
        ? {
            kernelPathInterfaces: k.interfaces,
            ...(k.notes.length > 0 ? { kernelPathNotes: k.notes.join("; ") } : {}),
          }
        : k.fallbackReason !== undefined
          ? { kernelPathFallback: k.fallbackReason }
          : {}),
      ...(this.udpFallbackReason !== undefined ? { udpIoFallback: this.udpFallbackReason } : {}),
      pinnedPorts:
        c.pinnedPorts === undefined ? undefined : `${c.pinnedPorts.min}-${c.pinnedPorts.max}`,
    });
  }

  private boundStream(transport: "tcp" | "tls", at: SocketAddress): void {
    this.bound[transport].push(at);
    this.peerPolicy.addSelfPort(at.port, "tcp");
  }

  addresses(): RelayAddresses {
    return { udp: [...this.bound.udp], tcp: [...this.bound.tcp], tls: [...this.bound.tls] };
  }

  allocations(): AllocationRow[] {
    return this.report.allocations();
  }

  endAllocations(which: EndAllocations): number {
    let ended: number;
    if ("user" in which) {
      ended = this.core.endAllocations({ users: [which.user] }, now());
    } else {
      // Another worker's id, or none at all: nothing of this engine's.
      const id = parseAllocationRowId(which.id);
      if (id === undefined || id.worker !== (this.worker?.index ?? 0)) return 0;
      ended = this.core.endAllocations({ id: id.allocation as AllocationId }, now());
    }
    this.afterInput();
    return ended;
  }

  /**
   * A reload (RunningRelay): what changed of the live settings, from generation `generation`
   * on; an older or the same generation changes nothing (it arrived twice, or late).
   */
  applyReloadable(config: RelayConfig, generation: number): ReloadOutcome {
    const problems: string[] = [];
    if (generation <= this.generation) return { allocationsEnded: 0, problems };
    const was = this.live;
    this.live = config;
    this.generation = generation;
    this.log.setLevel(config.logLevel);
    this.limits.setLimits(processLimits(config), generation);
    const changed = (f: (c: RelayConfig) => unknown) =>
      JSON.stringify(f(was)) !== JSON.stringify(f(config));
    // Requests are checked against the new secrets from now on; live allocations stay until
    // they are refreshed (RFC 8656 authenticates requests, not allocations).
    if (changed((c) => [c.tokens, c.users, c.legacyPinnedUntil])) {
      this.core.setCredentials(credentialStore(config));
    }
    let allocationsEnded = 0;
    if (changed(revocationList)) {
      allocationsEnded = this.core.setRevokedUsers(revocationList(config), now());
      this.afterInput();
    }
    if (config.tls !== undefined && changed((c) => c.tls)) {
      try {
        this.listeners.setSecureContext(config.tls);
      } catch (err) {
        this.live = { ...config, tls: was.tls };
        problems.push(`reload: TLS certificate not replaced: ${(err as Error).message}`);
      }
    }
    return { allocationsEnded, problems };
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
    this.admissions.close();
    // relay-core ends every allocation (its outputs close what they held), with no timer.
    this.timer.close();
    this.core.closeAll(now());
    this.afterInput();
    // relay-core ended every kernel binding above; the handle goes (for one engine, the
    // opener: the program is detached now rather than at exit).
    this.offload?.close();
    if (this.kernel.mode !== "off") this.kernel.close();
    this.wallClock.stop();
    this.legacyPins.stop();
    this.link?.close();
    // A drain still waiting has nothing left to wait for.
    this.drainWaiter?.();
    this.peers.closeAll();
    this.clients.closeAll();
    await Promise.all([this.udp.close(), this.listeners.close()]).catch(() => undefined);
    this.log.info("closed");
  }
}

function now(): number {
  return performance.now();
}

/** The limits of an engine on its own: the same shared memory, with one worker's tables. */
function ownLimits(config: RelayConfig, generation: number): SharedLimits {
  const init = createSharedState({
    workers: 1,
    ...processLimits(config),
    generation,
    dynamicPorts: config.maxPort - config.minPort + 1,
  });
  return openSharedState(init, 0).limits;
}
