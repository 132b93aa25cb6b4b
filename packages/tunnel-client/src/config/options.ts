// turnpike-tunnel's ONE option table (OPTIONS), from which the yargs options, the TURNPIKE_*
// environment names, `--help` and the README table are generated (ARCHITECTURE.md, "Layers").
// The engine is @turnpike/runtime-kit's OptionSet, shared with turnpike-relay; the tunnel's own
// value shapes are parsed in values.ts, the cross-field rules are resolve.ts.
//
// A data table: it may run past the ~500-line guideline, one entry per option.

import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import {
  ConfigError,
  decodeTunnelKey,
  fail,
  listNonEmpty as list,
  logOptions,
  nonEmpty,
  OptionSet,
  type OptionSpec,
  one,
  parseBoolean,
  parseInteger,
  type TunnelCredentials,
} from "@turnpike/runtime-kit";
import { parseTurnUri, type TurnUri } from "../uri.js";
import { type AccessWindow, parseWindow } from "../windows.js";
import type { AdminListen, HostPort } from "./types.js";
import { httpUrl, parseAdminListen, parseExpose, parseResolve, parseSeconds } from "./values.js";

export const PROGRAM_NAME = "turnpike-tunnel";
export const ENV_PREFIX = "TURNPIKE_";
export const TUNNEL_VERSION = "0.1.0";

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
      if (httpUrl(t) === undefined) fail(where, "an http:// or https:// URL", t);
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
  "admin-listen": spec<AdminListen | null | undefined>({
    group: "Admin API",
    describe:
      'where the admin HTTP API (/health, /list, /expose) listens: unix:PATH (a socket only this user can use, mode 0600), IP:PORT (TCP: needs --admin-token), or "off"',
    placeholder: "unix:PATH|ADDR:PORT",
    defaultText:
      "unix:$XDG_RUNTIME_DIR/turnpike-tunnel/admin.sock (root: unix:/run/turnpike-tunnel/admin.sock)",
    default: undefined,
    parse: (raw, where) => parseAdminListen(one(raw, where), where),
  }),
  "admin-token": spec<string | undefined>({
    group: "Admin API",
    describe:
      "bearer token the admin API requires (Authorization: Bearer TOKEN); required for a TCP --admin-listen; prefer the env var",
    placeholder: "TOKEN",
    defaultText: "none (the unix socket's owner only)",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  ...logOptions("Operations"),
  "tcp-splice": spec<"auto" | "off">({
    group: "Operations",
    describe:
      "TCP services' pipes (relay data connection <-> target): auto (over a plain-TCP relay the kernel moves the bytes with splice(2), no copy into the tunnel, where the native module loads; each such pipe holds 6 more descriptors, and beyond a quarter of the open-file limit a pipe runs in JavaScript), off (every pipe in JavaScript, as turns: ones always are)",
    placeholder: "auto|off",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      if (text !== "auto" && text !== "off") {
        throw new ConfigError(`${where} must be one of auto, off, got ${JSON.stringify(text)}`);
      }
      return text;
    },
  }),
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

export const OPTION_SET = new OptionSet(OPTIONS, ENV_PREFIX);

export function envName(option: string): string {
  return OPTION_SET.envName(option);
}

/** The README configuration table (Markdown). */
export function renderConfigTable(): string {
  return OPTION_SET.renderTable();
}
