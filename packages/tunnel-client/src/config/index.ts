// turnpike-tunnel's configuration: what the package exports of it. One concern per module:
//   types.ts     the shapes of a parsed command line (TunnelConfig, ServiceSpec, ...)
//   options.ts   the option table: flags, TURNPIKE_* names, --help and the README table
//   values.ts    parsers for the tunnel's own value shapes (HOST:PORT, NAME=URL, seconds)
//   resolve.ts   the rules across options, and the warnings, into one TunnelConfig
//   commands.ts  the command line: run, list, --help, --version (yargs only here)
//   reference.ts the reference page (docs/turnpike-tunnel.md), from the option table

export {
  ConfigError,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
} from "@turnpike/runtime-kit";
export { parseTunnelArgs } from "./commands.js";
export {
  ENV_PREFIX,
  envName,
  OPTIONS,
  PROGRAM_NAME,
  renderConfigTable,
  TUNNEL_VERSION,
} from "./options.js";
export { renderTunnelReference } from "./reference.js";
export type {
  AdminListen,
  CredentialsConfig,
  HostPort,
  InfoCommand,
  ListCommand,
  ParsedCommand,
  ServiceSpec,
  TunnelConfig,
  UnixSocketPath,
} from "./types.js";
export { parseExpose } from "./values.js";
