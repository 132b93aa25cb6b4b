// The logger is @turnpike/runtime-kit's (shared with turnpike-relay); re-exported here so the
// tunnel's modules and tests keep one local import.
export { createLogger, type LogFields, type Logger } from "@turnpike/runtime-kit";
