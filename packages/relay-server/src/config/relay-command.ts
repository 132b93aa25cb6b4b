// `turnpike-relay` without a subcommand: the option values resolved into one RelayConfig.
// Each value was validated by the table (options.ts); what is left are the rules across
// options, taken in steps:
//
//   1. checkPorts       the relay port range and the pinned range (disjoint)
//   2. checkListeners   TLS needs its files (read and checked as a pair), one --relay-ip per
//                       family, no repeated --listen
//   3. relayAddresses   the address relay sockets bind on per family, and the host's own
//                       addresses the peer policy refuses as peers
//   4. resolveTokens    the shared secrets (secrets.ts; generated when unset), with warnings
//   5. resolveWorkers   how many engines, given what node:dgram can share
//   6. switchWarnings   one warning per option that weakens a default
//   7. budgetFds        client and health connections within the open-file limit (fd-budget.ts)
//
// Every file the options name is read here (token file, revocation list, TLS pair), so a
// RelayConfig is complete, and re-parsing is what a reload (SIGHUP, config/reload.ts) does.
// Every error is a ConfigError whose message is one line naming the option.

import { isIPv4, isIPv6 } from "node:net";
import { availableParallelism, networkInterfaces as osNetworkInterfaces } from "node:os";
import {
  type ArgvRecord,
  addTableOptions,
  ConfigError,
  cliCommand,
  helpText,
  type OptionValues,
  openFilesLimit,
} from "@turnpike/runtime-kit";
import { RELAY_VERSION } from "../version.js";
import { ALLOCATIONS_USAGE } from "./allocations-command.js";
import { CREDENTIALS_USAGE } from "./credentials-command.js";
import { budgetFds, splicePipeBudget } from "./fd-budget.js";
import { firstHostAddress, type Interfaces, ownAddresses } from "./host-addresses.js";
import { ENV_PREFIX, OPTION_SET, type OPTIONS, PROGRAM_NAME } from "./options.js";
import { resolveSecrets } from "./secrets.js";
import { commandParser, readSources, refusePositionals } from "./sources.js";
import { readTlsPair } from "./tls-pair.js";
import type { InfoCommand, ParseOptions, RelayConfig, TlsPair, UdpIoMode } from "./types.js";
import { formatSocketAddress, isUnspecified, readRevokeFile } from "./values.js";

type Values = OptionValues<typeof OPTIONS>;

export function parseRelay(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  options: ParseOptions,
): RelayConfig | InfoCommand {
  const parser = relayParser(argv);
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  if (args.version === true) return { command: "version", text: RELAY_VERSION };
  refusePositionals(args, (first) => `unknown command ${first}`);
  const { values: v, flags, configFile } = readSources(args, env);
  const warnings: string[] = [];

  checkPorts(v);
  const tls = checkListeners(v);
  const addresses = relayAddresses(v, options.networkInterfaces ?? osNetworkInterfaces, warnings);
  const secrets = resolveTokens(v, flags.values, options, warnings);
  const revokeFile = v["revoke-file"];
  const revoked =
    revokeFile === undefined ? { entries: [], warnings: [] } : readRevokeFile(revokeFile);
  warnings.push(...switchWarnings(v), ...OPTION_SET.unknownEnvWarnings(env));
  const fileLimit = (options.openFilesLimit ?? openFilesLimit)();
  const fds = budgetFds(
    { maxConnections: v["max-connections"], healthMaxConnections: v["health-max-connections"] },
    fileLimit,
    warnings,
  );

  return {
    command: "relay",
    listen: v.listen,
    tlsListen: v["tls-listen"],
    tlsCert: v["tls-cert"],
    tlsKey: v["tls-key"],
    tls,
    ...addresses,
    publicIp4: v["public-ip4"],
    publicIp6: v["public-ip6"],
    minPort: v["min-port"],
    maxPort: v["max-port"],
    pinnedPorts: v["pinned-ports"],
    realm: v.realm,
    ...secrets,
    legacyPinnedUntil: v["legacy-pinned-credentials-until"],
    users: v.user,
    revoke: v.revoke,
    revokeFile,
    revokeFileEntries: revoked.entries,
    revokeFileWarnings: revoked.warnings,
    adminToken: v["admin-token"],
    allowPeers: v["allow-peer"],
    proxyProtocol: v["proxy-protocol"],
    denyPeers: v["deny-peer"],
    allowLoopbackPeers: v["allow-loopback-peers"],
    allowSelfPeer: v["allow-self-peer"],
    legacyChannelNumbers: v["legacy-channel-numbers"],
    maxAllocations: v["max-allocations"],
    maxAllocationsPerUser: v["max-allocations-per-user"],
    maxPermissions: v["max-permissions"],
    maxChannels: v["max-channels"],
    maxConnections: fds.maxConnections,
    maxConnectionsPerIp: v["max-connections-per-ip"],
    maxUnauthenticatedRate: v["max-unauthenticated-rate"],
    maxBytesPerSecond: v["max-bps"],
    maxBytesPerSecondPerUser: v["max-bps-per-user"],
    tcpIdleTimeout: v["tcp-idle-timeout"],
    maxTlsHandshakes: v["max-tls-handshakes"],
    maxTlsHandshakesPerIp: v["max-tls-handshakes-per-ip"],
    tlsHandshakeTimeout: v["tls-handshake-timeout"],
    udpIo: v["udp-io"],
    tcpSplice: v["tcp-splice"],
    tcpSplicePipes: splicePipeBudget(fileLimit),
    kernelPath: v["kernel-path"],
    ...resolveWorkers(v.workers, v["udp-io"]),
    testCrashWorker: v["test-crash-worker"],
    testLifetimes: v["test-lifetimes"],
    alternateServer: v["alternate-server"],
    drainTimeout: v["drain-timeout"],
    healthListen: v["health-listen"],
    healthMaxConnections: fds.healthMaxConnections,
    prometheusListen: v["prometheus-listen"],
    logFormat: v["log-format"],
    logLevel: v["log-level"],
    software: v.software,
    rngSeed: v["rng-seed"],
    configFile,
    optionValues: v,
    warnings,
  };
}

/** 1. The relay port range, and the pinned range outside it. */
function checkPorts(v: Values): void {
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
}

/**
 * 2. Listeners: TLS has its files (the pair they hold, when a TLS listener needs it),
 * --relay-ip once per family, no --listen twice.
 */
function checkListeners(v: Values): TlsPair | undefined {
  const tlsCert = v["tls-cert"];
  const tlsKey = v["tls-key"];
  if (v["tls-listen"].length > 0 && (tlsCert === undefined || tlsKey === undefined)) {
    throw new ConfigError("--tls-listen needs --tls-cert and --tls-key");
  }
  const relay4 = v["relay-ip"].filter((ip) => isIPv4(ip));
  const relay6 = v["relay-ip"].filter((ip) => isIPv6(ip));
  if (relay4.length > 1 || relay6.length > 1) {
    throw new ConfigError(
      `--relay-ip must be given at most once per family, got ${JSON.stringify(v["relay-ip"].join(","))}`,
    );
  }
  const seen = new Set<string>();
  for (const a of v.listen) {
    const key = formatSocketAddress(a);
    if (seen.has(key) && a.port !== 0) {
      throw new ConfigError(`--listen must not repeat an address, got "${key}" twice`);
    }
    seen.add(key);
  }
  return v["tls-listen"].length > 0 ? readTlsPair(tlsCert!, tlsKey!) : undefined;
}

/**
 * 3. Where relay sockets bind, per family: --relay-ip, else the first specific listener of
 * that family, else the host's first non-internal address (a warning when there is none);
 * undefined when no listener serves the family. And the relay's own addresses (peer policy).
 */
function relayAddresses(
  v: Values,
  interfaces: () => Interfaces,
  warnings: string[],
): Pick<RelayConfig, "relayIp4" | "relayIp6" | "selfAddresses"> {
  const allListeners = [...v.listen, ...v["tls-listen"]];
  const relayIpFor = (family: 4 | 6): string | undefined => {
    const explicit = v["relay-ip"].find((ip) => (family === 4 ? isIPv4(ip) : isIPv6(ip)));
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
  const relayIp4 = relayIpFor(4);
  const relayIp6 = relayIpFor(6);
  const selfAddresses = ownAddresses(
    [relayIp4, relayIp6, v["public-ip4"], v["public-ip6"], ...allListeners.map((a) => a.ip)],
    interfaces(),
  );
  return { relayIp4, relayIp6, selfAddresses };
}

/**
 * 4. The shared secrets (secrets.ts). Secrets given as flags are visible in `ps`: a warning
 * each.
 */
function resolveTokens(
  v: Values,
  flags: { readonly token?: unknown; readonly "admin-token"?: unknown },
  options: ParseOptions,
  warnings: string[],
): Pick<RelayConfig, "tokens" | "tokenFile" | "tokenGenerated"> {
  const secrets = resolveSecrets(
    { tokens: v.token, tokenFile: v["token-file"] },
    options.randomToken,
    warnings,
    cliCommand(PROGRAM_NAME, options.script ?? process.argv[1]),
  );
  if (flags.token !== undefined) {
    warnings.push(
      `--token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}TOKEN or --token-file`,
    );
  }
  if (flags["admin-token"] !== undefined) {
    warnings.push(
      `--admin-token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}ADMIN_TOKEN`,
    );
  }
  if (v["admin-token"] !== undefined && v["health-listen"] === null) {
    warnings.push(
      "--admin-token is set but --health-listen is off: the discovery API is not served",
    );
  }
  return secrets;
}

/**
 * 5. --workers: `auto` is autoWorkers(the cores this process may use). Workers share their
 * listening ports with SO_REUSEPORT; node:dgram offers it from Node 22.12 on (the batched path
 * always can).
 */
function resolveWorkers(
  asked: number | "auto",
  udpIo: UdpIoMode,
): { workers: number; workersNote: string | undefined } {
  const workers = asked === "auto" ? autoWorkers(availableParallelism()) : asked;
  if (workers > 1 && udpIo === "dgram" && !dgramReusePort()) {
    return {
      workers: 1,
      workersNote: `--workers ${asked}: one worker, because node:dgram offers SO_REUSEPORT only from Node 22.12 (this is ${process.version})`,
    };
  }
  return { workers, workersNote: undefined };
}

/**
 * What `--workers auto` means on a host with `cores` cores: one engine on the main thread up to
 * two cores, else one engine per core beyond the first. A packet a relay forwards costs the
 * kernel (softirq, the socket layer) about as much CPU as the engine, and an engine beyond one
 * adds a worker thread with an isolate of its own and the supervisor's work; on two cores a
 * second engine only takes CPU from the kernel's half of the work. Measured on a 2-core EPYC
 * (bench/README.md, "Footprint"): server CPU per relayed packet 0.67x coturn's with --workers 1
 * against 1.13x with 2 (coturn's own load client: 0.80-0.91x against 1.16-1.26x); setups/s and
 * churn cycles/s no better with 2 either; idle RSS 74 MB against 122 MB (then each of the two
 * engines had a worker thread of its own). Hosts with more cores than two were not measured
 * here: there one core's worth is left to the kernel and the supervisor.
 */
export function autoWorkers(cores: number): number {
  return cores <= 2 ? 1 : cores - 1;
}

function dgramReusePort(): boolean {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  return major > 22 || (major === 22 && minor >= 12);
}

/** 6. Options that weaken a default say so once, at start. */
function switchWarnings(v: Values): string[] {
  const warnings: string[] = [];
  if (v["allow-loopback-peers"]) {
    warnings.push(
      "--allow-loopback-peers is set: peers on 127.0.0.0/8 and ::1 are reachable (tests, or everything on one machine)",
    );
  }
  if (v["test-crash-worker"]) {
    warnings.push("--test-crash-worker is set: SIGUSR2 crashes worker 1 (tests only)");
  }
  if (v["allow-self-peer"]) {
    warnings.push(
      "--allow-self-peer is set: clients may relay to the relay host itself (its listening ports and other services)",
    );
  }
  // A trusted balancer's header is believed: a block that holds clients lets them claim any
  // address (auth's nonce, quotas, per-source caps and logs all follow it).
  const everyone = v["proxy-protocol"].filter((c) => c.endsWith("/0"));
  if (everyone.length > 0) {
    warnings.push(
      `--proxy-protocol ${everyone.join(", ")} trusts every source: any client may claim any address in a PROXY header; name the load balancers' addresses only`,
    );
  }
  if (v["rng-seed"] !== undefined) {
    warnings.push("--rng-seed is set: nonces and ports are predictable (reproducing bugs only)");
  }
  const legacyUntil = v["legacy-pinned-credentials-until"];
  if (legacyUntil !== undefined) {
    const until = new Date(legacyUntil * 1000).toISOString();
    warnings.push(
      legacyUntil * 1000 > Date.now()
        ? `--legacy-pinned-credentials-until ${until}: pinned credentials signed with the token itself (the old scheme) are accepted until then; re-mint them with \`${PROGRAM_NAME} credentials --port\``
        : `--legacy-pinned-credentials-until ${until} has passed: pinned credentials of the old scheme are refused; drop the option`,
    );
  }
  return warnings;
}

function relayParser(argv: readonly string[]) {
  const parser = commandParser(argv).usage(
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
