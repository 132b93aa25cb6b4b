// The option table: ONE description of every turnpike-relay option, from which the yargs
// options, the TURNPIKE_* environment names, the `--help` text and the README configuration
// table are all generated, so names, defaults and docs cannot drift apart (ARCHITECTURE.md,
// "Layers"). The engine (sources, precedence, help, README table) is @turnpike/runtime-kit's
// OptionSet, shared with turnpike-tunnel; each entry's `parse` turns one raw value into the
// relay's shape (values.ts) or throws a one-line ConfigError naming where it came from.
//
// Precedence: command-line flag > environment TURNPIKE_<OPTION> > `--config FILE` (JSON) >
// default. A data table: long, and meant to be read as one.

import {
  ConfigError,
  list,
  logOptions,
  nonEmpty,
  type OptionReload,
  OptionSet,
  type OptionSpec,
  one,
  parseBoolean,
  parseInteger,
  type RawValue,
} from "@turnpike/runtime-kit";
import { RELAY_VERSION } from "../version.js";
import {
  KERNEL_PATH_MODES,
  type KernelPathMode,
  type PortRange,
  type SocketAddress,
  type StaticUser,
  TCP_SPLICE_MODES,
  type TcpSpliceMode,
  type TestLifetimes,
  UDP_IO_MODES,
  type UdpIoMode,
} from "./types.js";
import {
  parseCidr,
  parseInstant,
  parseIp,
  parsePortRange,
  parseRevocationEntries,
  parseSecretList,
  parseSocketAddress,
  parseTestLifetimes,
  parseUser,
  readablePath,
} from "./values.js";

export const PROGRAM_NAME = "turnpike-relay";
export const ENV_PREFIX = "TURNPIKE_";

/**
 * The lowest relay port (--min-port, --max-port, --pinned-ports): ports below are the host's
 * well-known services' (binding them needs privileges), and a relayed address there would hand
 * peers, firewalls and logs a port that means something else.
 */
export const MIN_RELAY_PORT = 1024;

type Group =
  | "Listeners"
  | "Relay"
  | "Authentication"
  | "Peer policy"
  | "Limits"
  | "Operations"
  | "Testing";

/**
 * Every relay option says what SIGHUP does with it (the reference page's reload column): "live"
 * for the secrets, the revocation list, the TLS pair, the log level and the process-wide limits,
 * applied to the running relay (config/reload.ts applies exactly these: a test holds them
 * together); "restart" for the rest (listeners, addresses, ports, workers, per-allocation
 * limits, ...).
 */
function spec<T>(s: OptionSpec<T, Group> & { reload: OptionReload }): OptionSpec<T, Group> {
  return s;
}

/** --log-format (restart) and --log-level (live). */
const LOG = logOptions<Group>("Operations");

export const OPTIONS = {
  listen: spec<SocketAddress[]>({
    group: "Listeners",
    reload: "restart",
    describe: "UDP + TCP listener (repeatable); IPv6 as [::1]:3478",
    placeholder: "ADDR:PORT",
    repeatable: true,
    defaultText: "0.0.0.0:3478",
    default: [{ ip: "0.0.0.0", port: 3478, family: 4 }],
    parse: (raw, where) => list(raw).map((v) => parseSocketAddress(v, where, 0)),
  }),
  "tls-listen": spec<SocketAddress[]>({
    group: "Listeners",
    reload: "restart",
    describe: "TURNS (TLS) listener (repeatable); needs --tls-cert and --tls-key",
    placeholder: "ADDR:PORT",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseSocketAddress(v, where, 0)),
  }),
  "proxy-protocol": spec<string[]>({
    group: "Listeners",
    reload: "restart",
    describe:
      "trusted load balancer CIDR (repeatable): TCP and TLS connections from it must start with a PROXY protocol v1 or v2 header within 3 s (else closed: turn.dropped.packets reason proxy-header), whose client address auth, quotas, --max-connections-per-ip, logs and XOR-MAPPED-ADDRESS then use; other sources are never parsed for one",
    placeholder: "CIDR",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseCidr(v, where)),
  }),
  "tls-cert": spec<string | undefined>({
    group: "Listeners",
    reload: "live",
    describe:
      "TLS certificate chain (PEM file), re-read on SIGHUP (new handshakes use the new pair)",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "tls-key": spec<string | undefined>({
    group: "Listeners",
    reload: "live",
    describe: "TLS private key (PEM file), re-read on SIGHUP with --tls-cert",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "relay-ip": spec<string[]>({
    group: "Relay",
    reload: "restart",
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
    reload: "restart",
    describe: "IPv4 address XOR-RELAYED-ADDRESS carries (behind 1:1 NAT)",
    placeholder: "IP",
    defaultText: "the relay IPv4",
    default: undefined,
    parse: (raw, where) => parseIp(one(raw, where), where, { family: 4, allowUnspecified: false }),
  }),
  "public-ip6": spec<string | undefined>({
    group: "Relay",
    reload: "restart",
    describe: "IPv6 address XOR-RELAYED-ADDRESS carries (behind 1:1 NAT)",
    placeholder: "IP",
    defaultText: "the relay IPv6",
    default: undefined,
    parse: (raw, where) => parseIp(one(raw, where), where, { family: 6, allowUnspecified: false }),
  }),
  "min-port": spec<number>({
    group: "Relay",
    reload: "restart",
    describe: "lowest relay port (1024 or above: relayed addresses are never privileged ports)",
    placeholder: "N",
    defaultText: "49152",
    default: 49152,
    parse: (raw, where) => parseInteger(raw, where, MIN_RELAY_PORT, 65535),
  }),
  "max-port": spec<number>({
    group: "Relay",
    reload: "restart",
    describe: "highest relay port",
    placeholder: "N",
    defaultText: "65535",
    default: 65535,
    parse: (raw, where) => parseInteger(raw, where, MIN_RELAY_PORT, 65535),
  }),
  "pinned-ports": spec<PortRange | undefined>({
    group: "Relay",
    reload: "restart",
    describe:
      "relay ports reserved for credentials that pin one (`credentials --port`); outside --min-port..--max-port",
    placeholder: "MIN-MAX",
    defaultText: "none (pinned credentials are refused)",
    default: undefined,
    parse: (raw, where) => parsePortRange(one(raw, where), where, MIN_RELAY_PORT),
  }),
  "legacy-channel-numbers": spec<boolean>({
    group: "Relay",
    reload: "restart",
    describe:
      "also accept RFC 5766's ChannelBind numbers 0x5000-0x7FFF (older clients, e.g. coturn's turnutils_uclient); by default only RFC 8656's 0x4000-0x4FFF",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  realm: spec<string>({
    group: "Authentication",
    reload: "restart",
    describe: "long-term credential realm",
    placeholder: "S",
    defaultText: "turnpike",
    default: "turnpike",
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  token: spec<string[] | undefined>({
    group: "Authentication",
    reload: "live",
    describe:
      "shared secret for TURN REST API credentials (coturn use-auth-secret compatible); repeatable, the env var comma-separated: the first mints, every one verifies (rotation); read once at start; prefer the env var, a flag is visible in `ps`",
    placeholder: "SECRET",
    repeatable: true,
    keepEmptyEnvItems: true,
    defaultText: "generated at start (one warning line)",
    default: undefined,
    parse: (raw, where) => parseSecretList(raw, where),
  }),
  "token-file": spec<string | undefined>({
    group: "Authentication",
    reload: "live",
    describe:
      "file of shared secrets instead of --token, one per line (# comment lines): the first mints, every one verifies; re-read on SIGHUP",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "legacy-pinned-credentials-until": spec<number | undefined>({
    group: "Authentication",
    reload: "live",
    describe:
      "until this ISO 8601 date (UTC) or date-time, also accept pinned credentials signed the old way, with the token itself (counted, and a warning while any arrive): re-mint them meanwhile",
    placeholder: "DATE",
    defaultText: "none (refused)",
    default: undefined,
    parse: (raw, where) => parseInstant(raw, where),
  }),
  user: spec<StaticUser[]>({
    group: "Authentication",
    reload: "live",
    describe: "static long-term user (repeatable)",
    placeholder: "NAME:PASSWORD",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseUser(v, where)),
  }),
  revoke: spec<string[]>({
    group: "Authentication",
    reload: "live",
    describe:
      "refuse these credentials (403) and end their allocations (repeatable): static:NAME (a --user), rest:USER (TURN REST credentials of USER, pinned ones included), rest:USER;port=P (only those pinned to P), rest-expiry:E (REST credentials without a user part), or a plain NAME for all of these",
    placeholder: "ENTRY",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => parseRevocationEntries(raw, where),
  }),
  "revoke-file": spec<string | undefined>({
    group: "Authentication",
    reload: "live",
    describe:
      "file of --revoke entries, one per line (# starts a comment at the start of a line or after a blank; an unusable line is skipped with a warning), re-read on SIGHUP; adds to --revoke",
    placeholder: "FILE",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => readablePath(raw, where),
  }),
  "allow-peer": spec<string[]>({
    group: "Peer policy",
    reload: "restart",
    describe: "allow peers in this CIDR even if special-purpose (repeatable)",
    placeholder: "CIDR",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseCidr(v, where)),
  }),
  "deny-peer": spec<string[]>({
    group: "Peer policy",
    reload: "restart",
    describe: "deny peers in this CIDR; wins over --allow-peer (repeatable)",
    placeholder: "CIDR",
    repeatable: true,
    defaultText: "none",
    default: [],
    parse: (raw, where) => list(raw).map((v) => parseCidr(v, where)),
  }),
  "allow-loopback-peers": spec<boolean>({
    group: "Peer policy",
    reload: "restart",
    describe:
      "allow 127.0.0.0/8 and ::1 as peers: tests, and a platform on the relay's own host (everything on one machine); logged as a warning",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "allow-self-peer": spec<boolean>({
    group: "Peer policy",
    reload: "restart",
    describe:
      "allow the relay's own addresses as peers: without it 0.0.0.0/::, the relay's listening ports and its own addresses outside the relay port range are refused whatever --allow-peer says (logged as a warning)",
    boolean: true,
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "max-allocations": spec<number>({
    group: "Limits",
    reload: "live",
    describe: "total allocations",
    placeholder: "N",
    defaultText: "10000",
    default: 10000,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-allocations-per-user": spec<number>({
    group: "Limits",
    reload: "live",
    describe: "allocations per user (486 Allocation Quota Reached beyond)",
    placeholder: "N",
    defaultText: "100",
    default: 100,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-permissions": spec<number>({
    group: "Limits",
    reload: "restart",
    describe: "permissions per allocation",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    parse: (raw, where) => parseInteger(raw, where, 1, 65535),
  }),
  "max-channels": spec<number>({
    group: "Limits",
    reload: "restart",
    describe: "channels per allocation",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    // RFC 8656 §12: channel numbers 0x4000 through 0x4FFF, so at most 4096 per allocation.
    parse: (raw, where) => parseInteger(raw, where, 1, 4096),
  }),
  "max-unauthenticated-rate": spec<number>({
    group: "Limits",
    reload: "live",
    describe:
      "responses per second per source IP to requests without valid credentials (Binding, 401, 438); beyond it they are dropped, so spoofed sources cannot use the relay as an amplifier (0 = unlimited)",
    placeholder: "N",
    defaultText: "200",
    default: 200,
    parse: (raw, where) => parseInteger(raw, where, 0, 10_000_000),
  }),
  "max-connections": spec<number>({
    group: "Limits",
    reload: "live",
    describe: "TCP/TLS client connections",
    placeholder: "N",
    defaultText: "10000",
    default: 10000,
    parse: (raw, where) => parseInteger(raw, where, 1, 10_000_000),
  }),
  "max-connections-per-ip": spec<number>({
    group: "Limits",
    reload: "live",
    describe:
      "TCP/TLS connections from one source (IPv4 address, IPv6 /64) that have not authenticated yet (TLS handshake, or no allocation); beyond it new ones are closed (0 = unlimited)",
    placeholder: "N",
    defaultText: "100",
    default: 100,
    parse: (raw, where) => parseInteger(raw, where, 0, 10_000_000),
  }),
  "tcp-idle-timeout": spec<number>({
    group: "Limits",
    reload: "restart",
    describe:
      "seconds a TCP/TLS connection without an allocation may go without sending a complete message before it is closed (a TLS handshake gets min(this, --tls-handshake-timeout) in all)",
    placeholder: "SECONDS",
    defaultText: "300",
    default: 300,
    parse: (raw, where) => parseInteger(raw, where, 1, 86400),
  }),
  "max-tls-handshakes": spec<number>({
    group: "Limits",
    reload: "restart",
    describe:
      "TLS handshakes under way at once, in the whole process (each worker its share); each holds an OpenSSL session and its buffers, so beyond it a new TLS connection is closed at accept (turn.dropped.packets reason tls-handshake-limit)",
    placeholder: "N",
    defaultText: "512",
    default: 512,
    parse: (raw, where) => parseInteger(raw, where, 1, 1_000_000),
  }),
  "max-tls-handshakes-per-ip": spec<number>({
    group: "Limits",
    reload: "restart",
    describe:
      "TLS handshakes under way at once from one source (IPv4 address, IPv6 /64; per worker where the native module does not steer sources to one worker); beyond it closed at accept (reason tls-handshake-per-ip-limit; 0 = unlimited)",
    placeholder: "N",
    defaultText: "16",
    default: 16,
    parse: (raw, where) => parseInteger(raw, where, 0, 1_000_000),
  }),
  "tls-handshake-timeout": spec<number>({
    group: "Limits",
    reload: "restart",
    describe:
      "seconds from the TCP accept a TLS handshake may take, whatever arrives meanwhile, before the connection is closed",
    placeholder: "SECONDS",
    defaultText: "5",
    default: 5,
    parse: (raw, where) => parseInteger(raw, where, 1, 60),
  }),
  "max-bps": spec<number | undefined>({
    group: "Limits",
    reload: "restart",
    describe:
      "relayed payload per allocation in bytes per second, both directions against one token bucket (burst: one second's worth, at least 64 KiB; coturn's max-bps limits each direction, so its N is about 2N here); beyond it datagrams are dropped (turn.dropped.packets reason bandwidth-limit) and TCP pipes paused, never disconnected (0 = unlimited)",
    placeholder: "BYTES",
    defaultText: "0 (unlimited)",
    default: undefined,
    parse: (raw, where) => bytesPerSecond(raw, where),
  }),
  "max-bps-per-user": spec<number | undefined>({
    group: "Limits",
    reload: "restart",
    describe:
      "the same per user, over all of its allocations in this relay process (0 = unlimited)",
    placeholder: "BYTES",
    defaultText: "0 (unlimited)",
    default: undefined,
    parse: (raw, where) => bytesPerSecond(raw, where),
  }),
  "udp-io": spec<UdpIoMode>({
    group: "Operations",
    reload: "restart",
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
  "tcp-splice": spec<TcpSpliceMode>({
    group: "Operations",
    reload: "restart",
    describe:
      "RFC 6062 TCP relaying (ConnectionBind pipes): auto (between plain TCP sockets the kernel moves the bytes with splice(2), no copy into the relay, where the native module loads and no --max-bps/--max-bps-per-user applies; each such pipe holds 6 more descriptors, and beyond a share of the open-file limit a pipe runs in JavaScript), off (every pipe in JavaScript, as TLS ones always are)",
    placeholder: "auto|off",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      if (!(TCP_SPLICE_MODES as readonly string[]).includes(text)) {
        throw new ConfigError(`${where} must be one of auto, off, got ${JSON.stringify(text)}`);
      }
      return text as TcpSpliceMode;
    },
  }),
  "kernel-path": spec<KernelPathMode>({
    group: "Operations",
    reload: "restart",
    describe:
      "kernel data path for bound ChannelData (a BPF program at TC ingress on the interfaces of the listen and relay addresses; needs CAP_BPF and CAP_NET_ADMIN, Linux 6.6+, net.ipv4/ipv6.conf.lo.forwarding=1): tc (fail at start if it cannot run; sets the lo forwarding sysctls when allowed), auto (tc where it loads, else off; the log says why), xdp (the driver's XDP hook, native mode only: NICs whose driver runs XDP, not the loopback; the first datagrams to a next hop not yet resolved go through userspace), off",
    placeholder: "auto|tc|xdp|off",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      if (!(KERNEL_PATH_MODES as readonly string[]).includes(text)) {
        throw new ConfigError(
          `${where} must be one of auto, tc, xdp, off, got ${JSON.stringify(text)}`,
        );
      }
      return text as KernelPathMode;
    },
  }),
  workers: spec<number | "auto">({
    group: "Operations",
    reload: "restart",
    describe:
      "relay engines, engine 0 on the main thread and one worker thread per further engine, each with its own SO_REUSEPORT sockets and slice of the relay ports; limits hold for the process as a whole (auto = 1 up to two cores, else one per core beyond the first)",
    placeholder: "N|auto",
    defaultText: "auto",
    default: "auto",
    parse: (raw, where) => {
      const text = one(raw, where);
      return text === "auto" ? "auto" : parseInteger(text, where, 1, 256);
    },
  }),
  "test-lifetimes": spec<TestLifetimes>({
    group: "Testing",
    reload: "restart",
    describe:
      "test hook: relay-core lifetimes in seconds (defaultAllocation=S,permission=S,channel=S,...), so suites of the real process see expiry in seconds",
    placeholder: "NAME=SECONDS,...",
    defaultText: "none",
    default: {},
    hidden: true,
    parse: (raw, where) =>
      parseTestLifetimes(
        list(raw).flatMap((v) => v.split(",")),
        where,
      ),
  }),
  "test-crash-worker": spec<boolean>({
    group: "Testing",
    reload: "restart",
    describe:
      "test hook: SIGUSR2 makes worker 1 (a worker thread, restarted) throw an uncaught exception",
    boolean: true,
    defaultText: "false",
    default: false,
    hidden: true,
    parse: (raw, where) => parseBoolean(raw, where),
  }),
  "alternate-server": spec<SocketAddress | undefined>({
    group: "Operations",
    reload: "restart",
    describe: "sent as ALTERNATE-SERVER with 300 Try Alternate while draining",
    placeholder: "ADDR:PORT",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseSocketAddress(one(raw, where), where, 1),
  }),
  "drain-timeout": spec<number>({
    group: "Operations",
    reload: "restart",
    describe: "seconds SIGTERM waits for live allocations before closing",
    placeholder: "SECONDS",
    defaultText: "30",
    default: 30,
    parse: (raw, where) => parseInteger(raw, where, 0, 86400),
  }),
  "health-listen": spec<SocketAddress | null>({
    group: "Operations",
    reload: "restart",
    describe: 'HTTP /healthz and /readyz ("off" disables)',
    placeholder: "ADDR:PORT",
    defaultText: "127.0.0.1:8080",
    default: { ip: "127.0.0.1", port: 8080, family: 4 },
    parse: (raw, where) => {
      const text = one(raw, where);
      return text === "off" ? null : parseSocketAddress(text, where, 0);
    },
  }),
  "health-max-connections": spec<number>({
    group: "Operations",
    reload: "restart",
    describe:
      "connections --health-listen holds at once (probes, scrapes, the discovery API), also at most 1/16 of the process's open-file limit; beyond it new ones are closed at once. A connection gets 5 s for its request, sending nothing included",
    placeholder: "N",
    defaultText: "64",
    default: 64,
    parse: (raw, where) => parseInteger(raw, where, 1, 1024),
  }),
  "admin-token": spec<string | undefined>({
    group: "Operations",
    reload: "restart",
    describe:
      "bearer token of the discovery API GET /v1/allocations on --health-listen (off without it); prefer the env var",
    placeholder: "TOKEN",
    defaultText: "none (discovery API off)",
    default: undefined,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  "prometheus-listen": spec<SocketAddress | undefined>({
    group: "Operations",
    reload: "restart",
    describe: "Prometheus pull endpoint /metrics",
    placeholder: "ADDR:PORT",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseSocketAddress(one(raw, where), where, 0),
  }),
  "log-format": spec({ ...LOG["log-format"], reload: "restart" }),
  "log-level": spec({ ...LOG["log-level"], reload: "live" }),
  software: spec<string>({
    group: "Operations",
    reload: "restart",
    describe: "SOFTWARE attribute in responses",
    placeholder: "S",
    defaultText: "turnpike/<version>",
    default: `turnpike/${RELAY_VERSION}`,
    parse: (raw, where) => nonEmpty(raw, where),
  }),
  "rng-seed": spec<number | undefined>({
    group: "Operations",
    reload: "restart",
    describe: "seed the injected random source (reproducing bugs; never in production)",
    placeholder: "N",
    defaultText: "none",
    default: undefined,
    parse: (raw, where) => parseInteger(raw, where, 0, 0xffffffff),
  }),
} as const;

export type OptionName = keyof typeof OPTIONS;

/** A rate in bytes per second; 0 (coturn's "no limit") is no limit: undefined. */
function bytesPerSecond(raw: RawValue, where: string): number | undefined {
  const n = parseInteger(raw, where, 0, 1_000_000_000_000);
  return n === 0 ? undefined : n;
}

export const OPTION_SET = new OptionSet(OPTIONS, ENV_PREFIX);

/** The TURNPIKE_* variable for an option (`min-port` -> TURNPIKE_MIN_PORT). */
export function envName(option: string): string {
  return OPTION_SET.envName(option);
}

/** The README configuration table (Markdown): option, env var, default, meaning. */
export function renderConfigTable(): string {
  return OPTION_SET.renderTable();
}
