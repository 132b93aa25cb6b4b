// The logger is @turnpike/runtime-kit's (shared with turnpike-tunnel); re-exported here so the
// relay's modules and tests keep one local import.
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
} from "@turnpike/runtime-kit";
