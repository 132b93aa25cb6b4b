// The shapes of a parsed turnpike-tunnel command line: what `run` needs (TunnelConfig), what the
// `list` subcommand needs, and --help / --version. The option table (options.ts) produces the
// raw values, resolve.ts turns them into a TunnelConfig.

import type { LogFormat, LogLevel } from "@turnpike/runtime-kit";
import type { PeerAllowList } from "../peers.js";
import type { TurnUri } from "../uri.js";
import type { AccessWindow } from "../windows.js";

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** A unix socket path (the admin API's default: owner-only, admin-socket.ts). */
export interface UnixSocketPath {
  readonly path: string;
}

/** Where the admin API listens: a unix socket, or TCP (which needs --admin-token). */
export type AdminListen = UnixSocketPath | HostPort;

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
  readonly adminListen: AdminListen | null;
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
  /** --tcp-splice: TCP pipes joined in the kernel where possible (tunnel/spliced-pipe.ts). */
  readonly tcpSplice: "auto" | "off";
  readonly warnings: readonly string[];
}

export interface ListCommand {
  readonly command: "list";
  /** http(s)://HOST:PORT, or unix:PATH. */
  readonly admin: string;
  readonly adminToken: string | undefined;
  readonly json: boolean;
}

export interface InfoCommand {
  readonly command: "help" | "version";
  readonly text: string;
}

export type ParsedCommand = TunnelConfig | ListCommand | InfoCommand;
