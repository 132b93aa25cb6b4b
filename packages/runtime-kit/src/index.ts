// @turnpike/runtime-kit: the runtime pieces turnpike-relay and turnpike-tunnel share.

export { cliCommand } from "./cli-command.js";
export {
  addConfigOption,
  addTableOptions,
  baseParser,
  describedOption,
  helpText,
  withHelpWidth,
  yargsMessage,
} from "./cli-parser.js";
export {
  type CliReference,
  type CliSubcommand,
  type Rows,
  renderCliReference,
} from "./cli-reference.js";
export { CryptoRandom } from "./crypto-random.js";
export {
  ephemeralPortWarnings,
  mergeRanges,
  type NamedPortRange,
  type PortRange,
  type PortSysctls,
  type PortWarning,
  parseLocalPortRange,
  parseReservedPorts,
  readPortSysctls,
  unreservedEphemeral,
} from "./ephemeral-ports.js";
export {
  createLogger,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFields,
  type LogFormat,
  type Logger,
  type LoggerOptions,
  type LogLevel,
  type RateLimitedLogger,
  type RateLimitOptions,
} from "./log.js";
export { nodeHttp, nodeHttps, nodeTls } from "./node-builtins.js";
export { openFilesLimit } from "./open-files.js";
export {
  ConfigError,
  fail,
  list,
  listNonEmpty,
  nonEmpty,
  one,
  parseBoolean,
  parseEnum,
  parseInteger,
  type RawValue,
  readJsonFile,
  type Scalar,
} from "./option-values.js";
export {
  type ArgvRecord,
  CONFIG_OPTION_DESCRIBE,
  camel,
  type Layer,
  logOptions,
  type OptionReload,
  OptionSet,
  type OptionSpec,
  type OptionTable,
  type OptionValues,
  optionType,
} from "./options.js";
export {
  diagText,
  metricExportTiming,
  otlpEndpointFrom,
  resourceAttributesFrom,
  routeOtelDiagnostics,
} from "./otel.js";
export {
  type ExportHealthOptions,
  type ExportResultLike,
  exportErrorReason,
  OtlpExportHealth,
  otlpExportWatched,
  type WatchableExporter,
  watchOtlpExport,
} from "./otlp-export.js";
export { asOutput, EXIT_CONFIG, exitWhenDone, parseOrReport, withTimeout } from "./process.js";
export { forwardChunk, READ_BUFFER_BYTES, ReusedReadBuffer } from "./reused-read-buffer.js";
export {
  holdOptimizingCompiler,
  optimizingCompilerHeld,
  releaseOptimizingCompiler,
} from "./startup-tiering.js";
export { readSysctlNumbers, readSysctls } from "./sysctls.js";
export { renderTextTable, type TextColumn } from "./text-table.js";
export { decodeTunnelKey, encodeTunnelKey, type TunnelCredentials } from "./tunnel-key.js";
