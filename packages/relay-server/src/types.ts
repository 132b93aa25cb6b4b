// The contract between the CLI (cli.ts) and the relay engine (engine/driver.ts, or the workers'
// supervisor workers/pool.ts, which runs engine 0 on the main thread and the others in worker
// threads): the CLI parses the configuration, builds logger and telemetry, and calls
//   startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay>
// The driver never sees yargs, environment variables or OpenTelemetry types.

import type { Logger } from "@turnpike/runtime-kit";
import type { RelayConfig, SocketAddress } from "./config/types.js";
import type { AllocationRow, EndAllocations } from "./discovery.js";
import type { WorkerContext } from "./shared/context.js";
import type { RelayStats, RelayTelemetry } from "./stats.js";

/** What the driver needs from the metrics layer: plain counters, no OpenTelemetry. */
export interface RelayMetricsSink {
  /** Per-packet counters: recordRelayed(stats, slot, bytes). */
  readonly stats: RelayStats;
  /** Low-rate events: allocations, responses, auth failures, drops. */
  readonly telemetry: RelayTelemetry;
}

export interface RelayDeps {
  readonly logger: Logger;
  /** RelayMetrics from metrics.ts satisfies this. */
  readonly metrics: RelayMetricsSink;
  /** Where finished log lines go (workers' lines join the process's stream here). */
  readonly writeLogLine?: (line: string) => void;
  /** Set when this engine is one of several workers (workers/pool.ts, shared/context.ts). */
  readonly worker?: WorkerContext;
  /** Bound TCP ports of the process's other listeners (health, Prometheus): never peers. */
  readonly ownPorts?: readonly number[];
  /**
   * The generation of `config` (reload.ts counts them: 1 at start, one more per reload); default
   * 1. applyReloadable() takes only newer ones.
   */
  readonly configGeneration?: number;
}

/** What applying a reloaded configuration did (summed over the workers). */
export interface ReloadOutcome {
  /** Allocations of principals the new revocation list names, ended at once. */
  readonly allocationsEnded: number;
  /** What could not be applied, one line each (an engine keeps what it had for those). */
  readonly problems: readonly string[];
}

/** The bound listeners, with real ports when the configuration said port 0. */
export interface RelayAddresses {
  readonly udp: readonly SocketAddress[];
  readonly tcp: readonly SocketAddress[];
  readonly tls: readonly SocketAddress[];
}

export interface RunningRelay {
  /** True once every listener is bound (the `ready` log line and GET /readyz 200). */
  readonly ready: boolean;
  /** True from the first drain() call on; new allocations are refused (300 or 508). */
  readonly draining: boolean;
  /** The UDP data path in use: the batched native module or node:dgram. */
  readonly udpIo: "batch" | "dgram";
  /** The kernel data path: "tc" (bound ChannelData relayed in the kernel) or "off". */
  readonly kernelPath: "tc" | "xdp" | "off";
  /** Relay engines (engine 0 on the main thread, the others in worker threads). */
  readonly workers?: number;
  /** A worker is restarting after a crash: the others serve meanwhile. */
  readonly degraded?: boolean;
  addresses(): RelayAddresses;
  /**
   * Stop accepting new allocations and resolve when no allocation is left or `timeoutMs`
   * has passed, whichever comes first. Does not close sockets: call close() afterwards.
   */
  drain(timeoutMs: number): Promise<void>;
  /** Close every socket and timer now. Idempotent. */
  close(): Promise<void>;
  /** The live allocations for the discovery API (GET /v1/allocations): no secret in them. */
  allocations(): AllocationRow[] | Promise<AllocationRow[]>;
  /**
   * End allocations now (DELETE on the discovery API): a user's, named as the revocation list
   * names users, or one by its row id. The credentials stay valid. Returns how many ended.
   */
  endAllocations(which: EndAllocations): number | Promise<number>;
  /**
   * Apply what can change live of `config` (config/reload.ts: secrets, revocation list, TLS
   * pair, log level, limits), generation `generation`, on every engine, also on one that is
   * starting or restarting meanwhile; an older generation than one applied is ignored. Revoked
   * principals' credentials get 403 from now on and their live allocations end at once.
   */
  applyReloadable(config: RelayConfig, generation: number): ReloadOutcome | Promise<ReloadOutcome>;
}

export type StartRelay = (config: RelayConfig, deps: RelayDeps) => Promise<RunningRelay>;
