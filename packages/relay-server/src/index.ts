// Public API of @turnpike/relay-server (the CLI is bin/turnpike-relay.js).

export {
  ConfigError,
  createLogger,
  type LogFormat,
  type Logger,
  type LogLevel,
} from "@turnpike/runtime-kit";
export { envName, OPTIONS, renderConfigTable } from "./config/options.js";
export { parseRelayArgs } from "./config/parse.js";
export { renderRelayReference } from "./config/reference.js";
export type {
  CredentialsCommand,
  InfoCommand,
  ParsedCommand,
  RelayConfig,
  SocketAddress,
  StaticUser,
} from "./config/types.js";
export { formatSocketAddress, parseSocketAddress } from "./config/values.js";
export { mintCredentials, restApiPassword, type TurnCredentials } from "./credentials.js";
export { startRelay } from "./engine/driver.js";
export { type HealthServer, type RelayState, startHealthServer } from "./health.js";
export {
  METRIC_DOCS,
  type MetricsOptions,
  type RelayMetrics,
  renderMetricsTable,
  startMetrics,
} from "./metrics.js";
export { fillReadmeTables } from "./readme-tables.js";
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
