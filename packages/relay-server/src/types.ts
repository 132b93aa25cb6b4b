// The contract between the CLI (cli.ts) and the socket driver (relay.ts): the CLI parses the
// configuration, builds logger and telemetry, and calls
//   startRelay(config: RelayConfig, deps: RelayDeps): Promise<RunningRelay>
// The driver never sees yargs, environment variables or OpenTelemetry types.

import type { Logger } from "@turnpike/runtime-kit";
import type { RelayConfig, SocketAddress } from "./config.js";
import type { RelayStats, RelayTelemetry } from "./stats.js";

export type { RelayConfig, SocketAddress } from "./config.js";

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
  /** Bound TCP ports of the process's other listeners (health, Prometheus): never peers. */
  readonly ownPorts?: readonly number[];
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
  addresses(): RelayAddresses;
  /**
   * Stop accepting new allocations and resolve when no allocation is left or `timeoutMs`
   * has passed, whichever comes first. Does not close sockets: call close() afterwards.
   */
  drain(timeoutMs: number): Promise<void>;
  /** Close every socket and timer now. Idempotent. */
  close(): Promise<void>;
}

export type StartRelay = (config: RelayConfig, deps: RelayDeps) => Promise<RunningRelay>;
