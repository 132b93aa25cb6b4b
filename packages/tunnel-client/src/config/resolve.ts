// Resolution: the option values of every source, already merged by precedence (flag >
// environment TURNPIKE_<OPTION> > `--config FILE` > default) and each validated on its own,
// become one TunnelConfig here: the rules that span options (exactly one credential source,
// unique service names, targets the tunnel may expose) and the warnings an operator must see.

import { ConfigError, type OptionValues } from "@turnpike/runtime-kit";
import { defaultAdminSocket } from "../admin-socket.js";
import { expandAllowList } from "../peers.js";
import { targetRefusal } from "../targets.js";
import { ENV_PREFIX, OPTION_SET, type OPTIONS } from "./options.js";
import type { AdminListen, CredentialsConfig, ServiceSpec, TunnelConfig } from "./types.js";

/** Which secrets came as flags (visible in `ps`): they get a warning. */
export interface FlagSources {
  readonly token: boolean;
  readonly key: boolean;
  readonly adminToken: boolean;
}

export function resolveRunConfig(
  v: OptionValues<typeof OPTIONS>,
  fromFlag: FlagSources,
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

  const credentials = credentialsFrom(v, fromFlag, warnings);

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

  const adminListen = adminListenFrom(v, fromFlag, env, warnings);
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
    adminListen,
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
    tcpSplice: v["tcp-splice"],
    warnings,
  };
}

/** The one credential source the options name (more than one, or none, is an error). */
function credentialsFrom(
  v: OptionValues<typeof OPTIONS>,
  fromFlag: FlagSources,
  warnings: string[],
): CredentialsConfig {
  let cred: CredentialsConfig;
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
    cred = { kind: "key", username: v.key.username, password: v.key.password };
    if (fromFlag.key)
      warnings.push(
        `--key on the command line is visible to other users of this host; prefer ${ENV_PREFIX}KEY`,
      );
  } else if (hasStatic) {
    if (v.username === undefined || v.password === undefined) {
      throw new ConfigError("--username and --password go together");
    }
    cred = { kind: "static", username: v.username, password: v.password };
  } else if (v["credentials-url"] !== undefined) {
    cred = { kind: "url", url: v["credentials-url"] };
  } else if (v.token !== undefined) {
    cred = { kind: "token", token: v.token, name: v.name, ttl: v["credential-ttl"] };
    if (fromFlag.token)
      warnings.push(
        `--token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}TOKEN`,
      );
  } else {
    throw new ConfigError(
      `no credentials: export ${ENV_PREFIX}KEY (from the platform) or ${ENV_PREFIX}TOKEN, or pass --username/--password or --credentials-url`,
    );
  }
  return cred;
}

/**
 * Where the admin API listens. It can expose any target the host reaches to peers of the
 * caller's choosing, so it is never open to every local process: by default a unix socket only
 * this user can use, and TCP only with a token.
 */
function adminListenFrom(
  v: OptionValues<typeof OPTIONS>,
  fromFlag: FlagSources,
  env: NodeJS.ProcessEnv,
  warnings: string[],
): AdminListen | null {
  const listen =
    v["admin-listen"] === undefined ? { path: defaultAdminSocket(env) } : v["admin-listen"];
  const token = v["admin-token"];
  if (listen !== null && "host" in listen) {
    const at = listen.host.includes(":")
      ? `[${listen.host}]:${listen.port}`
      : `${listen.host}:${listen.port}`;
    if (token === undefined) {
      throw new ConfigError(
        `--admin-listen ${at} is TCP, which every local process can reach: set --admin-token (${ENV_PREFIX}ADMIN_TOKEN), or use --admin-listen unix:PATH`,
      );
    }
    if (!isLoopback(listen.host)) {
      warnings.push(
        `--admin-listen ${at} is beyond loopback over plain HTTP: the token crosses the network in clear`,
      );
    }
  }
  if (token !== undefined && fromFlag.adminToken) {
    warnings.push(
      `--admin-token on the command line is visible to other users of this host; prefer ${ENV_PREFIX}ADMIN_TOKEN`,
    );
  }
  if (token !== undefined && listen === null) {
    warnings.push("--admin-token is set but --admin-listen is off: no admin API is served");
  }
  return listen;
}

function isLoopback(host: string): boolean {
  return host.startsWith("127.") || host === "::1";
}
