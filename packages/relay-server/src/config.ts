// turnpike-relay configuration: ONE description (OPTIONS below) from which the yargs options,
// the TURNPIKE_* environment names, the `--help` text and the README configuration table are
// all generated, so names, defaults and docs cannot drift apart (ARCHITECTURE.md, "Layers").
// The engine (sources, precedence, value parsers, help, README table) is @turnpike/runtime-kit's
// OptionSet, shared with turnpike-tunnel; this module keeps the table, the relay's own value
// shapes and the cross-field rules.
//
// Precedence: command-line flag > environment TURNPIKE_<OPTION> > `--config FILE` (JSON) >
// default. Every value is validated; a wrong one becomes a ConfigError whose message is one
// line naming where the value came from (`--min-port must be 1..65535, got "70000"`).
// Nothing outside this module, runtime-kit and cli.ts knows about yargs (ARCHITECTURE.md,
// "Layers").

import { randomBytes } from "node:crypto";
import { accessSync, constants as fsConstants, readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { availableParallelism, networkInterfaces as osNetworkInterfaces } from "node:os";
import { PIN_MARKER } from "@turnpike/relay-core";
import {
  type ArgvRecord,
  addConfigOption,
  addTableOptions,
  baseParser,
  ConfigError,
  fail,
  helpText,
  type LogFormat,
  type LogLevel,
  list,
  logOptions,
  nonEmpty,
  OptionSet,
  type OptionSpec,
  type OptionValues,
  one,
  parseBoolean,
  parseInteger,
  type RawValue,
  type Scalar,
} from "@turnpike/runtime-kit";
import { RELAY_VERSION } from "./version.js";

export { ConfigError };

export const PROGRAM_NAME = "turnpike-relay";
export const ENV_PREFIX = "TURNPIKE_";

/** A concrete IP address and port. `family` follows the address text. */
export interface SocketAddress {
  readonly ip: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export const UDP_IO_MODES = ["auto", "batch", "dgram"] as const;
export type UdpIoMode = (typeof UDP_IO_MODES)[number];

export interface StaticUser {
  readonly username: string;
  readonly password: string;
}

/** The fully resolved relay configuration (`turnpike-relay` without a subcommand). */
export interface RelayConfig {
  readonly command: "relay";
  /** UDP + TCP listeners. Port 0 means "any free port" (tests); see RunningRelay.addresses(). */
  readonly listen: readonly SocketAddress[];
  /** TURNS (TLS over TCP) listeners; non-empty implies tlsCert and tlsKey are set and readable. */
  readonly tlsListen: readonly SocketAddress[];
  /** PEM file paths (checked readable at parse time). */
  readonly tlsCert: string | undefined;
  readonly tlsKey: string | undefined;
  /**
   * Address relay sockets bind on, per family; undefined when that family is not served (no
   * listener of that family and no --relay-ip for it, or no usable host address).
   */
  readonly relayIp4: string | undefined;
  readonly relayIp6: string | undefined;
  /** What XOR-RELAYED-ADDRESS carries (1:1 NAT); undefined means "the relay IP". */
  readonly publicIp4: string | undefined;
  readonly publicIp6: string | undefined;
  readonly minPort: number;
  readonly maxPort: number;
  /** Ports only pinned credentials get (disjoint from minPort..maxPort); undefined = none. */
  readonly pinnedPorts: PortRange | undefined;
  readonly realm: string;
  /** Shared secret for TURN REST API credentials. Never log it unless tokenGenerated. */
  readonly token: string;
  /** True when no token was configured and a random one was generated for this run. */
  readonly tokenGenerated: boolean;
  readonly users: readonly StaticUser[];
  /** --revoke users (fixed for the process) ... */
  readonly revoke: readonly string[];
  /** ... and the file re-read on SIGHUP (readRevokeFile); the revocation list is the union. */
  readonly revokeFile: string | undefined;
  /** The users in revokeFile when the configuration was parsed. */
  readonly revokeFileUsers: readonly string[];
  /** Bearer token of the discovery API (GET /v1/allocations); undefined = API off. */
  readonly adminToken: string | undefined;
  /** Peer policy overrides as CIDR text ("10.0.0.0/8", "::1/128" or a bare address). */
  readonly allowPeers: readonly string[];
  readonly denyPeers: readonly string[];
  readonly allowLoopbackPeers: boolean;
  /** Lift the self-relay rules (relay-core's PeerAddressPolicy `allowSelf`). */
  readonly allowSelfPeer: boolean;
  /** ChannelBind accepts RFC 5766's 0x4000-0x7FFF, not only RFC 8656's 0x4000-0x4FFF. */
  readonly legacyChannelNumbers: boolean;
  /**
   * The relay's own IP addresses, denied as peers outside the relay port range unless
   * allowSelfPeer: relay and public addresses, specific listen addresses and the host's
   * interface addresses (a listener on 0.0.0.0 answers on every one of them).
   */
  readonly selfAddresses: readonly string[];
  readonly maxAllocations: number;
  readonly maxAllocationsPerUser: number;
  /** Per allocation. */
  readonly maxPermissions: number;
  /** Per allocation. */
  readonly maxChannels: number;
  /** TCP/TLS client connections. */
  readonly maxConnections: number;
  /** Unauthenticated TCP/TLS connections per source (IPv4 address, IPv6 /64); 0 = no limit. */
  readonly maxConnectionsPerIp: number;
  /** Unauthenticated responses per second per source IP; 0 = unlimited. */
  readonly maxUnauthenticatedRate: number;
  /** Seconds. */
  readonly tcpIdleTimeout: number;
  /** UDP data path: batched native I/O, node:dgram, or batched when it can be loaded. */
  readonly udpIo: UdpIoMode;
  /** Relay engines, one per worker thread (1: everything on the main thread). */
  readonly workers: number;
  /** Why --workers was lowered to 1, if it was (logged once at start). */
  readonly workersNote: string | undefined;
  /** Test hook: SIGUSR2 crashes worker 0 (hidden). */
  readonly testCrashWorker: boolean;
  readonly alternateServer: SocketAddress | undefined;
  /** Seconds. */
  readonly drainTimeout: number;
  /** null when `--health-listen off`. */
  readonly healthListen: SocketAddress | null;
  readonly prometheusListen: SocketAddress | undefined;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly software: string;
  readonly rngSeed: number | undefined;
  /** The config file that was read, if any. */
  readonly configFile: string | undefined;
  /** Warnings the CLI logs once at start (generated token, loopback peers, ...). */
  readonly warnings: readonly string[];
}

/** `turnpike-relay credentials ...`: mint TURN REST API credentials from the token. */
export interface CredentialsCommand {
  readonly command: "credentials";
  readonly token: string;
  readonly user: string | undefined;
  /** The relay port the credentials pin (with a user), or undefined for a dynamic port. */
  readonly port: number | undefined;
  /** Seconds. */
  readonly ttl: number;
  readonly uris: readonly string[];
}

/** `turnpike-relay allocations ...`: GET /v1/allocations of a running relay, as a table. */
export interface AllocationsCommand {
  readonly command: "allocations";
  /** Base URL of the relay's health listener, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly adminToken: string;
  readonly user: string | undefined;
  readonly json: boolean;
}

/** An inclusive port range (--pinned-ports MIN-MAX). */
export interface PortRange {
  readonly min: number;
  readonly max: number;
}

/** `--help` / `--version`: the text to print on stdout, exit 0. */
export interface InfoCommand {
  readonly command: "help" | "version";
  readonly text: string;
}

export type ParsedCommand = RelayConfig | CredentialsCommand | AllocationsCommand | InfoCommand;

/** Injectable environment facts, for tests. */
export interface ParseOptions {
  networkInterfaces?: () => ReturnType<typeof osNetworkInterfaces>;
  randomToken?: () => string;
}

// ---------------------------------------------------------------------------------------------
// The option table

type Group =
  | "Listeners"
  | "Relay"
  | "Authentication"
  | "Peer policy"
  | "Limits"
  | "Operations"
  | "Testing";

function spec<T>(s: OptionSpec<T, Group>): OptionSpec<T, Group> {
  return s;
}

export const OPTIONS = {
  listen: spec<SocketAddress[]>({
    group: "Listeners",
    describe: "UDP + TCP listener (repeatable); IPv6 as [::1]:3478",
    placeholder: "ADDR:PORT",
    repeatable: true,
    defaultText: "0.0.0.0:3478",
    default: [{ ip: "0.0.0.0", port: 3478, family: 4 }],
    parse: (raw, where) => list(raw).map((v) => parseSocketAddress(v, where, 0)),
  }),
  "tls-listen": spec<SocketAddress[]>({
    group: "Listeners",
    describe: "TURNS (TLS) listener (repeatable); needs --tls-cert and --tls-key",
    placeholder: "ADDR:PORT",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseSocketAddress(v, where, 0)),
  }),
  "tls-cert": spec<string | undefined>({
    group: "Listeners",
    describe: "TLS certificate chain (PEM file)",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "tls-key": spec<string | undefined>({
    group: "Listeners",
    describe: "TLS private key (PEM file)",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "relay-ip": spec<string[]>({
    group: "Relay",
    describe: "address relay sockets bind on (repeatable, at most one per family)",
    placeholder: "IP",
    repeatable: true,
    defaultText:
      "the first --listen address of that family if not unspecified, else the host's first non-internal address",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseIp(v, where, { allowUnspecified: false })),
  }),
  "public-ip4": spec<string | undefined>({
    group: "Relay",
    describe: "IPv4 address XOR-RELAYED-ADDRESS carries (behind 1:1 NAT)",
    placeholder: "IP",
    defaultText: "the relay IPv4",
    default: undefined,
    parse: (raw, where) => parseIp(one(raw, where), where, { family: 4, allowUnspecified: false }),
  }),
  "public-ip6": spec<string | undefined>({
    group: "Relay",
    describe: "IPv6 address XOR-RELAYED-ADDRESS carries (behind 1:1 NAT)",
    placeholder: "IP",
    defaultText: "the relay IPv6",
    default: undefined,
    parse: (raw, where) => parseIp(one(raw, where), where, { family: 6, allowUnspecified: false }),
  }),
  "min-port": spec<number>({
    group: "Relay",
    describe: "lowest relay port",
    placeholder: "N",
    defaultText: "49152",
    default: 49152,
    parse: (raw, where) => parseInteger(raw, where, 1, 65535),
  }),
  "max-port": spec<number>({
    group: "Relay",
    describe: "highest relay port",
    placeholder: "N",
    defaultText: "65535",
    default: 65535,
    parse: (raw, where) => parseInteger(raw, where, 1, 65535),
  }),
  "pinned-ports": spec<PortRange | undefined>({
    group: "Relay",
    describe:
      "relay ports reserved for credentials that pin one (`credentials --port`); outside --min-port..--max-port",
    placeholder: "MIN-MAX",
    defaultText: "none (pinned credentials are refused)",
    default: undefined,
    parse: (raw, where) => parsePortRange(one(raw, where), where),
  }),
  "legacy-channel-numbers": spec<boolean>({
    group: "Relay",
    describe:
      "also accept RFC 5766's ChannelBind numbers 0x5000-0x7FFF (older clients, e.g. coturn's turnutils_uclient); by default only RFC 8656's 0x4000-0x4FFF",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  realm: spec<string>({
    group: "Authentication",
    describe: "long-term credential realm",
    placeholder: "S",
    defaultText: "turnpike",
    default: "turnpike",
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  token: spec<string | undefined>({
    group: "Authentication",
    describe:
      "shared secret for TURN REST API credentials (coturn use-auth-secret compatible); prefer the env var, a flag is visible in `ps`",
    placeholder: "SECRET",
    defaultText: "generated at start (one warning line)",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  user: spec<StaticUser[]>({
    group: "Authentication",
    describe: "static long-term user (repeatable)",
    placeholder: "NAME:PASSWORD",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseUser(v, where)),
  }),
  revoke: spec<string[]>({
    group: "Authentication",
    describe:
      "refuse this user's credentials (403) and end its allocations: a REST <user> (pinned or not) or a static user (repeatable)",
    placeholder: "USER",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw) => list(raw).map((u) => u.trim()),
  }),
  "revoke-file": spec<string | undefined>({
    group: "Authentication",
    describe:
      "file of users to revoke, one per line (# comments), re-read on SIGHUP; adds to --revoke",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "allow-peer": spec<string[]>({
    group: "Peer policy",
    describe: "allow peers in this CIDR even if special-purpose (repeatable)",
    placeholder: "CIDR",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseCidr(v, where)),
  }),
  "deny-peer": spec<string[]>({
    group: "Peer policy",
    describe: "deny peers in this CIDR; wins over --allow-peer (repeatable)",
    placeholder: "CIDR",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseCidr(v, where)),
  }),
  "allow-loopback-peers": spec<boolean>({
    group: "Peer policy",
    describe: "allow 127.0.0.0/8 and ::1 as peers (tests only; logged as a warning)",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "allow-self-peer": spec<boolean>({
    group: "Peer policy",
    describe:
      "allow the relay's own addresses as peers: without it 0.0.0.0/::, the relay's listening ports and its own addresses outside the relay port range are refused whatever --allow-peer says (logged as a warning)",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "max-allocations": spec<number>({
    group: "Limits",
    describe: "total allocations",
    placeholder: "N",
    defaultText: "10000",
    default: 10000,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-allocations-per-user": spec<number>({
    group: "Limits",
    describe: "allocations per user (486 Allocation Quota Reached beyond)",
    placeholder: "N",
    defaultText: "100",
    default: 100,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-permissions": spec<number>({
    group: "Limits",
    describe: "permissions per allocation",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    parse: (raw, where) => parseInteger(raw, where, 1, 65535),
  }),
  "max-channels": spec<number>({
    group: "Limits",
    describe: "channels per allocation",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    // RFC 8656 §12: channel numbers 0x4000 through 0x4FFF, so at most 4096 per allocation.
    parse: (raw, where) => parseInteger(raw, where, 1, 4096),
  }),
  "max-unauthenticated-rate": spec<number>({
    group: "Limits",
    describe:
      "responses per second per source IP to requests without valid credentials (Binding, 401, 438); beyond it they are dropped, so spoofed sources cannot use the relay as an amplifier (0 = unlimited)",
    placeholder: "N",
    defaultText: "200",
    default: 200,
    parse: (raw, where) => parseInteger(raw, where, 0, 10_000_000),
  }),
  "max-connections": spec<number>({
    group: "Limits",
    describe: "TCP/TLS client connections",
    placeholder: "N",
    defaultText: "10000",
    default: 10000,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-connections-per-ip": spec<number>({
    group: "Limits",
    describe:
      "TCP/TLS connections from one source (IPv4 address, IPv6 /64) that have not authenticated yet (TLS handshake, or no allocation); beyond it new ones are closed (0 = unlimited)",
    placeholder: "N",
    defaultText: "100",
    default: 100,
    parse: (raw, where) => parseInteger(raw, where, 0, 10_000_000),
  }),
  "tcp-idle-timeout": spec<number>({
    group: "Limits",
    describe:
      "seconds a TCP/TLS connection without an allocation may go without sending a complete message before it is closed (a TLS handshake gets min(this, 10 s) in all)",
    placeholder: "SECONDS",
    defaultText: "300",
    default: 300,
    parse: (raw, where) => parseInteger(raw, where, 1, 86400),
  }),
  "udp-io": spec<UdpIoMode>({
    group: "Operations",
    describe:
      "UDP data path: batch (native recvmmsg/sendmmsg, Linux), dgram (node:dgram), auto (batch when its native module loads, else dgram; the log says which)",
    placeholder: "auto|batch|dgram",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      if (!(UDP_IO_MODES as readonly string[]).includes(text)) {
        throw new ConfigError(
          `${where} must be one of auto, batch, dgram, got ${JSON.stringify(text)}`,
        );
      }
      return text as UdpIoMode;
    },
  }),
  workers: spec<number | "auto">({
    group: "Operations",
    describe:
      "relay engines, one per worker thread, each with its own SO_REUSEPORT sockets and slice of the relay ports; limits hold for the process as a whole (auto = available cores)",
    placeholder: "N|auto",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      return text === "auto" ? "auto" : parseInteger(text, where, 1, 256);
    },
  }),
  "test-crash-worker": spec<boolean>({
    group: "Testing",
    describe: "test hook: SIGUSR2 makes worker 0 throw an uncaught exception",
    boolean: true,
    defaultText: "false",
    default: false,
    hidden: true,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "alternate-server": spec<SocketAddress | undefined>({
    group: "Operations",
    describe: "sent as ALTERNATE-SERVER with 300 Try Alternate while draining",
    placeholder: "ADDR:PORT",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseSocketAddress(one(raw, where), where, 1),
  }),
  "drain-timeout": spec<number>({
    group: "Operations",
    describe: "seconds SIGTERM waits for live allocations before closing",
    placeholder: "SECONDS",
    defaultText: "30",
    default: 30,
    parse: (raw, where) => parseInteger(raw, where, 0, 86400),
  }),
  "health-listen": spec<SocketAddress | null>({
    group: "Operations",
    describe: 'HTTP /healthz and /readyz ("off" disables)',
    placeholder: "ADDR:PORT",
    defaultText: "127.0.0.1:8080",
    default: { ip: "127.0.0.1", port: 8080, family: 4 },
    parse: (raw, where) => {
      const text = one(raw, where);
      return text === "off" ? null : parseSocketAddress(text, where, 0);
    },
  }),
  "admin-token": spec<string | undefined>({
    group: "Operations",
    describe:
      "bearer token of the discovery API GET /v1/allocations on --health-listen (off without it); prefer the env var",
    placeholder: "TOKEN",
    defaultText: "none (discovery API off)",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  "prometheus-listen": spec<SocketAddress | undefined>({
    group: "Operations",
    describe: "Prometheus pull endpoint /metrics",
    placeholder: "ADDR:PORT",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseSocketAddress(one(raw, where), where, 0),
  }),
  ...logOptions("Operations"),
  software: spec<string>({
    group: "Operations",
    describe: "SOFTWARE attribute in responses",
    placeholder: "S",
    defaultText: "turnpike/<version>",
    default: `turnpike/${RELAY_VERSION}`,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  "rng-seed": spec<number | undefined>({
    group: "Operations",
    describe: "seed the injected random source (reproducing bugs; never in production)",
    placeholder: "N",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseInteger(raw, where, 0, 0xffffffff),
  }),
} as const;

type OptionName = keyof typeof OPTIONS;

const OPTION_SET = new OptionSet(OPTIONS, ENV_PREFIX);

/** The TURNPIKE_* variable for an option (`min-port` -> TURNPIKE_MIN_PORT). */
export function envName(option: string): string {
  return OPTION_SET.envName(option);
}

// ---------------------------------------------------------------------------------------------
// Value parsers for the relay's own shapes (the generic ones are runtime-kit's). Each throws
// ConfigError with a single line naming `where`.

function readablePath(raw: RawValue, where: string): string {
  const path = nonEmpty(raw, where);
  try {
    accessSync(path, fsConstants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(
      `${where} must be a readable file, got ${JSON.stringify(path)} (${code})`,
    );
  }
  return path;
}

function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || (ip.includes(":") && /^[0:]+$/.test(ip));
}

function parseIp(
  text: string,
  where: string,
  opts: { family?: 4 | 6; allowUnspecified?: boolean },
): string {
  const ip = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const family = isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  if (family === 0 || (opts.family !== undefined && family !== opts.family)) {
    fail(where, opts.family === undefined ? "an IP address" : `an IPv${opts.family} address`, text);
  }
  if (opts.allowUnspecified === false && isUnspecified(ip)) {
    fail(where, "a specific (not unspecified) IP address", text);
  }
  return family === 6 ? ip.toLowerCase() : ip;
}

/** Parses `IP:PORT` or `[IPv6]:PORT`. */
export function parseSocketAddress(text: string, where: string, minPort: 0 | 1): SocketAddress {
  const expectation = `IP:PORT or [IPv6]:PORT with port ${minPort}..65535`;
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") fail(where, expectation, text);
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6(host)) fail(where, expectation, text);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) fail(where, expectation, text);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    // A bare IPv6 address with a port is ambiguous ("::1:3478"); insist on brackets.
    if (!isIPv4(host)) fail(where, expectation, text);
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= minPort && port <= 65535)) fail(where, expectation, text);
  return isIPv4(host) ? { ip: host, port, family: 4 } : { ip: host.toLowerCase(), port, family: 6 };
}

/** A local sanity check only: relay-core's PeerAddressPolicy parses the CIDR again. */
function parseCidr(text: string, where: string): string {
  const slash = text.lastIndexOf("/");
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const ip = ipText.startsWith("[") && ipText.endsWith("]") ? ipText.slice(1, -1) : ipText;
  const family = isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  const prefixOk =
    prefixText === undefined ||
    (/^(0|[1-9]\d{0,2})$/.test(prefixText) && Number(prefixText) <= max);
  if (family === 0 || !prefixOk) fail(where, "a CIDR like 10.0.0.0/8 or fd00::/8", text);
  return text;
}

function parsePortRange(text: string, where: string): PortRange {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text.trim());
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (m === null || !(min >= 1 && max <= 65535 && min <= max)) {
    fail(where, "MIN-MAX with 1 <= MIN <= MAX <= 65535", text);
  }
  return { min, max };
}

/**
 * The users in a --revoke-file: one per line, surrounding blanks trimmed, empty lines and lines
 * starting with '#' skipped. Throws ConfigError when the file cannot be read.
 */
export function readRevokeFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`--revoke-file ${JSON.stringify(path)} is not readable (${code})`);
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

function parseUser(text: string, where: string): StaticUser {
  const colon = text.indexOf(":");
  if (colon <= 0 || colon === text.length - 1) fail(where, "NAME:PASSWORD", redactUser(text));
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

// Never echo a password back into logs or terminals.
function redactUser(text: string): string {
  const colon = text.indexOf(":");
  return colon < 0 ? text : `${text.slice(0, colon)}:***`;
}

// ---------------------------------------------------------------------------------------------
// yargs (runtime-kit's parser, with the relay's usage and subcommand)

const CREDENTIALS_USAGE = `${PROGRAM_NAME} credentials [--user NAME [--port P]] [--ttl SECONDS] [--uri URI ...]`;
const ALLOCATIONS_USAGE = `${PROGRAM_NAME} allocations [--url URL] [--user NAME] [--json]`;

function buildParser(argv: readonly string[], mode: "relay" | "credentials" | "allocations") {
  const parser = addConfigOption(baseParser(argv, PROGRAM_NAME), OPTION_SET);
  if (mode === "allocations") {
    parser
      .usage(
        `Usage: ${ALLOCATIONS_USAGE}\n\n` +
          `Prints the live allocations of a running ${PROGRAM_NAME} (GET /v1/allocations on its health\n` +
          `listener, the discovery API): user, pinned port, relayed address, client, peers.\n` +
          `Needs the relay's admin token in ${ENV_PREFIX}ADMIN_TOKEN (or --admin-token).`,
      )
      .option("url", {
        type: "string",
        requiresArg: true,
        describe: `base URL of the relay's health listener [default: http://<${envName("health-listen")}> or http://127.0.0.1:8080]`,
      })
      .option("user", { type: "string", requiresArg: true, describe: "only this user's" })
      .option("json", { type: "boolean", describe: "print the raw JSON" })
      .option("admin-token", {
        type: "string",
        requiresArg: true,
        describe: `bearer token [env: ${envName("admin-token")}]`,
      })
      .option("health-listen", {
        type: "string",
        requiresArg: true,
        describe: `${OPTIONS["health-listen"].describe} (for the default URL) [env: ${envName("health-listen")}]`,
      });
    return parser;
  }
  if (mode === "credentials") {
    parser
      .usage(
        `Usage: ${CREDENTIALS_USAGE}\n\n` +
          `Prints TURN REST API credentials {"username","password","ttl","uris","key"} derived from ${ENV_PREFIX}TOKEN.\n` +
          'With --port the username pins that relay port: "<expiry>:<user>;port=<P>". Hand the\n' +
          "tunnel `key` (TURNPIKE_KEY): username and password in one string, never the token.",
      )
      .option("user", { type: "string", requiresArg: true, describe: "user name to embed" })
      .option("port", {
        type: "string",
        requiresArg: true,
        describe: "relay port to pin (needs --user; within the relay's --pinned-ports)",
      })
      .option("ttl", {
        type: "string",
        requiresArg: true,
        describe: "validity in seconds",
        defaultDescription: String(DEFAULT_TTL),
      })
      .option("uri", {
        type: "string",
        requiresArg: true,
        describe: "TURN URI to include (repeatable)",
        defaultDescription: "turn:/turns: URIs of the configured listeners",
      })
      .option("token", {
        type: "string",
        requiresArg: true,
        describe: `shared secret [env: ${ENV_PREFIX}TOKEN]`,
      });
    // The relay's own listener options, so default URIs can be computed from flags too.
    for (const name of CREDENTIALS_RELAY_OPTIONS) {
      const s = OPTIONS[name] as OptionSpec<unknown>;
      parser.option(name, {
        type: "string",
        requiresArg: true,
        describe: `${s.describe} (for the default URIs) [env: ${envName(name)}]`,
      });
    }
    return parser;
  }
  parser.usage(
    `Usage: ${PROGRAM_NAME} [options]\n       ${CREDENTIALS_USAGE}\n       ${ALLOCATIONS_USAGE}\n\n` +
      "A TURN/STUN relay (RFC 8489, RFC 8656, RFC 6062). Every option is also read from the\n" +
      `environment (${ENV_PREFIX}<OPTION>, lists comma-separated) and from --config FILE (JSON).\n` +
      "Precedence: flag > environment > config file > default.",
  );
  addTableOptions(parser, OPTION_SET);
  parser.epilog(
    "Metrics: set OTLP_GRPC_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT) to export over OTLP gRPC;\n" +
      "OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured.",
  );
  return parser;
}

// ---------------------------------------------------------------------------------------------
// Entry point

export const DEFAULT_TTL = 86400;

const CREDENTIALS_RELAY_OPTIONS: readonly OptionName[] = [
  "listen",
  "tls-listen",
  "relay-ip",
  "public-ip4",
  "public-ip6",
  "pinned-ports",
];

/**
 * Parses argv (without the node and script paths) and the environment into a command.
 * Throws ConfigError (one line naming the option) on any invalid value.
 */
export function parseRelayArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  options: ParseOptions = {},
): ParsedCommand {
  if (argv[0] === "credentials") return parseCredentials(argv.slice(1), env);
  if (argv[0] === "allocations") return parseAllocations(argv.slice(1), env);
  const parser = buildParser(argv, "relay");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  if (args.version === true) return { command: "version", text: RELAY_VERSION };
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0) {
    throw new ConfigError(`unknown command ${JSON.stringify(String(positional[0]))}`);
  }
  const layers = [OPTION_SET.flagLayer(args), OPTION_SET.envLayer(env)];
  const file = OPTION_SET.configPath(args, env);
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1]));
  const values = OPTION_SET.resolve(layers);
  const fromFlag = {
    token: layers[0]?.values.token !== undefined,
    adminToken: layers[0]?.values["admin-token"] !== undefined,
  };
  return finish(values, file?.[0], fromFlag, env, options);
}

function finish(
  v: OptionValues<typeof OPTIONS>,
  configFile: string | undefined,
  fromFlag: { token: boolean; adminToken: boolean },
  env: NodeJS.ProcessEnv,
  options: ParseOptions,
): RelayConfig {
  const warnings: string[] = [];

  if (v["min-port"] > v["max-port"]) {
    throw new ConfigError(
      `--min-port must be <= --max-port, got ${v["min-port"]} > ${v["max-port"]}`,
    );
  }
  const pinned = v["pinned-ports"];
  if (pinned !== undefined && pinned.min <= v["max-port"] && v["min-port"] <= pinned.max) {
    // Disjoint, so a dynamic allocation can never sit on a port the platform assigned.
    throw new ConfigError(
      `--pinned-ports must not overlap --min-port..--max-port, got ${pinned.min}-${pinned.max} and ${v["min-port"]}-${v["max-port"]}`,
    );
  }
  if (v["tls-listen"].length > 0 && (v["tls-cert"] === undefined || v["tls-key"] === undefined)) {
    throw new ConfigError("--tls-listen needs --tls-cert and --tls-key");
  }
  const relay4 = v["relay-ip"].filter((ip) => isIPv4(ip));
  const relay6 = v["relay-ip"].filter((ip) => isIPv6(ip));
  if (relay4.length > 1 || relay6.length > 1) {
    throw new ConfigError(
      `--relay-ip must be given at most once per family, got ${JSON.stringify(v["relay-ip"].join(","))}`,
    );
  }
  const allListeners = [...v.listen, ...v["tls-listen"]];
  const seen = new Set<string>();
  for (const a of v.listen) {
    const key = formatSocketAddress(a);
    if (seen.has(key) && a.port !== 0) {
      throw new ConfigError(`--listen must not repeat an address, got "${key}" twice`);
    }
    seen.add(key);
  }

  const interfaces = options.networkInterfaces ?? osNetworkInterfaces;
  const relayIpFor = (family: 4 | 6, explicit: string | undefined): string | undefined => {
    if (explicit !== undefined) return explicit;
    const listeners = allListeners.filter((a) => a.family === family);
    if (listeners.length === 0) return undefined;
    const specific = listeners.find((a) => !isUnspecified(a.ip));
    if (specific !== undefined) return specific.ip;
    const host = firstHostAddress(interfaces(), family);
    if (host === undefined) {
      warnings.push(
        `no non-internal IPv${family} address found for relay sockets; set --relay-ip (IPv${family} allocations will fail)`,
      );
    }
    return host;
  };
  const relayIp4 = relayIpFor(4, relay4[0]);
  const relayIp6 = relayIpFor(6, relay6[0]);
  const selfAddresses = ownAddresses(
    [relayIp4, relayIp6, v["public-ip4"], v["public-ip6"], ...allListeners.map((a) => a.ip)],
    interfaces(),
  );

  let token = v.token;
  let tokenGenerated = false;
  if (token === undefined) {
    token = (options.randomToken ?? (() => randomBytes(32).toString("base64url")))();
    tokenGenerated = true;
    // The one place a token is printed: it was generated for this run, and without it nobody
    // could mint credentials for this relay.
    warnings.push(
      `no ${ENV_PREFIX}TOKEN set: generated a random token for this run; mint credentials with: ${ENV_PREFIX}TOKEN=${token} ${PROGRAM_NAME} credentials`,
    );
  } else if (fromFlag.token) {
    warnings.push(
      `--token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}TOKEN`,
    );
  }
  if (fromFlag.adminToken) {
    warnings.push(
      `--admin-token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}ADMIN_TOKEN`,
    );
  }
  if (v["admin-token"] !== undefined && v["health-listen"] === null) {
    warnings.push(
      "--admin-token is set but --health-listen is off: the discovery API is not served",
    );
  }
  const revokeFile = v["revoke-file"];
  const revokeFileUsers = revokeFile === undefined ? [] : readRevokeFile(revokeFile);
  if (v["allow-loopback-peers"]) {
    warnings.push(
      "--allow-loopback-peers is set: peers on 127.0.0.0/8 and ::1 are reachable (tests only)",
    );
  }
  if (v["test-crash-worker"]) {
    warnings.push("--test-crash-worker is set: SIGUSR2 crashes worker 0 (tests only)");
  }
  if (v["allow-self-peer"]) {
    warnings.push(
      "--allow-self-peer is set: clients may relay to the relay host itself (its listening ports and other services)",
    );
  }
  if (v["rng-seed"] !== undefined) {
    warnings.push("--rng-seed is set: nonces and ports are predictable (reproducing bugs only)");
  }
  warnings.push(...OPTION_SET.unknownEnvWarnings(env));

  return {
    command: "relay",
    listen: v.listen,
    tlsListen: v["tls-listen"],
    tlsCert: v["tls-cert"],
    tlsKey: v["tls-key"],
    relayIp4,
    relayIp6,
    publicIp4: v["public-ip4"],
    publicIp6: v["public-ip6"],
    minPort: v["min-port"],
    maxPort: v["max-port"],
    pinnedPorts: pinned,
    realm: v.realm,
    token,
    tokenGenerated,
    users: v.user,
    revoke: v.revoke.filter((u) => u !== ""),
    revokeFile,
    revokeFileUsers,
    adminToken: v["admin-token"],
    allowPeers: v["allow-peer"],
    denyPeers: v["deny-peer"],
    allowLoopbackPeers: v["allow-loopback-peers"],
    allowSelfPeer: v["allow-self-peer"],
    legacyChannelNumbers: v["legacy-channel-numbers"],
    selfAddresses,
    maxAllocations: v["max-allocations"],
    maxAllocationsPerUser: v["max-allocations-per-user"],
    maxPermissions: v["max-permissions"],
    maxChannels: v["max-channels"],
    maxConnections: v["max-connections"],
    maxConnectionsPerIp: v["max-connections-per-ip"],
    maxUnauthenticatedRate: v["max-unauthenticated-rate"],
    tcpIdleTimeout: v["tcp-idle-timeout"],
    udpIo: v["udp-io"],
    ...resolveWorkers(v.workers, v["udp-io"]),
    testCrashWorker: v["test-crash-worker"],
    alternateServer: v["alternate-server"],
    drainTimeout: v["drain-timeout"],
    healthListen: v["health-listen"],
    prometheusListen: v["prometheus-listen"],
    logFormat: v["log-format"],
    logLevel: v["log-level"],
    software: v.software,
    rngSeed: v["rng-seed"],
    configFile,
    warnings,
  };
}

/**
 * --workers: `auto` is the cores this process may use. Workers share their listening ports
 * with SO_REUSEPORT; node:dgram offers it from Node 22.12 on (the batched path always can).
 */
function resolveWorkers(
  asked: number | "auto",
  udpIo: UdpIoMode,
): { workers: number; workersNote: string | undefined } {
  const workers = asked === "auto" ? availableParallelism() : asked;
  if (workers > 1 && udpIo === "dgram" && !dgramReusePort()) {
    return {
      workers: 1,
      workersNote: `--workers ${asked}: one worker, because node:dgram offers SO_REUSEPORT only from Node 22.12 (this is ${process.version})`,
    };
  }
  return { workers, workersNote: undefined };
}

function dgramReusePort(): boolean {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  return major > 22 || (major === 22 && minor >= 12);
}

/** Configured addresses (not unspecified) and every interface address, without duplicates. */
function ownAddresses(
  configured: readonly (string | undefined)[],
  interfaces: ReturnType<typeof osNetworkInterfaces>,
): string[] {
  const out = new Set<string>();
  for (const ip of configured) if (ip !== undefined && !isUnspecified(ip)) out.add(ip);
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (isIPv4(a.address) || isIPv6(a.address)) out.add(a.address.toLowerCase());
    }
  }
  return [...out];
}

function firstHostAddress(
  interfaces: ReturnType<typeof osNetworkInterfaces>,
  family: 4 | 6,
): string | undefined {
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (a.internal) continue;
      const fam = a.family === "IPv4" || (a.family as unknown) === 4 ? 4 : 6;
      if (fam !== family) continue;
      // Link-local IPv6 needs a zone id to be usable as a relayed address: skip it.
      if (fam === 6 && a.address.toLowerCase().startsWith("fe80:")) continue;
      return a.address;
    }
  }
  return undefined;
}

function parseCredentials(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): CredentialsCommand | InfoCommand {
  const parser = buildParser(argv, "credentials");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0) {
    throw new ConfigError(
      `credentials takes no arguments, got ${JSON.stringify(String(positional[0]))}`,
    );
  }
  // The listeners, public addresses and token come from the same environment and config file
  // the relay reads, so the default URIs match what the relay serves.
  const layers = [
    OPTION_SET.flagLayer(args, ["token", ...CREDENTIALS_RELAY_OPTIONS]),
    OPTION_SET.envLayer(env),
  ];
  const file = OPTION_SET.configPath(args, env);
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1]));
  const v = OPTION_SET.resolve(layers);
  if (v.token === undefined) {
    throw new ConfigError(
      `credentials needs the relay's shared secret: export ${ENV_PREFIX}TOKEN (or pass --token)`,
    );
  }
  const userArg = args.user;
  let user: string | undefined;
  if (userArg !== undefined) {
    user = one(userArg as Scalar | Scalar[], "--user");
    if (user === "" || user.includes(":") || user.includes(PIN_MARKER)) {
      fail("--user", `a name without ':' or '${PIN_MARKER}' (pin a port with --port)`, user);
    }
  }
  let port: number | undefined;
  if (args.port !== undefined) {
    port = parseInteger(args.port as Scalar, "--port", 1, 65535);
    if (user === undefined) throw new ConfigError("--port needs --user: a pin belongs to a user");
    const pinned = v["pinned-ports"];
    // The relay's range is known when its configuration is (same env and config file): a pin
    // outside it would be refused with 403 by every relay, so refuse to mint it.
    if (pinned !== undefined && (port < pinned.min || port > pinned.max)) {
      fail(
        "--port",
        `a port in the relay's --pinned-ports ${pinned.min}-${pinned.max}`,
        String(port),
      );
    }
  }
  const ttl =
    args.ttl === undefined
      ? DEFAULT_TTL
      : parseInteger(args.ttl as Scalar, "--ttl", 1, 10 * 365 * 86400);
  const uriArg = args.uri;
  let uris: string[];
  if (uriArg !== undefined) {
    uris = list(uriArg as Scalar | Scalar[]);
    for (const uri of uris) {
      if (!/^turns?:[^\s]+$/.test(uri)) fail("--uri", "a turn: or turns: URI", uri);
    }
  } else {
    uris = defaultUris(v);
  }
  return { command: "credentials", token: v.token, user, port, ttl, uris };
}

function parseAllocations(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): AllocationsCommand | InfoCommand {
  const parser = buildParser(argv, "allocations");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0) {
    throw new ConfigError(
      `allocations takes no arguments, got ${JSON.stringify(String(positional[0]))}`,
    );
  }
  // The health listener and the admin token come from the relay's own environment and config
  // file when run next to it, so `turnpike-relay allocations` needs no flags there.
  const layers = [
    OPTION_SET.flagLayer(args, ["admin-token", "health-listen"]),
    OPTION_SET.envLayer(env),
  ];
  const file = OPTION_SET.configPath(args, env);
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1]));
  const v = OPTION_SET.resolve(layers);
  if (v["admin-token"] === undefined) {
    throw new ConfigError(
      `allocations needs the relay's admin token: export ${ENV_PREFIX}ADMIN_TOKEN (or pass --admin-token)`,
    );
  }
  let url: string;
  if (args.url !== undefined) {
    url = one(args.url as Scalar, "--url");
    let ok = false;
    try {
      ok = /^https?:$/.test(new URL(url).protocol);
    } catch {
      ok = false;
    }
    if (!ok) fail("--url", "a URL like http://127.0.0.1:8080", url);
  } else {
    const at = v["health-listen"] ?? { ip: "127.0.0.1", port: 8080, family: 4 as const };
    const ip = isUnspecified(at.ip) ? (at.family === 6 ? "::1" : "127.0.0.1") : at.ip;
    url = `http://${formatSocketAddress({ ip, port: at.port })}`;
  }
  const user = args.user === undefined ? undefined : one(args.user as Scalar, "--user");
  return {
    command: "allocations",
    url,
    adminToken: v["admin-token"],
    user,
    json: args.json === true,
  };
}

/** turn:/turns: URIs (RFC 7065) for the configured listeners. */
function defaultUris(v: OptionValues<typeof OPTIONS>): string[] {
  const hostFor = (a: SocketAddress): string | undefined => {
    if (!isUnspecified(a.ip)) return a.ip;
    const publicIp = a.family === 4 ? v["public-ip4"] : v["public-ip6"];
    if (publicIp !== undefined) return publicIp;
    const relayIp = v["relay-ip"].find((ip) => (a.family === 4 ? isIPv4(ip) : isIPv6(ip)));
    if (relayIp !== undefined) return relayIp;
    return firstHostAddress(osNetworkInterfaces(), a.family);
  };
  const hostPort = (a: SocketAddress, host: string): string =>
    `${a.family === 6 ? `[${host}]` : host}:${a.port}`;
  const uris: string[] = [];
  for (const a of v.listen) {
    const host = hostFor(a);
    if (host === undefined) continue;
    uris.push(`turn:${hostPort(a, host)}?transport=udp`, `turn:${hostPort(a, host)}?transport=tcp`);
  }
  for (const a of v["tls-listen"]) {
    const host = hostFor(a);
    if (host === undefined) continue;
    uris.push(`turns:${hostPort(a, host)}?transport=tcp`);
  }
  return uris;
}

export function formatSocketAddress(a: { ip: string; port: number; family?: 4 | 6 }): string {
  return a.ip.includes(":") ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

// ---------------------------------------------------------------------------------------------
// Docs

/** The README configuration table (Markdown): option, env var, default, meaning. */
export function renderConfigTable(): string {
  return OPTION_SET.renderTable();
}
