// --workers N: N relay engines behind the one RunningRelay the CLI knows: engine 0 on the main
// thread, next to this supervisor, and engines 1..N-1 in worker threads, so N engines cost
// N-1 isolates more than one engine does (bench/README.md, "Footprint"). Each engine is the
// ordinary one (engine/driver.ts, run by engine-host.ts) with its own relay-core TurnServer,
// its own SO_REUSEPORT listening sockets (the kernel spreads clients over the engines and keeps
// each client on one) and its own slice of the relay port range (a peer's datagram reaches the
// engine that owns the allocation). Nothing on the data path crosses threads. The supervisor
// speaks to engine 0 over a MessageChannel with the same messages as to a worker thread
// (messages.ts), so every engine is one "worker" here: numbered, sharing, asked and closed
// alike; only engine 0 is never restarted (its exceptions are the process's, as with
// --workers 1). What is shared (shared/: what a worker needs of the others):
//
//   memory      shared/shared-state.ts: allocation and connection quotas and the
//               unauthenticated-answer rate hold for the process, exactly; a pinned port
//               belongs to one principal on every worker; a RESERVATION-TOKEN is redeemed on
//               any worker; per-user bandwidth buckets are leased to the workers;
//   secret      one nonce/credential secret, so any worker verifies any client's nonce;
//   counters    each worker posts snapshots; the supervisor sums them for metrics.ts;
//   logs        each worker thread's lines come here, and with engine 0's (written at once)
//               go out through the one log stream;
//   RFC 6062    a ConnectionBind that lands on another worker than its CONNECTION-ID's owner
//               is handed to the owner (shared/worker-link.ts, shared/hand-over.ts);
//   kernel path chosen and attached here, once (--kernel-path); every worker fills the same
//               maps, and a dead worker's bindings are taken out here (kernel/share.ts).
//
// The supervisor (this file, on the main thread) reads top to bottom: start (the kernel path,
// the listening sockets, worker 0 first when the workers bind their own ports: its bound ports
// are the ones the others join when the configuration says port 0), what the workers report
// (one switch), a worker thread that ended (forget what it held, restart it with backoff: its
// clients re-allocate on the others meanwhile and /readyz says "degraded"), the operator's
// calls, and drain/close to every worker. Each concern it uses has its module:
//
//   messages.ts        what the supervisor and workers say to each other; a worker's start data
//   spawn.ts           an engine's slot, its start (engine 0 on this thread, the others in
//                      worker threads) and end, the restart backoff
//   engine-host.ts     an engine answering those messages (worker.ts runs it in a worker thread)
//   listen-sockets.ts  the listening sockets bound here and handed to every worker
//   port-slices.ts     each worker's slice of the relay port range
//   live-config.ts     the configuration and generation workers run with (reloads)
//   routing.ts         messages between workers (RFC 6062 hand-overs, pinned-port releases)
//   questions.ts       questions to the workers and their answers, commands and their replies
//   stats-refresh.ts   fresh counters before a metrics collection (stats-sync.ts sums them)

import { randomBytes } from "node:crypto";
import { bandwidthLimit } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability } from "@turnpike/udp-batch";
import type { RelayConfig } from "../config/types.js";
import { type AllocationRow, type EndAllocations, parseAllocationRowId } from "../discovery.js";
import { SupervisorKernelPath } from "../kernel/share.js";
import type { ListenFds } from "../shared/context.js";
import {
  createSharedState,
  openSharedState,
  recoverWorker,
  type SharedState,
  type SharedStateInit,
} from "../shared/shared-state.js";
import type { RelayAddresses, RelayDeps, ReloadOutcome, RunningRelay } from "../types.js";
import { bindListenSockets, closeListenSockets } from "./listen-sockets.js";
import { LiveConfiguration, sumReloadOutcomes } from "./live-config.js";
import type { WorkerInit, WorkerReady } from "./messages.js";
import { portSlice } from "./port-slices.js";
import { commandAll, WorkerQuestions } from "./questions.js";
import { announceWorkerGone, routeBetweenWorkers } from "./routing.js";
import { endEngine, startEngine, type WorkerEvents, WorkerSlot } from "./spawn.js";
import { StatsRefresh } from "./stats-refresh.js";
import { StatsAggregator } from "./stats-sync.js";

const STATS_INTERVAL_MS = 250;
const CLOSE_TIMEOUT_MS = 10_000;

export async function startWorkerPool(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay> {
  const pool = new WorkerPool(config, deps);
  try {
    await pool.start();
  } catch (err) {
    await pool.close();
    throw err;
  }
  return pool;
}

class WorkerPool implements RunningRelay {
  ready = false;
  draining = false;
  udpIo: "batch" | "dgram" = "dgram";
  kernelPath: "tc" | "xdp" | "off" = "off";
  private readonly log: Logger;
  /** Chosen and attached once for every worker (start()); closed after them. */
  private kernel: SupervisorKernelPath | undefined;
  private readonly slots: WorkerSlot[] = [];
  private readonly sharedInit: SharedStateInit;
  /** The supervisor's view: it counts nothing, and clears what dead workers held. */
  private readonly shared: SharedState;
  private readonly secret = new Uint8Array(randomBytes(32));
  private readonly aggregator: StatsAggregator;
  private readonly stats: StatsRefresh;
  private readonly questions = new WorkerQuestions();
  private readonly live: LiveConfiguration;
  private bound: RelayAddresses = { udp: [], tcp: [], tls: [] };
  private closing = false;
  private onCrashSignal: (() => void) | undefined;
  /** Listening sockets per worker, made here and kept for the life of the process. */
  private listenFds: ListenFds[] | undefined;
  /** Workers' finished log lines go out through the process's one log stream. */
  private readonly writeLogLine: (line: string) => void;
  private readonly ownPorts: readonly number[];

  constructor(
    private readonly config: RelayConfig,
    deps: RelayDeps,
  ) {
    this.log = deps.logger;
    this.ownPorts = deps.ownPorts ?? [];
    this.writeLogLine = deps.writeLogLine ?? ((line) => process.stderr.write(`${line}\n`));
    this.live = new LiveConfiguration(config, deps.configGeneration ?? 1);
    this.sharedInit = createSharedState({
      workers: config.workers,
      maxAllocations: config.maxAllocations,
      maxAllocationsPerUser: config.maxAllocationsPerUser,
      maxConnections: config.maxConnections,
      maxConnectionsPerIp: config.maxConnectionsPerIp,
      unauthenticatedRate: config.maxUnauthenticatedRate,
      generation: this.live.generation,
      pinnedPorts: config.pinnedPorts,
      dynamicPorts: config.maxPort - config.minPort + 1,
      perUserBandwidth:
        config.maxBytesPerSecondPerUser !== undefined
          ? bandwidthLimit(config.maxBytesPerSecondPerUser)
          : undefined,
    });
    this.shared = openSharedState(this.sharedInit, config.workers);
    for (let i = 0; i < config.workers; i++) this.slots.push(new WorkerSlot(i));
    const relayStats = deps.metrics.stats;
    this.aggregator = new StatsAggregator(relayStats);
    this.stats = new StatsRefresh(this.slots);
    relayStats.beforeCollect = () => {
      this.aggregator.aggregate();
      // The program's own counters are the process's: read here once, not summed per worker.
      this.kernel?.readProgramCounters(relayStats.kernelPathDatagrams);
    };
    relayStats.refresh = () => this.stats.refresh();
  }

  get workers(): number {
    return this.slots.length;
  }

  /** A worker is restarting: the others serve, but the relay is not whole. */
  get degraded(): boolean {
    return this.ready && this.slots.some((s) => !s.ready);
  }

  // ---------------------------------------------------------------------------------------
  // Starting

  async start(): Promise<void> {
    // An explicit --kernel-path that cannot run stops the start here, before any worker.
    this.kernel = SupervisorKernelPath.open(this.config);
    this.kernelPath = this.kernel.mode;
    let first: WorkerReady;
    if (batchIoAvailability().available) {
      // This thread binds every worker's listening sockets and keeps them (listen-sockets.ts).
      this.listenFds = bindListenSockets(this.config, this.slots.length);
      first = (await Promise.all(this.slots.map((s) => this.spawn(s))))[0]!;
    } else {
      // Without the native module each worker binds its own (SO_REUSEPORT, Node >= 22.12).
      // Worker 0 binds first; the others join its (possibly ephemeral) ports.
      first = await this.spawn(this.slots[0]!);
      this.live.joinBoundPorts(first.addresses);
      await Promise.all(this.slots.slice(1).map((s) => this.spawn(s)));
    }
    this.bound = first.addresses;
    this.udpIo = first.udpIo;
    this.ready = true;
    if (this.config.testCrashWorker) {
      // Worker 1: a worker thread, which is restarted (engine 0 is this thread: nothing would be).
      this.onCrashSignal = () => this.slots[1]!.post({ t: "crash" });
      process.on("SIGUSR2", this.onCrashSignal);
    }
    this.log.info("workers ready", {
      workers: this.slots.length,
      udpIo: this.udpIo,
      kernelPath: this.kernelPath,
    });
  }

  /** The engine of `slot` with the live configuration; resolves when it is ready. */
  private spawn(slot: WorkerSlot): Promise<WorkerReady> {
    const config = this.live.config;
    const init: WorkerInit = {
      config,
      generation: this.live.generation,
      portSlice: portSlice(config.minPort, config.maxPort, slot.index, this.slots.length),
      index: slot.index,
      count: this.slots.length,
      shared: this.sharedInit,
      secret: this.secret,
      statsIntervalMs: STATS_INTERVAL_MS,
      ownPorts: this.ownPorts,
      listenFds: this.listenFds?.[slot.index],
      kernelPath: this.kernel?.share,
    };
    return startEngine(slot, init, this.events, this.writeLogLine);
  }

  // ---------------------------------------------------------------------------------------
  // What the workers report

  private readonly events: WorkerEvents = {
    ready: (slot, m) => {
      // A reload while it started: the newest configuration now (it ignores a repeat).
      if (m.generation < this.live.generation) slot.post(this.live.reload(0));
    },
    message: (slot, m) => {
      switch (m.t) {
        case "log":
          this.writeLogLine(m.line);
          return;
        case "stats":
          this.aggregator.update(slot.index, m.snapshot);
          this.stats.posted(slot, m.gen);
          return;
        case "drained":
        case "closed":
          slot.waiters.get(m.t)?.();
          return;
        case "answer":
          this.questions.answered(m.id, m.value);
          return;
        case "route":
          routeBetweenWorkers(this.slots, slot, m.to, m.message);
          return;
      }
    },
    error: (slot, err) => {
      this.log.error("worker failed", { worker: slot.index, err });
    },
    exit: (slot, code) => {
      this.forget(slot);
      if (this.closing || !this.ready) return;
      this.restart(slot, code);
    },
  };

  /** A worker thread ended: clear what it held, here and in the others. */
  private forget(slot: WorkerSlot): void {
    if (recoverWorker(this.shared, slot.index)) {
      this.log.warn("worker ended inside a critical section; its shared lock was freed", {
        worker: slot.index,
      });
    }
    // Its bindings stay in the kernel until taken out (their deadlines bound them anyway).
    this.kernel?.releaseWorker(slot.index);
    this.aggregator.retire(slot.index);
    announceWorkerGone(this.slots, slot);
  }

  /** A worker thread died while serving: log it and start a fresh engine in its place. */
  private restart(slot: WorkerSlot, code: number): void {
    const delay = slot.nextRestartDelayMs();
    this.log.error("worker exited; restarting it with a fresh engine", {
      worker: slot.index,
      code,
      restartInMs: delay,
    });
    setTimeout(() => {
      if (this.closing) return;
      this.spawn(slot).then(
        () => this.log.info("worker restarted", { worker: slot.index }),
        (err) => {
          this.log.error("worker restart failed", { worker: slot.index, err });
          if (!slot.running && !this.closing) this.restart(slot, 1);
        },
      );
    }, delay).unref();
  }

  // ---------------------------------------------------------------------------------------
  // The operator's calls

  addresses(): RelayAddresses {
    return { udp: [...this.bound.udp], tcp: [...this.bound.tcp], tls: [...this.bound.tls] };
  }

  async allocations(): Promise<AllocationRow[]> {
    const answers = await this.questions.ask(this.slots, (s, id) =>
      s.post({ t: "ask", id, what: "allocations" }),
    );
    return answers.flatMap((rows) => (Array.isArray(rows) ? (rows as AllocationRow[]) : []));
  }

  /** A user's allocations live on any worker; an id names the one holding it. */
  async endAllocations(which: EndAllocations): Promise<number> {
    const worker = "id" in which ? parseAllocationRowId(which.id)?.worker : undefined;
    if ("id" in which && worker === undefined) return 0;
    const answers = await this.questions.ask(
      this.slots,
      (s, id) => s.post({ t: "ask", id, what: "end", which }),
      worker,
    );
    return answers.reduce<number>((n, a) => n + (typeof a === "number" ? a : 0), 0);
  }

  /**
   * A reload: the workers from now on (restarted ones too) start with `config`, every worker
   * there is gets it, a starting one as well (it also catches up when it reports ready); the
   * ready ones' outcomes are summed.
   */
  async applyReloadable(config: RelayConfig, generation: number): Promise<ReloadOutcome> {
    if (!this.live.advance(config, generation)) return { allocationsEnded: 0, problems: [] };
    for (const s of this.slots) if (s.running && !s.ready) s.post(this.live.reload(0));
    const answers = await this.questions.ask(this.slots, (s, id) => s.post(this.live.reload(id)));
    return sumReloadOutcomes(answers);
  }

  // ---------------------------------------------------------------------------------------
  // Drain and close

  drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    // Each worker drains its own allocations (300/508 to new ones) and answers when done.
    return commandAll(this.slots, { t: "drain", timeoutMs }, "drained", timeoutMs + 1000);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.ready = false;
    if (this.onCrashSignal) process.off("SIGUSR2", this.onCrashSignal);
    await commandAll(this.slots, { t: "close" }, "closed", CLOSE_TIMEOUT_MS);
    await Promise.all(this.slots.map((s) => endEngine(s)));
    closeListenSockets(this.listenFds ?? []);
    this.listenFds = undefined;
    // The workers ended their bindings as they closed; this detaches the program.
    this.kernel?.close();
    this.log.info("closed");
  }
}
