// RelayConfig to relay-core's options: what the engine's TurnServer and its peer policy are
// built with. Pure: no socket, no clock (the wall-clock offset is a parameter), no randomness
// drawn (the random source is only chosen), so it is unit-tested on its own
// (test/server-options.test.ts).
//
// One engine relays on the whole port range. A worker (shared/context.ts) relays on its slice
// of the range, so a peer's datagram reaches the worker that owns the allocation, and holds the
// nonce secret together with the others; its CONNECTION-IDs name it (RFC 6062 across workers,
// worker-link.ts). Either way the quotas and the unauthenticated rate come from the
// process-wide limits (shared/shared-limits.ts: one engine has them to itself), where a reload
// changes them; the credential store is built anew by a reload (credentialStore).

import {
  CombinedCredentials,
  type CredentialStore,
  type PeerAddressPolicy,
  type PeerAddressPolicyOptions,
  SeededRandom,
  SharedSecretCredentials,
  StaticCredentials,
  type TurnServerOptions,
} from "@turnpike/relay-core";
import { CryptoRandom } from "@turnpike/runtime-kit";
import type { RelayConfig } from "../config/types.js";
import { revocationList } from "../config/values.js";
import type { WorkerContext } from "../shared/context.js";
import type { ProcessLimits, SharedLimits } from "../shared/shared-limits.js";

export interface EngineSetting {
  /** Set when the engine is one of several workers. */
  readonly worker?: WorkerContext | undefined;
  /** The process-wide limits (a worker's are `worker.limits`). */
  readonly limits: SharedLimits;
  /** Built from peerPolicyOptions(); the engine adds listener ports bound on port 0. */
  readonly peerPolicy: PeerAddressPolicy;
  /** Wall clock minus the monotonic clock `now` is given on (timer.ts, unixTimeOffsetMs). */
  readonly unixTimeOffsetMs: number;
  /**
   * The kernel data path runs (kernel/): relay-core reports which channel bindings it may
   * relay (offload-channel / end-offload). Off otherwise: no such outputs, no work for them.
   */
  readonly channelOffload?: boolean;
}

/**
 * Which peers are refused (RFC 8656 §21): the configured lists, and the relay itself: its own
 * addresses, its listening ports (TURN on both transports, TLS and `ownPorts`: health and
 * Prometheus on TCP) and, outside the relay port range, everything else on its addresses.
 */
export function peerPolicyOptions(
  config: RelayConfig,
  ownPorts: readonly number[] = [],
): PeerAddressPolicyOptions {
  return {
    allow: config.allowPeers,
    deny: config.denyPeers,
    allowLoopback: config.allowLoopbackPeers,
    allowSelf: config.allowSelfPeer,
    self: {
      addresses: config.selfAddresses,
      ports: {
        udp: config.listen.map((a) => a.port),
        tcp: [...[...config.listen, ...config.tlsListen].map((a) => a.port), ...ownPorts],
      },
      relayPorts: { min: config.minPort, max: config.maxPort },
    },
  };
}

export function turnServerOptions(config: RelayConfig, setting: EngineSetting): TurnServerOptions {
  const w = setting.worker;
  const limits = setting.limits;
  return {
    realm: config.realm,
    credentials: credentialStore(config),
    random:
      config.rngSeed !== undefined
        ? new SeededRandom(config.rngSeed + (w?.index ?? 0))
        : new CryptoRandom(),
    allocationQuota: {
      acquire: (principal: string) => limits.acquireAllocation(principal),
      release: (principal: string) => limits.releaseAllocation(principal),
    },
    unauthenticatedLimiter: {
      // Every worker's buckets on one clock: wall-clock milliseconds.
      allow: (source: string, now: number) =>
        limits.allowUnauthenticated(source, performance.timeOrigin + now),
    },
    // Workers: one nonce secret; pinned-port owners, RESERVATION-TOKENs and per-user bandwidth
    // held together (shared/shared-state.ts); CONNECTION-IDs that name the worker owning them
    // (workers/pool.ts). One engine keeps relay-core's own.
    ...(w && {
      secret: w.secret,
      pinnedPortOwners: w.shared.pinnedPorts,
      reservationExchange: w.shared.reservations,
      userBandwidth: w.shared.userBandwidth,
      connectionIds: { index: w.index, count: w.count },
    }),
    relayAddresses: {
      ip4: config.relayIp4 ? { bind: config.relayIp4, advertised: config.publicIp4 } : undefined,
      ip6: config.relayIp6 ? { bind: config.relayIp6, advertised: config.publicIp6 } : undefined,
    },
    minPort: w?.portSlice.minPort ?? config.minPort,
    maxPort: w?.portSlice.maxPort ?? config.maxPort,
    pinnedPorts: config.pinnedPorts,
    revokedUsers: revocationList(config),
    software: config.software,
    peerPolicy: setting.peerPolicy,
    maxPermissionsPerAllocation: config.maxPermissions,
    maxChannelsPerAllocation: config.maxChannels,
    legacyChannelNumbers: config.legacyChannelNumbers,
    channelOffload: setting.channelOffload ?? false,
    lifetimes: config.testLifetimes,
    // Bandwidth buckets (relay-core's bandwidth.ts); every data path charges the same ones.
    maxBytesPerSecond: config.maxBytesPerSecond,
    maxBytesPerSecondPerUser: config.maxBytesPerSecondPerUser,
    unixTimeOffsetMs: setting.unixTimeOffsetMs,
    alternateServer: config.alternateServer
      ? {
          family: config.alternateServer.family,
          address: config.alternateServer.ip,
          port: config.alternateServer.port,
        }
      : undefined,
  };
}

/** The limits of the whole process a configuration sets (shared/shared-limits.ts). */
export function processLimits(config: RelayConfig): ProcessLimits {
  return {
    maxAllocations: config.maxAllocations,
    maxAllocationsPerUser: config.maxAllocationsPerUser,
    maxConnections: config.maxConnections,
    maxConnectionsPerIp: config.maxConnectionsPerIp,
    unauthenticatedRate: config.maxUnauthenticatedRate,
  };
}

/**
 * Static users (--user) first, then TURN REST usernames signed with any of the secrets (the
 * first mints elsewhere; every one verifies here), pinned ones of the old scheme only inside
 * the --legacy-pinned-credentials-until window.
 */
export function credentialStore(config: RelayConfig): CredentialStore {
  const stores: CredentialStore[] = [
    new SharedSecretCredentials(config.tokens, {
      ...(config.legacyPinnedUntil !== undefined && {
        legacyPinnedUntil: config.legacyPinnedUntil,
      }),
    }),
  ];
  if (config.users.length > 0) {
    stores.unshift(new StaticCredentials(config.users.map((u) => [u.username, u.password])));
  }
  return stores.length === 1 ? stores[0]! : new CombinedCredentials(stores);
}
