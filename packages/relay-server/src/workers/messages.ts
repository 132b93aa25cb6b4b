// What the supervisor (pool.ts, on the main thread) and its engines (engine-host.ts: engine 0
// on the main thread over a MessageChannel, the others in worker threads) say to each other
// over postMessage, and what an engine is started with.

import type { RelayConfig } from "../config/types.js";
import type { EndAllocations } from "../discovery.js";
import type { SupervisorKernelPath } from "../kernel/share.js";
import type { ListenFds } from "../shared/context.js";
import type { SharedStateInit } from "../shared/shared-state.js";
import type { RelayAddresses } from "../types.js";
import type { StatsSnapshot } from "./stats-sync.js";

/** From a worker. */
export type WorkerMessage =
  | { t: "log"; line: string }
  /** `generation`: the configuration it started with. */
  | WorkerReady
  /** `gen`: the refresh it answers (0 for the periodic ones). */
  | { t: "stats"; snapshot: StatsSnapshot; gen: number }
  | { t: "drained" }
  | { t: "closed" }
  | { t: "answer"; id: number; value: unknown }
  | { t: "route"; to: number; message: unknown };

/** A worker's engine is up: what it bound and how it moves datagrams. */
export interface WorkerReady {
  t: "ready";
  addresses: RelayAddresses;
  udpIo: "batch" | "dgram";
  kernelPath: "tc" | "xdp" | "off";
  generation: number;
}

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

/** What an engine is started with (a worker thread's workerData; engine 0 gets a clone too). */
export interface WorkerInit {
  readonly config: RelayConfig;
  /** The generation of `config` (see live-config.ts). */
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
