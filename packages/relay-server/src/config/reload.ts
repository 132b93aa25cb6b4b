// A reload (SIGHUP): the configuration is read again from the same sources (the command line and
// the environment are the process's own and cannot change, the files they name can: --config,
// --token-file, --revoke-file, --tls-cert/--tls-key), and this module decides what of the new
// one the running relay takes:
//
//   live           the secrets (tokens, static users, the legacy-pin window), the revocation
//                  list, the TLS pair, the log level and the process-wide limits: taken over,
//                  every engine applies them (engine/driver.ts, applyReloadable)
//   restart-only   everything else (listeners, relay addresses and ports, workers, the UDP
//                  path, peer policy, per-allocation limits, ...): kept as it was, and named
//
// An option this list does not know is restart-only, so a new option is never half-applied.
// Whether the new configuration is valid at all is the parser's business: parseRelayArgs throws
// a one-line ConfigError, and the caller then keeps the running configuration entirely.

import type { RelayConfig } from "./types.js";

/** A setting that changes live, the options it comes from and the config fields that hold it. */
interface LiveSetting {
  /** How the INFO line names it (an option name). */
  readonly name: (c: RelayConfig) => string;
  readonly options: readonly string[];
  readonly fields: readonly (keyof RelayConfig)[];
}

const LIVE: readonly LiveSetting[] = [
  {
    name: (c) => (c.tokenFile !== undefined ? "--token-file" : "--token"),
    options: ["token", "token-file"],
    fields: ["tokens", "tokenFile", "tokenGenerated"],
  },
  { name: () => "--user", options: ["user"], fields: ["users"] },
  {
    name: () => "--legacy-pinned-credentials-until",
    options: ["legacy-pinned-credentials-until"],
    fields: ["legacyPinnedUntil"],
  },
  { name: () => "--revoke", options: ["revoke"], fields: ["revoke"] },
  {
    name: () => "--revoke-file",
    options: ["revoke-file"],
    fields: ["revokeFile", "revokeFileEntries", "revokeFileWarnings"],
  },
  {
    name: () => "--tls-cert",
    options: ["tls-cert", "tls-key"],
    fields: ["tlsCert", "tlsKey", "tls"],
  },
  { name: () => "--log-level", options: ["log-level"], fields: ["logLevel"] },
  ...(
    [
      ["max-allocations", "maxAllocations"],
      ["max-allocations-per-user", "maxAllocationsPerUser"],
      ["max-connections", "maxConnections"],
      ["max-connections-per-ip", "maxConnectionsPerIp"],
      ["max-unauthenticated-rate", "maxUnauthenticatedRate"],
    ] as const
  ).map(([option, field]) => ({ name: () => `--${option}`, options: [option], fields: [field] })),
];

/** The options whose changes a reload applies. */
export const LIVE_OPTIONS: ReadonlySet<string> = new Set(LIVE.flatMap((s) => s.options));

export interface ReloadPlan {
  /**
   * The configuration to run with: the running one with the live settings of the new one
   * (restart-only settings stay as they are, so a later reload names them again).
   */
  readonly config: RelayConfig;
  /** The live settings that changed, by option name (for the INFO line; never a value). */
  readonly changed: readonly string[];
  /** The restart-only options whose value changed, by option name (one WARN line). */
  readonly restartOnly: readonly string[];
}

export function planReload(running: RelayConfig, next: RelayConfig): ReloadPlan {
  const changed = LIVE.filter((s) => s.fields.some((f) => !same(running[f], next[f]))).map((s) =>
    s.name(next),
  );
  const names = new Set([...Object.keys(running.optionValues), ...Object.keys(next.optionValues)]);
  const restartOnly = [...names]
    .filter((n) => !LIVE_OPTIONS.has(n) && !same(running.optionValues[n], next.optionValues[n]))
    .map((n) => `--${n}`);
  const live: Record<string, unknown> = {};
  for (const s of LIVE) for (const f of s.fields) live[f] = next[f];
  const optionValues: Record<string, unknown> = { ...running.optionValues };
  for (const n of LIVE_OPTIONS) optionValues[n] = next.optionValues[n];
  return {
    config: { ...running, ...live, optionValues } as RelayConfig,
    changed: [...new Set(changed)],
    restartOnly,
  };
}

/** Deep equality of configuration values (plain data: strings, numbers, arrays, records). */
function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
