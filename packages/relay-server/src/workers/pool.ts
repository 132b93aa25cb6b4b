// --workers N: N relay engines, one per worker thread, behind the one RunningRelay the CLI
// knows. Each worker runs the ordinary engine (engine/driver.ts) with its own relay-core
// TurnServer, its own SO_REUSEPORT listening sockets (the kernel spreads clients over the
// workers and keeps each client on one) and its own slice of the relay port range (a peer's
// datagram reaches the worker that owns the allocation). Nothing on the data path crosses
// threads. What is shared (shared/: what a worker needs of the others):
//
//   memory      shared/shared-state.ts: allocation and connection quotas and the
//               unauthenticated-answer rate hold for the process, exactly; a pinned port
//               belongs to one principal on every worker; a RESERVATION-TOKEN is redeemed on
//               any worker; per-user bandwidth buckets are leased to the workers;
//   secret      one nonce/credential secret, so any worker verifies any client's nonce;
//   counters    each worker posts snapshots; the supervisor sums them for metrics.ts;
//   logs        each worker's lines come here and go out through the one log stream;
//   RFC 6062    a ConnectionBind that lands on another worker than its CONNECTION-ID's owner
//               is handed to the owner (shared/worker-link.ts, shared/hand-over.ts);
//   kernel path chosen and attached here, once (--kernel-path); every worker fills the same
//               maps, and a dead worker's bindings are taken out here (kernel/share.ts).
//
// THE LIVE CONFIGURATION is held here: the configuration every worker runs with and its
// generation (1 at start, one more per reload: main.ts). A worker starts with the current one
// (workerData), every reload goes to every worker there is, starting ones included, and a
// worker that reports ready with an older generation than the current one is sent the current
// one at once; a worker applies only generations newer than its own (engine/driver.ts,
// applyReloadable). So a worker restarted after a crash, or one starting while a SIGHUP
// arrives, never runs with a revocation list, secrets or certificate older than the others'.
//
// The supervisor (this file, on the main thread) starts worker 0 first (its bound ports are
// the ones the others join when the configuration says port 0), relays drain/close to every
// worker, and restarts a worker that crashes: its clients re-allocate on the others meanwhile,
// /readyz says "degraded", and the shared memory forgets exactly what it held (a lock it died
// holding included).

import { randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";
import { bandwidthLimit } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, bindUdp, closeFd, fdPort, tcpListen } from "@turnpike/udp-batch";
import type { RelayConfig, SocketAddress } from "../config/types.js";
import { type AllocationRow, type EndAllocations, parseAllocationRowId } from "../discovery.js";
import { SupervisorKernelPath } from "../kernel/share.js";
import { listenFailure } from "../preflight.js";
import type { ListenFds } from "../shared/context.js";
import {
  createSharedState,
  openSharedState,
  recoverWorker,
  type SharedState,
  type SharedStateInit,
} from "../shared/shared-state.js";
import type { RoutedMessage } from "../shared/worker-link.js";
import type { RelayAddresses, RelayDeps, ReloadOutcome, RunningRelay } from "../types.js";
import { StatsAggregator, type StatsSnapshot } from "./stats-sync.js";

/** From a worker. */
export type WorkerMessage =
  | { t: "log"; line: string }
  /** `generation`: the configuration it started with. */
  | {
      t: "ready";
      addresses: RelayAddresses;
      udpIo: "batch" | "dgram";
      kernelPath: "tc" | "off";
      generation: number;
    }
  /** `gen`: the refresh it answers (0 for the periodic ones). */
  | { t: "stats"; snapshot: StatsSnapshot; gen: number }
  | { t: "drained" }
  | { t: "closed" }
  | { t: "answer"; id: number; value: unknown }
  | { t: "route"; to: number; message: unknown };

/** To a worker. */
export type SupervisorMessage =
  | { t: "drain"; timeoutMs: number }
  | { t: "close" }
  | { t: "crash" }
  | { t: "stats-now"; gen: number }
  | { t: "ask"; id: number; what: "allocations" }
  | { t: "ask"; id: number; what: "end"; which: EndAllocations }
  /** id 0: nobody waits for the answer (a starting worker catching up). */
  | { t: "ask"; id: number; what: "reload"; config: RelayConfig; generation: number }
  | { t: "route"; from: number; message: unknown };

/** What a worker is started with (workerData). */
export interface WorkerInit {
  readonly config: RelayConfig;
  /** The generation of `config` (see THE LIVE CONFIGURATION above). */
  readonly generation: number;
  readonly index: number;
  readonly count: number;
  readonly shared: SharedStateInit;
  readonly secret: Uint8Array;
  readonly statsIntervalMs: number;
  /** The process's other listening ports (health, Prometheus): never peers. */
  readonly ownPorts: readonly number[];
  /** This worker's slice of the relay port range (config keeps the whole range). */
  readonly portSlice: { readonly minPort: number; readonly maxPort: number };
  /** The supervisor's listening sockets for this worker (see ListenFds). */
  readonly listenFds: ListenFds | undefined;
  /** The kernel data path's maps, attached by the supervisor (see KernelPathShare). */
  readonly kernelPath: SupervisorKernelPath["share"] | undefined;
}

const STATS_INTERVAL_MS = 250;
/**
 * Each worker is a V8 isolate with a heap of its own. Its young generation follows the
 * process's --max-semi-space-size (V8 flags are process-wide), which the launcher sets
 * (bin/turnpike-relay.js's #! line); started without it (`node dist/cli.js`), a worker gets the
 * same small young generation here: 3 MB is V8's young generation for a 1 MB semi-space.
 * Measured in bench/README.md, "Footprint". The old generation is left unbounded: it holds the
 * allocations (--max-allocations bounds those), and a cap would turn a busy hour into a worker
 * that dies out of memory.
 */
const WORKER_YOUNG_GENERATION_MB = 3;
const workerResourceLimits = [
  ...process.execArgv,
  ...(process.env.NODE_OPTIONS ?? "").split(/\s+/),
].some((flag) => /^--max[-_]semi[-_]space[-_]size\b/.test(flag))
  ? undefined
  : { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB };
/** SO_RCVBUF/SO_SNDBUF of UDP listeners (as engine/driver.ts asks for a single engine's). */
const LISTENER_BUFFER_BYTES = 4 << 20;
const RESTART_DELAYS_MS = [200, 500, 1000, 2000, 5000];
const READY_TIMEOUT_MS = 15_000;
const CLOSE_TIMEOUT_MS = 10_000;

interface Slot {
  readonly index: number;
  worker: Worker | undefined;
  ready: boolean;
  restarts: number;
  waiters: Map<string, () => void>;
  /** The last refresh this worker answered. */
  statsGen: number;
}

/** The relay port range cut into `count` contiguous slices, one per worker. */
export function portSlice(
  min: number,
  max: number,
  index: number,
  count: number,
): { minPort: number; maxPort: number } {
  const span = max - min + 1;
  return {
    minPort: min + Math.floor((index * span) / count),
    maxPort: min + Math.floor(((index + 1) * span) / count) - 1,
  };
}

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
  kernelPath: "tc" | "off" = "off";
  private readonly log: Logger;
  /** Chosen and attached once for every worker (start()); closed after them. */
  private kernel: SupervisorKernelPath | undefined;
  private readonly slots: Slot[] = [];
  private readonly sharedInit: SharedStateInit;
  /** The supervisor's view: it counts nothing, and clears what dead workers held. */
  private readonly shared: SharedState;
  private readonly secret = new Uint8Array(randomBytes(32));
  private readonly aggregator: StatsAggregator;
  private bound: RelayAddresses = { udp: [], tcp: [], tls: [] };
  /**
   * The configuration workers after the first start with: listen ports as bound, and the live
   * settings of the newest reload (applyReloadable).
   */
  private joinConfig: RelayConfig;
  /** The generation of joinConfig's live settings. */
  private generation: number;
  private closing = false;
  private onCrashSignal: (() => void) | undefined;
  /** Listening sockets per worker, made here and kept for the life of the process. */
  private listenFds: ListenFds[] | undefined;
  /** A metrics collection waiting for every worker's fresh snapshot. */
  private refreshing: { gen: number; check: () => void; done: Promise<void> } | undefined;
  private nextStatsGen = 1;
  /** Questions to workers waiting for their answers, by id. */
  private readonly answers = new Map<number, (value: unknown) => void>();
  private nextQuestion = 1;
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
    this.generation = deps.configGeneration ?? 1;
    this.sharedInit = createSharedState({
      workers: config.workers,
      maxAllocations: config.maxAllocations,
      maxAllocationsPerUser: config.maxAllocationsPerUser,
      maxConnections: config.maxConnections,
      maxConnectionsPerIp: config.maxConnectionsPerIp,
      unauthenticatedRate: config.maxUnauthenticatedRate,
      generation: this.generation,
      pinnedPorts: config.pinnedPorts,
      dynamicPorts: config.maxPort - config.minPort + 1,
      perUserBandwidth:
        config.maxBytesPerSecondPerUser !== undefined
          ? bandwidthLimit(config.maxBytesPerSecondPerUser)
          : undefined,
    });
    this.shared = openSharedState(this.sharedInit, config.workers);
    this.aggregator = new StatsAggregator(deps.metrics.stats);
    deps.metrics.stats.beforeCollect = () => this.aggregator.aggregate();
    deps.metrics.stats.refresh = () => this.refreshStats();
    this.joinConfig = config;
    for (let i = 0; i < config.workers; i++) {
      this.slots.push({
        index: i,
        worker: undefined,
        ready: false,
        restarts: 0,
        waiters: new Map(),
        statsGen: 0,
      });
    }
  }

  get workers(): number {
    return this.slots.length;
  }

  /** A worker is restarting: the others serve, but the relay is not whole. */
  get degraded(): boolean {
    return this.ready && this.slots.some((s) => !s.ready);
  }

  async start(): Promise<void> {
    // An explicit --kernel-path that cannot run stops the start here, before any worker.
    this.kernel = SupervisorKernelPath.open(this.config);
    this.kernelPath = this.kernel.mode;
    if (batchIoAvailability().available) {
      // This thread binds every worker's listening sockets and keeps them: a worker that dies
      // leaves its socket (and its place in the SO_REUSEPORT group) to its successor, so the
      // kernel's spread of clients over the workers never reshuffles.
      this.listenFds = this.bindListeners();
      const ready = await Promise.all(this.slots.map((s) => this.spawn(s, this.joinConfig)));
      this.bound = ready[0]!.addresses;
      this.udpIo = ready[0]!.udpIo;
    } else {
      // Without the native module each worker binds its own (SO_REUSEPORT, Node >= 22.12).
      // Worker 0 binds first; the others join its (possibly ephemeral) ports.
      const first = this.slots[0]!;
      const ready = await this.spawn(first, this.joinConfig);
      this.bound = ready.addresses;
      this.udpIo = ready.udpIo;
      this.joinConfig = {
        ...this.joinConfig,
        listen: joinPorts(this.config.listen, ready.addresses.udp),
        tlsListen: joinPorts(this.config.tlsListen, ready.addresses.tls),
      };
      await Promise.all(this.slots.slice(1).map((s) => this.spawn(s, this.joinConfig)));
    }
    this.ready = true;
    if (this.config.testCrashWorker) {
      this.onCrashSignal = () => this.post(this.slots[0]!, { t: "crash" });
      process.on("SIGUSR2", this.onCrashSignal);
    }
    this.log.info("workers ready", {
      workers: this.slots.length,
      udpIo: this.udpIo,
      kernelPath: this.kernelPath,
    });
  }

  /**
   * One UDP and one TCP listening socket per worker for each --listen, one TCP socket per
   * worker for each --tls-listen: SO_REUSEPORT groups, TCP steered by source address. A port 0
   * becomes the first socket's port for the rest of its group.
   */
  private bindListeners(): ListenFds[] {
    const count = this.slots.length;
    const perWorker = this.slots.map(() => ({
      udp: [] as number[],
      tcp: [] as number[],
      tls: [] as number[],
    }));
    const group = (kind: "udp" | "tcp" | "tls", at: SocketAddress) => {
      let port = at.port;
      for (let w = 0; w < count; w++) {
        let fd: number;
        try {
          fd =
            kind === "udp"
              ? bindUdp({
                  family: at.family,
                  address: at.ip,
                  port,
                  reusePort: true,
                  recvBufferSize: LISTENER_BUFFER_BYTES,
                  sendBufferSize: LISTENER_BUFFER_BYTES,
                })
              : tcpListen({ family: at.family, address: at.ip, port, steerGroup: count });
        } catch (err) {
          throw listenFailure(kind === "tls" ? "--tls-listen" : "--listen", at, err);
        }
        perWorker[w]![kind].push(fd);
        if (port === 0) port = fdPort(fd);
      }
    };
    try {
      for (const at of this.config.listen) {
        group("udp", at);
        group("tcp", at);
      }
      for (const at of this.config.tlsListen) group("tls", at);
    } catch (err) {
      for (const fds of perWorker)
        for (const fd of [...fds.udp, ...fds.tcp, ...fds.tls]) closeFd(fd);
      throw err;
    }
    return perWorker;
  }

  private spawn(
    slot: Slot,
    config: RelayConfig,
  ): Promise<{ addresses: RelayAddresses; udpIo: "batch" | "dgram"; kernelPath: "tc" | "off" }> {
    const init: WorkerInit = {
      config,
      generation: this.generation,
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
    const worker = new Worker(new URL("./worker.js", import.meta.url), {
      workerData: init,
      ...(workerResourceLimits && { resourceLimits: workerResourceLimits }),
    });
    slot.worker = worker;
    slot.ready = false;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`worker ${slot.index} not ready within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      worker.on("message", (m: WorkerMessage) => {
        switch (m.t) {
          case "log":
            this.writeLogLine(m.line);
            return;
          case "ready":
            clearTimeout(timer);
            slot.ready = true;
            // A reload while it started: the newest configuration now (it ignores a repeat).
            if (m.generation < this.generation) this.postReload(slot, 0);
            resolve(m);
            return;
          case "stats":
            this.aggregator.update(slot.index, m.snapshot);
            if (m.gen !== 0) slot.statsGen = m.gen;
            this.refreshing?.check();
            return;
          case "drained":
          case "closed":
            slot.waiters.get(m.t)?.();
            return;
          case "answer":
            this.answers.get(m.id)?.(m.value);
            return;
          case "route": {
            const to = this.slots[m.to];
            if (to?.worker !== undefined && to.ready) {
              this.post(to, { t: "route", from: slot.index, message: m.message });
            } else {
              // That worker is restarting: what was meant for its predecessor reaches nobody.
              // The sender learns at once (a held RFC 6062 connection closes, a pinned-port
              // release counts as done) instead of waiting for an answer that never comes.
              this.post(slot, {
                t: "route",
                from: m.to,
                message: {
                  r: "undeliverable",
                  message: m.message as RoutedMessage,
                } satisfies RoutedMessage,
              });
            }
            return;
          }
        }
      });
      worker.on("error", (err) => {
        this.log.error("worker failed", { worker: slot.index, err });
      });
      worker.on("exit", (code) => {
        clearTimeout(timer);
        const wasReady = slot.ready;
        slot.ready = false;
        slot.worker = undefined;
        for (const w of slot.waiters.values()) w();
        if (recoverWorker(this.shared, slot.index)) {
          this.log.warn("worker ended inside a critical section; its shared lock was freed", {
            worker: slot.index,
          });
        }
        // Its bindings stay in the kernel until taken out (their deadlines bound them anyway).
        this.kernel?.releaseWorker(slot.index);
        this.aggregator.retire(slot.index);
        // The others drop RFC 6062 connections they held for it or adopted from it.
        for (const other of this.slots) {
          if (other !== slot && other.ready) {
            this.post(other, {
              t: "route",
              from: slot.index,
              message: { r: "worker-gone", index: slot.index } satisfies RoutedMessage,
            });
          }
        }
        if (!wasReady) reject(new Error(`worker ${slot.index} exited with ${code} while starting`));
        if (this.closing || !this.ready) return;
        this.restart(slot, code);
      });
    });
  }

  /** A worker died while serving: log it and start a fresh engine in its place. */
  private restart(slot: Slot, code: number): void {
    const delay = RESTART_DELAYS_MS[Math.min(slot.restarts, RESTART_DELAYS_MS.length - 1)]!;
    slot.restarts++;
    this.log.error("worker exited; restarting it with a fresh engine", {
      worker: slot.index,
      code,
      restartInMs: delay,
    });
    setTimeout(() => {
      if (this.closing) return;
      this.spawn(slot, this.joinConfig).then(
        () => this.log.info("worker restarted", { worker: slot.index }),
        (err) => {
          this.log.error("worker restart failed", { worker: slot.index, err });
          if (slot.worker === undefined && !this.closing) this.restart(slot, 1);
        },
      );
    }, delay).unref();
  }

  private post(slot: Slot, message: SupervisorMessage): void {
    slot.worker?.postMessage(message);
  }

  /** Ask every live worker, resolve when each answered `reply` (or is gone, or time ran out). */
  private broadcast(
    message: SupervisorMessage,
    reply: "drained" | "closed",
    timeoutMs: number,
  ): Promise<void> {
    const waits = this.slots
      .filter((s) => s.worker !== undefined)
      .map(
        (s) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(done, timeoutMs);
            function done() {
              clearTimeout(timer);
              s.waiters.delete(reply);
              resolve();
            }
            s.waiters.set(reply, done);
            this.post(s, message);
          }),
      );
    return Promise.all(waits).then(() => undefined);
  }

  /**
   * Fresh counters from every live worker before metrics are read (a scrape right after
   * traffic sees it), at most 300 ms; collections that overlap share one round.
   */
  private refreshStats(): Promise<void> {
    if (this.refreshing !== undefined) return this.refreshing.done;
    const gen = this.nextStatsGen++;
    let finish: () => void = () => {};
    const done = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const timer = setTimeout(() => end(), 300);
    const end = () => {
      clearTimeout(timer);
      if (this.refreshing?.gen === gen) this.refreshing = undefined;
      finish();
    };
    const check = () => {
      if (this.slots.every((s) => !s.ready || s.statsGen >= gen)) end();
    };
    this.refreshing = { gen, check, done };
    for (const s of this.slots) if (s.ready) this.post(s, { t: "stats-now", gen });
    check();
    return done;
  }

  /**
   * Ask every ready worker, or `only` that one (`post` sends the question); the answers within
   * a second.
   */
  private ask(post: (slot: Slot, id: number) => void, only?: number): Promise<unknown[]> {
    const live = this.slots.filter(
      (s) => s.worker !== undefined && s.ready && (only === undefined || s.index === only),
    );
    return Promise.all(
      live.map(
        (s) =>
          new Promise<unknown>((resolve) => {
            const id = this.nextQuestion++;
            const timer = setTimeout(() => {
              this.answers.delete(id);
              resolve(undefined);
            }, 1000);
            this.answers.set(id, (value) => {
              clearTimeout(timer);
              this.answers.delete(id);
              resolve(value);
            });
            post(s, id);
          }),
      ),
    );
  }

  async allocations(): Promise<AllocationRow[]> {
    const answers = await this.ask((s, id) => this.post(s, { t: "ask", id, what: "allocations" }));
    return answers.flatMap((rows) => (Array.isArray(rows) ? (rows as AllocationRow[]) : []));
  }

  /** A user's allocations live on any worker; an id names the one holding it. */
  async endAllocations(which: EndAllocations): Promise<number> {
    const worker = "id" in which ? parseAllocationRowId(which.id)?.worker : undefined;
    if ("id" in which && worker === undefined) return 0;
    const answers = await this.ask(
      (s, id) => this.post(s, { t: "ask", id, what: "end", which }),
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
    if (generation <= this.generation) return { allocationsEnded: 0, problems: [] };
    this.generation = generation;
    this.joinConfig = {
      ...config,
      listen: this.joinConfig.listen,
      tlsListen: this.joinConfig.tlsListen,
    };
    for (const s of this.slots) if (s.worker !== undefined && !s.ready) this.postReload(s, 0);
    const answers = (await this.ask((s, id) => this.postReload(s, id))) as (
      | ReloadOutcome
      | undefined
    )[];
    const problems = new Set<string>();
    let allocationsEnded = 0;
    for (const a of answers) {
      allocationsEnded += a?.allocationsEnded ?? 0;
      for (const p of a?.problems ?? []) problems.add(p);
    }
    return { allocationsEnded, problems: [...problems] };
  }

  /** The current configuration to `slot`; `id` 0: nobody waits for the answer. */
  private postReload(slot: Slot, id: number): void {
    this.post(slot, {
      t: "ask",
      id,
      what: "reload",
      config: this.joinConfig,
      generation: this.generation,
    });
  }

  addresses(): RelayAddresses {
    return { udp: [...this.bound.udp], tcp: [...this.bound.tcp], tls: [...this.bound.tls] };
  }

  drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    // Each worker drains its own allocations (300/508 to new ones) and answers when done.
    return this.broadcast({ t: "drain", timeoutMs }, "drained", timeoutMs + 1000);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.ready = false;
    if (this.onCrashSignal) process.off("SIGUSR2", this.onCrashSignal);
    await this.broadcast({ t: "close" }, "closed", CLOSE_TIMEOUT_MS);
    await Promise.all(
      this.slots.map(async (s) => {
        const w = s.worker;
        if (w === undefined) return;
        const exited = new Promise<void>((r) => w.once("exit", () => r()));
        await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
        if (s.worker !== undefined) await w.terminate();
      }),
    );
    for (const fds of this.listenFds ?? []) {
      for (const fd of [...fds.udp, ...fds.tcp, ...fds.tls]) closeFd(fd);
    }
    this.listenFds = undefined;
    // The workers ended their bindings as they closed; this detaches the program.
    this.kernel?.close();
    this.log.info("closed");
  }
}

/** Listen addresses with the ports the first worker actually bound (same order). */
function joinPorts(
  configured: readonly SocketAddress[],
  bound: readonly SocketAddress[],
): SocketAddress[] {
  return configured.map((a, i) => (a.port === 0 && bound[i] ? { ...a, port: bound[i]!.port } : a));
}
