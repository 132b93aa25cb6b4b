// Public API of @turnpike/relay-server (the CLI is bin/turnpike-relay.js).

export { createLogger, type LogFormat, type Logger, type LogLevel } from "@turnpike/runtime-kit";
export {
  ConfigError,
  type CredentialsCommand,
  envName,
  formatSocketAddress,
  type InfoCommand,
  OPTIONS,
  type ParsedCommand,
  parseRelayArgs,
  parseSocketAddress,
  type RelayConfig,
  renderConfigTable,
  type SocketAddress,
  type StaticUser,
} from "./config.js";
export { mintCredentials, restApiPassword, type TurnCredentials } from "./credentials.js";
export { type HealthServer, type RelayState, startHealthServer } from "./health.js";
export {
  METRIC_DOCS,
  type MetricsOptions,
  type RelayMetrics,
  renderMetricsTable,
  startMetrics,
} from "./metrics.js";
export { startRelay } from "./relay.js";
export {
  createRelayStats,
  createRelayTelemetry,
  type RelayDirection,
  type RelayStats,
  type RelayTelemetry,
  type RelayTransport,
  recordRelayed,
  relaySlot,
} from "./stats.js";
export type {
  RelayAddresses,
  RelayDeps,
  RelayMetricsSink,
  RunningRelay,
  StartRelay,
} from "./types.js";
export { RELAY_VERSION } from "./version.js";
