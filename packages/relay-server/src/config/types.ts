// The relay's configuration as the rest of the relay sees it: the resolved RelayConfig, the
// subcommands' results, and the value shapes everyone shares (SocketAddress, PortRange, ...).
// Types only: how they are parsed is options.ts (the table), values.ts (one value) and
// relay-command.ts (the cross-field rules).

import type { networkInterfaces as osNetworkInterfaces } from "node:os";
import type { LogFormat, LogLevel } from "@turnpike/runtime-kit";

/** A concrete IP address and port. `family` follows the address text. */
export interface SocketAddress {
  readonly ip: string;
  readonly port: number;
  readonly family: 4 | 6;
}

export const UDP_IO_MODES = ["auto", "batch", "dgram"] as const;
export type UdpIoMode = (typeof UDP_IO_MODES)[number];

export const TCP_SPLICE_MODES = ["auto", "off"] as const;
export type TcpSpliceMode = (typeof TCP_SPLICE_MODES)[number];

export const KERNEL_PATH_MODES = ["auto", "tc", "xdp", "off"] as const;
export type KernelPathMode = (typeof KERNEL_PATH_MODES)[number];

/** relay-core's lifetime names (its `Lifetimes`) a test may shorten, in seconds. */
export const TEST_LIFETIME_NAMES = [
  "defaultAllocation",
  "maxAllocation",
  "permission",
  "channel",
  "channelCooldown",
  "nonce",
] as const;
export type TestLifetimes = Partial<Record<(typeof TEST_LIFETIME_NAMES)[number], number>>;

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
  /** --proxy-protocol: trusted load balancers as CIDR text (stream/proxy-gate.ts). */
  readonly proxyProtocol: readonly string[];
  /** PEM file paths (checked readable at parse time). */
  readonly tlsCert: string | undefined;
  readonly tlsKey: string | undefined;
  /** Their contents, read and checked as a pair (tls-pair.ts) when tlsListen is not empty. */
  readonly tls: TlsPair | undefined;
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
  /**
   * Shared secrets for TURN REST API credentials (secrets.ts): the first mints, every one
   * verifies. Never log them unless tokenGenerated.
   */
  readonly tokens: readonly string[];
  /** Where they were read from (re-read on SIGHUP), or undefined (--token, TURNPIKE_TOKEN). */
  readonly tokenFile: string | undefined;
  /** True when no token was configured and a random one was generated for this run. */
  readonly tokenGenerated: boolean;
  /**
   * Until this instant (Unix seconds) pinned credentials signed the old way (with the token
   * itself) are accepted (relay-core's legacyPinnedUntil); undefined: never.
   */
  readonly legacyPinnedUntil: number | undefined;
  readonly users: readonly StaticUser[];
  /** --revoke entries ... */
  readonly revoke: readonly string[];
  /** ... and the file's (readRevokeFile); the revocation list is the union (revocationList). */
  readonly revokeFile: string | undefined;
  /** The usable entries of revokeFile when the configuration was read. */
  readonly revokeFileEntries: readonly string[];
  /** One per line of revokeFile that was skipped (logged at start and on every reload). */
  readonly revokeFileWarnings: readonly string[];
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
  /** TCP/TLS client connections (within the open-file limit: fd-budget.ts). */
  readonly maxConnections: number;
  /** Unauthenticated TCP/TLS connections per source (IPv4 address, IPv6 /64); 0 = no limit. */
  readonly maxConnectionsPerIp: number;
  /** Unauthenticated responses per second per source IP; 0 = unlimited. */
  readonly maxUnauthenticatedRate: number;
  /** Relayed payload per allocation, bytes per second both ways (--max-bps); undefined = none. */
  readonly maxBytesPerSecond: number | undefined;
  /**
   * The same per user (principal), over all its allocations on every worker
   * (--max-bps-per-user): the engine and the worker pool's shared buckets read it.
   */
  readonly maxBytesPerSecondPerUser: number | undefined;
  /** Seconds. */
  readonly tcpIdleTimeout: number;
  /** TLS handshakes under way at once in the process (stream/tls-handshakes.ts). */
  readonly maxTlsHandshakes: number;
  /** The same per source (IPv4 address, IPv6 /64); 0 = no limit. */
  readonly maxTlsHandshakesPerIp: number;
  /** Seconds from the TCP accept a TLS handshake may take. */
  readonly tlsHandshakeTimeout: number;
  /** UDP data path: batched native I/O, node:dgram, or batched when it can be loaded. */
  readonly udpIo: UdpIoMode;
  /**
   * RFC 6062 pipes between plain TCP sockets: spliced in the kernel (udp-batch's SplicePipe)
   * where it can be (`auto`), or always in JavaScript (`off`); stream/spliced-pipe.ts.
   */
  readonly tcpSplice: TcpSpliceMode;
  /**
   * Spliced pipes the process may hold at once, for the descriptors they take (fd-budget.ts's
   * splicePipeBudget; shared out among workers); beyond it a pipe runs in JavaScript.
   */
  readonly tcpSplicePipes: number;
  /**
   * The kernel data path (packages/kernel-path): bound ChannelData relayed by a BPF program at
   * TC ingress; `auto` runs it where it loads, else off with the reason logged.
   */
  readonly kernelPath: KernelPathMode;
  /** Relay engines: engine 0 on the main thread, the others in worker threads (1: no workers). */
  readonly workers: number;
  /** Why --workers was lowered to 1, if it was (logged once at start). */
  readonly workersNote: string | undefined;
  /** Test hook: SIGUSR2 crashes worker 1, a worker thread (hidden). */
  readonly testCrashWorker: boolean;
  /** Test hook: relay-core lifetimes overridden, in seconds (hidden). */
  readonly testLifetimes: TestLifetimes;
  readonly alternateServer: SocketAddress | undefined;
  /** Seconds. */
  readonly drainTimeout: number;
  /** null when `--health-listen off`. */
  readonly healthListen: SocketAddress | null;
  /** Connections the health listener holds at once (within the open-file limit: fd-budget.ts). */
  readonly healthMaxConnections: number;
  readonly prometheusListen: SocketAddress | undefined;
  readonly logFormat: LogFormat;
  readonly logLevel: LogLevel;
  readonly software: string;
  readonly rngSeed: number | undefined;
  /** The config file that was read, if any. */
  readonly configFile: string | undefined;
  /**
   * Every option's value as resolved from its sources, by option name: what a reload compares
   * to tell which options changed (config/reload.ts).
   */
  readonly optionValues: Readonly<Record<string, unknown>>;
  /** Warnings the CLI logs once at start (generated token, loopback peers, ...). */
  readonly warnings: readonly string[];
}

/** `turnpike-relay credentials ...`: mint TURN REST API credentials from the token. */
export interface CredentialsCommand {
  readonly command: "credentials";
  /** The secret that mints: the first of the relay's. */
  readonly token: string;
  /** `--pinned-secret`: print pinnedCredentialSecret(token) instead of credentials. */
  readonly pinnedSecret: boolean;
  readonly user: string | undefined;
  /** The relay port the credentials pin (with a user), or undefined for a dynamic port. */
  readonly port: number | undefined;
  /** Seconds. */
  readonly ttl: number;
  readonly uris: readonly string[];
  /** What the user should know about the answer (a listener without a URI), for stderr. */
  readonly notes: readonly string[];
}

/**
 * `turnpike-relay allocations ...`: GET /v1/allocations of a running relay, as a table, or
 * DELETE to end allocations.
 */
export interface AllocationsCommand {
  readonly command: "allocations";
  /** Base URL of the relay's health listener, e.g. http://127.0.0.1:8080. */
  readonly url: string;
  readonly adminToken: string;
  readonly user: string | undefined;
  /** DELETE instead of GET: a user's allocations (revocation-list names) or one by row id. */
  readonly end: { readonly user: string } | { readonly id: string } | undefined;
  readonly json: boolean;
}

/** A TLS certificate chain and its private key, PEM text. */
export interface TlsPair {
  readonly cert: string;
  readonly key: string;
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
  /** Draws the secret when none is configured (a reload passes the one drawn at start). */
  randomToken?: () => string;
  /**
   * The script this process was started as (default process.argv[1]): the next command a warning
   * prints starts the CLI the same way (runtime-kit's cliCommand).
   */
  script?: string;
  /** The process's open-file limit (default: runtime-kit's openFilesLimit, /proc/self/limits). */
  openFilesLimit?: () => number | undefined;
}
