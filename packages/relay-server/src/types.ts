// The contract between the CLI (cli.ts) and the socket driver (relay.ts): the CLI parses the
// configuration, builds logger and telemetry, and calls
//   startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay>
// The driver never sees yargs, environment variables or OpenTelemetry types.

import type { Logger } from "@turnpike/runtime-kit";
import type { RelayConfig, SocketAddress } from "./config/types.js";
import type { AllocationRow } from "./discovery.js";
import type { RelayStats, RelayTelemetry } from "./stats.js";
import type { SharedLimits } from "./workers/shared-limits.js";

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
  /** Set when this driver is one of several workers (workers/pool.ts). */
  readonly worker?: WorkerContext;
  /** Bound TCP ports of the process's other listeners (health, Prometheus): never peers. */
  readonly ownPorts?: readonly number[];
}

/** What a worker's driver shares with the others. */
export interface WorkerContext {
  readonly index: number;
  readonly count: number;
  /** Allocation and connection quotas and the unauthenticated rate, for the whole process. */
  readonly limits: SharedLimits;
  /** The nonce secret every worker uses, so any worker verifies any client. */
  readonly secret: Uint8Array;
  /** Post a message to worker `to` (RFC 6062 hand-over). */
  route(to: number, message: unknown): void;
  /** Receive messages other workers route here. */
  onRoute(handler: (from: number, message: unknown) => void): void;
  /**
   * This worker's listening sockets, made and kept by the supervisor (one per worker per
   * address, in configuration order), so a restarted worker takes over its predecessor's
   * place in each SO_REUSEPORT group; absent where the native module is unavailable (the
   * worker binds its own, with SO_REUSEPORT).
   */
  readonly listenFds?: ListenFds;
  /** This worker's slice of the relay port range: its allocations' ports come from it. */
  readonly portSlice: { readonly minPort: number; readonly maxPort: number };
}

/** Listening sockets by kind, in the order of --listen (udp, tcp) and --tls-listen (tls). */
export interface ListenFds {
  readonly udp: readonly number[];
  readonly tcp: readonly number[];
  readonly tls: readonly number[];
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
  /** Relay engines (worker threads; 1 when the engine runs on the main thread). */
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
   * Replace the revocation list (--revoke plus --revoke-file): their credentials get 403 from
   * now on and their live allocations end at once. Returns how many ended.
   */
  setRevokedUsers(users: Iterable<string>): number | Promise<number>;
}

export type StartRelay = (config: RelayConfig, deps: RelayDeps) => Promise<RunningRelay>;
