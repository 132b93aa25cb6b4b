// turnpike-tunnel configuration: ONE option table (OPTIONS) from which the yargs options, the
// TURNPIKE_* environment names, `--help` and the README table are generated (ARCHITECTURE.md,
// "Layers").
// The engine is @turnpike/runtime-kit's OptionSet, shared with turnpike-relay; this module keeps
// the table, the tunnel's own value shapes and the cross-field rules.
//
// Precedence: flag > environment TURNPIKE_<OPTION> > `--config FILE` (JSON) > default. Every value
// is validated; a wrong one is a ConfigError whose one-line message names its source.

import { readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { hostname } from "node:os";
import {
  type ArgvRecord,
  addConfigOption,
  addTableOptions,
  baseParser,
  ConfigError,
  decodeTunnelKey,
  fail,
  helpText,
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
  listNonEmpty as list,
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
  type TunnelCredentials,
} from "@turnpike/runtime-kit";
import { expandAllowList, type PeerAllowList } from "./peers.js";
import { targetRefusal } from "./targets.js";
import { parseTurnUri, type TurnUri } from "./uri.js";
import { type AccessWindow, parseWindow } from "./windows.js";

export const PROGRAM_NAME = "turnpike-tunnel";
export const ENV_PREFIX = "TURNPIKE_";
export const TUNNEL_VERSION = "0.1.0";

export { ConfigError, LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel };

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** One exposed private service. */
export interface ServiceSpec {
  readonly name: string;
  readonly protocol: "tcp" | "udp";
  /** The private target, e.g. postgres.internal:5432. */
  readonly target: HostPort;
  readonly allowPeers: PeerAllowList;
  readonly windows: readonly AccessWindow[];
}

export type CredentialsConfig =
  | { readonly kind: "static"; readonly username: string; readonly password: string }
  | { readonly kind: "token"; readonly token: string; readonly name: string; readonly ttl: number }
  | { readonly kind: "url"; readonly url: string }
  /** username and password from a tunnel key (`turnpike-relay credentials` prints one). */
  | { readonly kind: "key"; readonly username: string; readonly password: string };

export interface TunnelConfig {
  readonly command: "run";
  readonly relays: readonly TurnUri[];
  readonly credentials: CredentialsConfig;
  readonly services: readonly ServiceSpec[];
  /** Seconds. */
  readonly dnsInterval: number;
  readonly keepalive: number;
  readonly backoffBase: number;
  readonly backoffMax: number;
  /** Requested allocation lifetime, seconds. */
  readonly lifetime: number;
  readonly maxPermissions: number;
  /** null when "off". */
  readonly adminListen: HostPort | null;
  readonly adminToken: string | undefined;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly software: string;
  /** Test hook: fixed DNS answers. */
  readonly resolve: ReadonlyMap<string, readonly string[]>;
  /** How turns: relays are verified. */
  readonly tls: {
    readonly ca?: readonly string[];
    readonly rejectUnauthorized: boolean;
    readonly servername?: string;
  };
  /** Test hook: a file holding the ISO 8601 instant access windows are evaluated at. */
  readonly testClock: string | undefined;
  /** Test hook: seconds an idle UDP peer flow is kept (default 120). */
  readonly udpFlowIdle: number;
  /** Allow link-local and cloud metadata targets (targets.ts). */
  readonly allowMetadataTargets: boolean;
  readonly warnings: readonly string[];
}

export interface ListCommand {
  readonly command: "list";
  readonly admin: string;
  readonly adminToken: string | undefined;
  readonly json: boolean;
}

export interface InfoCommand {
  readonly command: "help" | "version";
  readonly text: string;
}

export type ParsedCommand = TunnelConfig | ListCommand | InfoCommand;

// ---------------------------------------------------------------------------------------------
// The option table

type Group = "Relay" | "Authentication" | "Services" | "Admin API" | "Operations" | "Testing";

function spec<T>(s: OptionSpec<T, Group>): OptionSpec<T, Group> {
  return s;
}

export const OPTIONS = {
  relay: spec<TurnUri[]>({
    group: "Relay",
    describe:
      "TURN URI of the relay (repeatable): turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT]; every resolved address gets its own allocation",
    placeholder: "URI",
    repeatable: true,
    defaultText: "none (required)",
    default: [],
    parse: (raw, where) =>
      list(raw).map((text) => {
        const u = parseTurnUri(text);
        if ("error" in u) fail(where, u.error, text);
        return u;
      }),
  }),
  "dns-interval": spec<number>({
    group: "Relay",
    describe: "seconds between re-resolutions of relay names",
    placeholder: "SECONDS",
    defaultText: "30",
    default: 30,
    parse: (raw, where) => parseSeconds(raw, where, 0.1, 86400),
  }),
  keepalive: spec<number>({
    group: "Relay",
    describe:
      "seconds between keep-alives (Refresh requests: they also find an allocation a restarted relay forgot); no answer from the relay for twice this = reconnect",
    placeholder: "SECONDS",
    defaultText: "15",
    default: 15,
    parse: (raw, where) => parseSeconds(raw, where, 0.1, 3600),
  }),
  "backoff-base": spec<number>({
    group: "Relay",
    describe: "first reconnect window in seconds (exponential backoff, full jitter)",
    placeholder: "SECONDS",
    defaultText: "0.5",
    default: 0.5,
    parse: (raw, where) => parseSeconds(raw, where, 0.01, 3600),
  }),
  "backoff-max": spec<number>({
    group: "Relay",
    describe: "largest reconnect window in seconds",
    placeholder: "SECONDS",
    defaultText: "30",
    default: 30,
    parse: (raw, where) => parseSeconds(raw, where, 0.01, 86400),
  }),
  lifetime: spec<number>({
    group: "Relay",
    describe: "allocation lifetime to request, seconds (refreshed before it ends)",
    placeholder: "SECONDS",
    defaultText: "600",
    default: 600,
    parse: (raw, where) => parseInteger(raw, where, 30, 3600),
  }),
  ca: spec<string[] | undefined>({
    group: "Relay",
    describe:
      "PEM file of CA certificates trusted for turns: relays, besides Node's bundled roots (e.g. a private CA or the relay's self-signed certificate)",
    placeholder: "FILE",
    defaultText: "Node's bundled roots",
    default: undefined,
    parse: (raw, where) => {
      const path = nonEmpty(raw, where);
      let pem: string;
      try {
        pem = readFileSync(path, "utf8");
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
        fail(where, `a readable PEM file (${code})`, path);
      }
      const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
      if (certs === null) fail(where, "a PEM file with at least one CERTIFICATE", path);
      return certs;
    },
  }),
  "tls-servername": spec<string | undefined>({
    group: "Relay",
    describe:
      "name the turns: relay's certificate must carry (and the SNI sent), e.g. for a turns:IP URI whose certificate names a DNS name",
    placeholder: "NAME",
    defaultText: "the URI's host when it is a name",
    default: undefined,
    parse: (raw, where) => {
      const t = nonEmpty(raw, where).toLowerCase();
      if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(t)) fail(where, "a DNS name", t);
      return t;
    },
  }),
  "insecure-skip-verify": spec<boolean>({
    group: "Relay",
    describe:
      "tests only: accept any certificate from turns: relays (no CA or name check); logged as a warning",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  token: spec<string | undefined>({
    group: "Authentication",
    describe:
      "the relay's shared secret: time-limited TURN REST credentials are derived from it; prefer the env var, a flag is visible in `ps`",
    placeholder: "SECRET",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  name: spec<string>({
    group: "Authentication",
    describe: "user part of derived REST usernames (<expiry>:<name>)",
    placeholder: "NAME",
    defaultText: "the host name",
    default: hostname() || "turnpike-tunnel",
    parse: (raw, where) => {
      const t = nonEmpty(raw, where);
      if (t.includes(":")) fail(where, "a name without ':'", t);
      return t;
    },
  }),
  "credential-ttl": spec<number>({
    group: "Authentication",
    describe:
      "validity of derived REST credentials, seconds (renewed in place once 80% has passed; below 60 only for tests)",
    placeholder: "SECONDS",
    defaultText: "86400",
    default: 86400,
    parse: (raw, where) => parseInteger(raw, where, 5, 30 * 86400),
  }),
  key: spec<TunnelCredentials | undefined>({
    group: "Authentication",
    describe:
      "the tunnel key the platform handed out (`turnpike-relay credentials` prints it): username and password in one string, e.g. pinned to a relay port; prefer the env var",
    placeholder: "KEY",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => {
      const k = decodeTunnelKey(nonEmpty(raw, where));
      if ("error" in k) throw new ConfigError(`${where}: ${k.error}`);
      return k;
    },
  }),
  username: spec<string | undefined>({
    group: "Authentication",
    describe: "static long-term credential user name (with --password)",
    placeholder: "NAME",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  password: spec<string | undefined>({
    group: "Authentication",
    describe: "static long-term credential password (prefer the env var)",
    placeholder: "PASSWORD",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  "credentials-url": spec<string | undefined>({
    group: "Authentication",
    describe:
      'HTTP(S) URL answering GET with TURN REST JSON {"username","password","ttl","uris"}; fetched again before ttl runs out',
    placeholder: "URL",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => {
      const t = nonEmpty(raw, where);
      let u: URL | undefined;
      try {
        u = new URL(t);
      } catch {
        u = undefined;
      }
      if (u === undefined || (u.protocol !== "http:" && u.protocol !== "https:")) {
        fail(where, "an http:// or https:// URL", t);
      }
      return t;
    },
  }),
  expose: spec<Array<{ name: string; protocol: "tcp" | "udp"; target: HostPort }>>({
    group: "Services",
    describe:
      "a private service to expose (repeatable): NAME=tcp://HOST:PORT or NAME=udp://HOST:PORT",
    placeholder: "NAME=URL",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) =>
      list(raw).map((text) => {
        const e = parseExpose(text);
        if ("error" in e) fail(where, e.error, text);
        return e;
      }),
  }),
  "allow-peer": spec<string[]>({
    group: "Services",
    describe:
      "peer address allowed to reach the exposed services (repeatable): an IP, or a CIDR up to /24 (IPv4) or /120 (IPv6); one TURN permission per address",
    placeholder: "IP|CIDR",
    repeatable: true,
    defaultText: "none (nobody gets in)",
    default: [],
    parse: (raw) => list(raw),
  }),
  window: spec<AccessWindow[]>({
    group: "Services",
    describe:
      'access window (repeatable), e.g. "Mon-Fri 08:00-18:00 Europe/Berlin"; outside every window allocations are released',
    placeholder: "WINDOW",
    repeatable: true,
    // Windows contain no commas but spaces: TURNPIKE_WINDOW separates them with ';'.
    envSeparator: ";",
    defaultText: "always open",
    default: [],
    parse: (raw, where) =>
      list(raw).map((text) => {
        const w = parseWindow(text);
        if ("error" in w) fail(where, w.error, text);
        return w;
      }),
  }),
  "max-permissions": spec<number>({
    group: "Services",
    describe:
      "most peer addresses per service (keep <= the relay's per-allocation permission limit)",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    parse: (raw, where) => parseInteger(raw, where, 1, 4096),
  }),
  "allow-metadata-targets": spec<boolean>({
    group: "Services",
    describe:
      "allow targets at link-local addresses (169.254.0.0/16, fe80::/10) and cloud metadata services (fd00:ec2::254, 100.100.100.200), refused by default in --expose, the admin API and name resolution (logged as a warning)",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "admin-listen": spec<HostPort | null>({
    group: "Admin API",
    describe: 'admin HTTP API (/health, /list, /expose) address ("off" disables)',
    placeholder: "ADDR:PORT",
    defaultText: "127.0.0.1:7070",
    default: { host: "127.0.0.1", port: 7070 },
    parse: (raw, where) => {
      const t = one(raw, where);
      return t === "off" ? null : parseListen(t, where);
    },
  }),
  "admin-token": spec<string | undefined>({
    group: "Admin API",
    describe: "bearer token the admin API requires (Authorization: Bearer TOKEN)",
    placeholder: "TOKEN",
    defaultText: "none (no auth: keep the API on loopback)",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  ...logOptions("Operations"),
  software: spec<string>({
    group: "Operations",
    describe: "SOFTWARE attribute sent to the relay",
    placeholder: "S",
    defaultText: `turnpike-tunnel/${TUNNEL_VERSION}`,
    default: `turnpike-tunnel/${TUNNEL_VERSION}`,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  resolve: spec<Map<string, string[]>>({
    group: "Testing",
    describe:
      "tests only: answer NAME with these addresses instead of DNS (repeatable), e.g. relay.test=127.0.0.1,127.0.0.2",
    placeholder: "NAME=IP,IP",
    repeatable: true,
    hidden: true,
    defaultText: "none",
    default: new Map(),
    parse: (raw, where) => parseResolve(list(raw), where),
  }),
  "udp-flow-idle": spec<number>({
    group: "Testing",
    describe:
      "tests only: seconds a UDP peer flow may stay idle before its socket and channel are released",
    placeholder: "SECONDS",
    hidden: true,
    defaultText: "120",
    default: 120,
    parse: (raw, where) => parseSeconds(raw, where, 0.05, 86400),
  }),
  "test-clock": spec<string | undefined>({
    group: "Testing",
    describe:
      "tests only: access windows are evaluated at the ISO 8601 instant written in FILE (re-read every 200 ms) instead of the system clock",
    placeholder: "FILE",
    hidden: true,
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
} as const;

const OPTION_SET = new OptionSet(OPTIONS, ENV_PREFIX);

export function envName(option: string): string {
  return OPTION_SET.envName(option);
}

// ---------------------------------------------------------------------------------------------
// Value parsers for the tunnel's own shapes (the generic ones are runtime-kit's)

function parseSeconds(raw: RawValue, where: string, min: number, max: number): number {
  const text = one(raw, where).replace(/s$/, "");
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= max)) fail(where, `seconds ${min}..${max}`, text);
  return n;
}

/** HOST:PORT where HOST is an IPv4 address, [IPv6] or a name ("localhost"). */
function parseHostPort(text: string): HostPort | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  let host = m[1]!;
  if (host.startsWith("[")) {
    host = host.slice(1, -1);
    if (!isIPv6(host)) return undefined;
  } else if (!isIPv4(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    return undefined;
  }
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) return undefined;
  return { host, port };
}

function parseListen(text: string, where: string): HostPort {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  const host = m?.[1]?.replace(/^\[|\]$/g, "");
  const port = Number(m?.[2]);
  if (
    !m ||
    host === undefined ||
    (!isIPv4(host) && !isIPv6(host)) ||
    !(port >= 0 && port <= 65535)
  ) {
    fail(where, "IP:PORT or [IPv6]:PORT", text);
  }
  return { host, port };
}

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** NAME=tcp://HOST:PORT or NAME=udp://HOST:PORT. */
export function parseExpose(
  text: string,
): { name: string; protocol: "tcp" | "udp"; target: HostPort } | { error: string } {
  const eq = text.indexOf("=");
  const name = eq < 0 ? "" : text.slice(0, eq).trim();
  const m = /^(tcp|udp):\/\/(.+?)\/?$/i.exec(eq < 0 ? "" : text.slice(eq + 1).trim());
  if (!SERVICE_NAME.test(name) || !m) {
    return { error: "NAME=tcp://HOST:PORT or NAME=udp://HOST:PORT (NAME: letters, digits, . _ -)" };
  }
  const target = parseHostPort(m[2]!);
  if (target === undefined) return { error: "a target HOST:PORT (IPv6 in brackets)" };
  return { name, protocol: m[1]!.toLowerCase() as "tcp" | "udp", target };
}

function parseResolve(items: readonly string[], where: string): Map<string, string[]> {
  // Items arrive comma-split (env lists, or one flag "a=1.1.1.1,1.1.1.2"): an item without "="
  // adds an address to the name before it.
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const item of items.flatMap((i) => i.split(","))) {
    const eq = item.indexOf("=");
    let ip = item.trim();
    if (eq >= 0) {
      const name = item.slice(0, eq).trim().toLowerCase();
      if (name === "") fail(where, "NAME=IP[,IP...]", item);
      current = out.get(name) ?? [];
      out.set(name, current);
      ip = item.slice(eq + 1).trim();
    }
    if (current === undefined || (!isIPv4(ip) && !isIPv6(ip))) fail(where, "NAME=IP[,IP...]", item);
    current.push(ip);
  }
  return out;
}

/** The config file as JSON; any failure is one "not readable JSON" line. */
function readConfigJson(path: string, where: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code ?? (err as Error).message.split("\n")[0];
    throw new ConfigError(`${where} file ${JSON.stringify(path)} is not readable JSON (${reason})`);
  }
}

// ---------------------------------------------------------------------------------------------
// yargs (runtime-kit's parser, with the tunnel's usage and `list` subcommand)

function buildParser(argv: readonly string[], mode: "run" | "list") {
  const parser = baseParser(argv, PROGRAM_NAME);
  if (mode === "list") {
    return parser
      .usage(
        `Usage: ${PROGRAM_NAME} list [--admin URL] [--admin-token TOKEN] [--json]\n\nPrints the tunnels of a running ${PROGRAM_NAME} (GET /list of its admin API).`,
      )
      .option("admin", {
        type: "string",
        requiresArg: true,
        describe: `admin API base URL [default: http://<${envName("admin-listen")}> or http://127.0.0.1:7070]`,
      })
      .option("admin-token", {
        type: "string",
        requiresArg: true,
        describe: `bearer token [env: ${envName("admin-token")}]`,
      })
      .option("json", { type: "boolean", describe: "print the raw JSON" });
  }
  addConfigOption(parser, OPTION_SET).usage(
    `Usage: ${PROGRAM_NAME} --relay URI --expose NAME=tcp://HOST:PORT --allow-peer IP [options]\n` +
      `       ${PROGRAM_NAME} list [--admin URL] [--admin-token TOKEN]\n\n` +
      "Exposes private TCP/UDP services through a TURN relay (RFC 8656, RFC 6062) with outbound\n" +
      "connections only. Every option is also read from the environment (TURNPIKE_<OPTION>,\n" +
      "lists comma-separated, windows ';'-separated) and from --config FILE (JSON).\n" +
      "Precedence: flag > environment > config file > default.",
  );
  addTableOptions(parser, OPTION_SET);
  parser.epilog(
    "Credentials: TURNPIKE_KEY (from the platform), TURNPIKE_TOKEN (derived REST credentials),\n" +
      "--username/--password, or --credentials-url.\n" +
      "Metrics: set OTLP_GRPC_ENDPOINT (or OTEL_EXPORTER_OTLP_ENDPOINT) to export over OTLP gRPC.",
  );
  return parser;
}

// ---------------------------------------------------------------------------------------------
// Entry point

export function parseTunnelArgs(argv: readonly string[], env: NodeJS.ProcessEnv): ParsedCommand {
  if (argv[0] === "list") return parseList(argv.slice(1), env);
  const parser = buildParser(argv, "run");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  if (args.version === true) return { command: "version", text: TUNNEL_VERSION };
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0)
    throw new ConfigError(`unknown command ${JSON.stringify(String(positional[0]))}`);
  const layers = [OPTION_SET.flagLayer(args), OPTION_SET.envLayer(env)];
  const file =
    args.config !== undefined
      ? ([one(args.config as Scalar, "--config"), "--config"] as const)
      : env[`${ENV_PREFIX}CONFIG`]?.trim()
        ? ([env[`${ENV_PREFIX}CONFIG`]!.trim(), `${ENV_PREFIX}CONFIG`] as const)
        : undefined;
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1], readConfigJson));
  const tokenFromFlag = layers[0]!.values.token !== undefined;
  const keyFromFlag = layers[0]!.values.key !== undefined;
  return finish(OPTION_SET.resolve(layers), tokenFromFlag, keyFromFlag, env);
}

function finish(
  v: OptionValues<typeof OPTIONS>,
  tokenFromFlag: boolean,
  keyFromFlag: boolean,
  env: NodeJS.ProcessEnv,
): TunnelConfig {
  const warnings: string[] = [];
  if (v.relay.length === 0)
    throw new ConfigError("--relay is required (e.g. --relay turn:relay.example.com)");
  if (v["backoff-base"] > v["backoff-max"]) {
    throw new ConfigError(
      `--backoff-base must be <= --backoff-max, got ${v["backoff-base"]} > ${v["backoff-max"]}`,
    );
  }

  let credentials: CredentialsConfig;
  const hasStatic = v.username !== undefined || v.password !== undefined;
  const sources = [
    hasStatic,
    v["credentials-url"] !== undefined,
    v.token !== undefined,
    v.key !== undefined,
  ].filter(Boolean).length;
  if (sources > 1) {
    throw new ConfigError(
      `give exactly one credential source: ${ENV_PREFIX}KEY, ${ENV_PREFIX}TOKEN, --username/--password, or --credentials-url`,
    );
  }
  if (v.key !== undefined) {
    credentials = { kind: "key", username: v.key.username, password: v.key.password };
    if (keyFromFlag)
      warnings.push(
        `--key on the command line is visible to other users of this host; prefer ${ENV_PREFIX}KEY`,
      );
  } else if (hasStatic) {
    if (v.username === undefined || v.password === undefined) {
      throw new ConfigError("--username and --password go together");
    }
    credentials = { kind: "static", username: v.username, password: v.password };
  } else if (v["credentials-url"] !== undefined) {
    credentials = { kind: "url", url: v["credentials-url"] };
  } else if (v.token !== undefined) {
    credentials = { kind: "token", token: v.token, name: v.name, ttl: v["credential-ttl"] };
    if (tokenFromFlag)
      warnings.push(
        `--token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}TOKEN`,
      );
  } else {
    throw new ConfigError(
      `no credentials: export ${ENV_PREFIX}KEY (from the platform) or ${ENV_PREFIX}TOKEN, or pass --username/--password or --credentials-url`,
    );
  }

  const allow = expandAllowList(v["allow-peer"], v["max-permissions"]);
  if ("error" in allow) throw new ConfigError(`--allow-peer: ${allow.error}`);
  if (v.expose.length > 0 && allow.ips.length === 0) {
    warnings.push("no --allow-peer: no peer can reach the exposed services until one is allowed");
  }
  const names = new Set<string>();
  const services: ServiceSpec[] = v.expose.map((e) => {
    if (names.has(e.name))
      throw new ConfigError(`--expose names must be unique, got "${e.name}" twice`);
    names.add(e.name);
    const refusal = targetRefusal(e.target.host, v["allow-metadata-targets"]);
    if (refusal !== undefined) throw new ConfigError(`--expose ${e.name}: ${refusal}`);
    return { ...e, allowPeers: allow, windows: v.window };
  });
  if (v["allow-metadata-targets"]) {
    warnings.push(
      "--allow-metadata-targets is set: services may expose link-local and cloud metadata addresses (instance credentials)",
    );
  }
  if (v.resolve.size > 0)
    warnings.push("--resolve is set: relay names are answered from a fixed table (tests only)");
  if (v["insecure-skip-verify"]) {
    warnings.push(
      "--insecure-skip-verify is set: turns: relay certificates are NOT verified (tests only; anyone on the path can impersonate the relay)",
    );
  }
  if (v["test-clock"] !== undefined) {
    warnings.push(
      `--test-clock is set: access windows follow the instant in ${v["test-clock"]} (tests only)`,
    );
  }
  if (v["udp-flow-idle"] !== 120) {
    warnings.push(
      `--udp-flow-idle is set: idle UDP peer flows are closed after ${v["udp-flow-idle"]} s (tests only)`,
    );
  }

  if (
    v["admin-listen"] !== null &&
    v["admin-token"] === undefined &&
    !isLoopback(v["admin-listen"].host)
  ) {
    warnings.push(
      "the admin API listens beyond loopback without --admin-token: anyone who reaches it can expose services",
    );
  }
  warnings.push(...OPTION_SET.unknownEnvWarnings(env));

  return {
    command: "run",
    relays: v.relay,
    credentials,
    services,
    dnsInterval: v["dns-interval"],
    keepalive: v.keepalive,
    backoffBase: v["backoff-base"],
    backoffMax: v["backoff-max"],
    lifetime: v.lifetime,
    maxPermissions: v["max-permissions"],
    adminListen: v["admin-listen"],
    adminToken: v["admin-token"],
    logFormat: v["log-format"],
    logLevel: v["log-level"],
    software: v.software,
    resolve: v.resolve,
    tls: {
      ...(v.ca !== undefined ? { ca: v.ca } : {}),
      ...(v["tls-servername"] !== undefined ? { servername: v["tls-servername"] } : {}),
      rejectUnauthorized: !v["insecure-skip-verify"],
    },
    testClock: v["test-clock"],
    udpFlowIdle: v["udp-flow-idle"],
    allowMetadataTargets: v["allow-metadata-targets"],
    warnings,
  };
}

function isLoopback(host: string): boolean {
  return host.startsWith("127.") || host === "::1";
}

function parseList(argv: readonly string[], env: NodeJS.ProcessEnv): ListCommand | InfoCommand {
  const parser = buildParser(argv, "list");
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  let admin = args.admin === undefined ? undefined : one(args.admin as Scalar, "--admin");
  if (admin === undefined) {
    const listen = env[envName("admin-listen")]?.trim();
    const at =
      listen && listen !== "off" ? parseListen(listen, envName("admin-listen")) : undefined;
    const host = at === undefined ? "127.0.0.1" : at.host.includes(":") ? `[${at.host}]` : at.host;
    admin = `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${at?.port ?? 7070}`;
  }
  try {
    new URL(admin);
  } catch {
    fail("--admin", "a URL like http://127.0.0.1:7070", admin);
  }
  const token =
    args.adminToken !== undefined
      ? one(args.adminToken as Scalar, "--admin-token")
      : env[envName("admin-token")]?.trim() || undefined;
  return { command: "list", admin, adminToken: token, json: args.json === true };
}

// ---------------------------------------------------------------------------------------------
// Docs

/** The README configuration table (Markdown). */
export function renderConfigTable(): string {
  return OPTION_SET.renderTable();
}
