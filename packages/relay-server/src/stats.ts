// Plain counters the driver bumps on the data path. The relay moves ~100k packets/s, so the
// per-packet cost must be a few typed-array increments: no OpenTelemetry call, no Map lookup,
// no string, no allocation. metrics.ts reads these numbers only at collection time (observable
// instruments and a MetricProducer), and they work the same with metrics disabled.
//
// Hot-path use (the driver computes the slot once per socket or allocation, not per packet):
//
//   const slot = relaySlot("client_to_peer", "udp");
//   ... per packet: recordRelayed(stats, slot, bytes);
//
// Low-rate events (allocations, responses, auth failures, drops) go through RelayTelemetry.

import { KERNEL_PATH_STATS } from "@turnpike/kernel-path";

export const RELAY_TRANSPORTS = ["udp", "tcp", "tls"] as const;
/** The client-side transport: UDP, TCP or TLS (TURNS) between client and relay. */
export type RelayTransport = (typeof RELAY_TRANSPORTS)[number];

export const RELAY_DIRECTIONS = ["client_to_peer", "peer_to_client"] as const;
export type RelayDirection = (typeof RELAY_DIRECTIONS)[number];

export const ADDRESS_FAMILIES = ["ipv4", "ipv6"] as const;

const TRANSPORT_INDEX: Readonly<Record<RelayTransport, number>> = { udp: 0, tcp: 1, tls: 2 };
const DIRECTION_INDEX: Readonly<Record<RelayDirection, number>> = {
  client_to_peer: 0,
  peer_to_client: 1,
};

/** Number of (direction, transport) slots in relayedPackets / relayedBytes. */
export const RELAY_SLOTS = RELAY_DIRECTIONS.length * RELAY_TRANSPORTS.length;
/** Number of (transport, family) slots in the allocation arrays. */
export const ALLOCATION_SLOTS = RELAY_TRANSPORTS.length * ADDRESS_FAMILIES.length;

/** Index into relayedPackets / relayedBytes. Compute once, not per packet. */
export function relaySlot(direction: RelayDirection, transport: RelayTransport): number {
  return DIRECTION_INDEX[direction] * RELAY_TRANSPORTS.length + TRANSPORT_INDEX[transport];
}

/** Index into the allocation arrays. */
export function allocationSlot(transport: RelayTransport, family: 4 | 6): number {
  return TRANSPORT_INDEX[transport] * ADDRESS_FAMILIES.length + (family === 4 ? 0 : 1);
}

/** Inverse of relaySlot, for the metrics reader. */
export function relaySlotLabels(slot: number): {
  direction: RelayDirection;
  transport: RelayTransport;
} {
  const n = RELAY_TRANSPORTS.length;
  return {
    direction: RELAY_DIRECTIONS[Math.floor(slot / n)] as RelayDirection,
    transport: RELAY_TRANSPORTS[slot % n] as RelayTransport,
  };
}

/** Inverse of allocationSlot, for the metrics reader. */
export function allocationSlotLabels(slot: number): { transport: RelayTransport; family: string } {
  const n = ADDRESS_FAMILIES.length;
  return {
    transport: RELAY_TRANSPORTS[Math.floor(slot / n)] as RelayTransport,
    family: ADDRESS_FAMILIES[slot % n] as string,
  };
}

/**
 * Upper bounds (inclusive, bytes) of the relayed-payload size buckets; one more bucket holds
 * everything larger. Chosen around what TURN carries: small control/keepalive packets, audio
 * (~100-200 B), video and data channels near the 1200-1500 B path MTU, and TCP relay chunks.
 */
export const PACKET_SIZE_BOUNDS: readonly number[] = [
  64, 128, 256, 512, 1024, 1280, 1500, 4096, 16384, 65535,
];

/** Upper bounds (inclusive, seconds) of the allocation lifetime buckets. */
export const LIFETIME_BOUNDS: readonly number[] = [
  1, 10, 60, 300, 600, 1800, 3600, 7200, 21600, 86400,
];

/** Bucket index of a relayed payload size (a short compare chain: no loop, no allocation). */
export function packetSizeBucket(bytes: number): number {
  if (bytes <= 512) {
    if (bytes <= 128) return bytes <= 64 ? 0 : 1;
    return bytes <= 256 ? 2 : 3;
  }
  if (bytes <= 1500) {
    if (bytes <= 1024) return 4;
    return bytes <= 1280 ? 5 : 6;
  }
  if (bytes <= 16384) return bytes <= 4096 ? 7 : 8;
  return bytes <= 65535 ? 9 : 10;
}

function bucketOf(bounds: readonly number[], value: number): number {
  for (let i = 0; i < bounds.length; i++) if (value <= (bounds[i] as number)) return i;
  return bounds.length;
}

export interface ResponseCount {
  readonly method: string;
  readonly cls: "success" | "error";
  /** 0 for success responses. */
  readonly errorCode: number;
  count: number;
}

/**
 * All relay counters as plain numbers. Arrays are Float64Array so byte totals stay exact up
 * to 2^53. Fields marked "set by the driver" are gauges the driver writes directly (or from
 * `beforeCollect`).
 */
export interface RelayStats {
  /** Wall-clock ms when counting started (the start time of cumulative metrics). */
  readonly startTimeMs: number;
  /** Relayed packets per relaySlot(direction, transport). */
  readonly relayedPackets: Float64Array;
  /** Relayed payload bytes per relaySlot(direction, transport). */
  readonly relayedBytes: Float64Array;
  /** Relayed packets per PACKET_SIZE_BOUNDS bucket (length bounds + 1). */
  readonly packetSizeCounts: Float64Array;
  /** Sum of relayed payload bytes over all packets (the histogram's sum). */
  packetSizeSum: number;
  /** Per allocationSlot(transport, family). */
  readonly allocationsActive: Float64Array;
  readonly allocationsCreated: Float64Array;
  readonly allocationsExpired: Float64Array;
  readonly allocationsDeleted: Float64Array;
  /** Ended allocations per LIFETIME_BOUNDS bucket (length bounds + 1). */
  readonly lifetimeCounts: Float64Array;
  lifetimeSum: number;
  /** Set by the driver: permissions across all allocations. */
  permissionsActive: number;
  /** Set by the driver: channel bindings across all allocations. */
  channelsActive: number;
  /** Set by the driver: open TCP/TLS client connections. */
  connectionsActive: number;
  /** Set by the driver: the UDP data path in use. */
  udpIo: "batch" | "dgram" | undefined;
  /**
   * Relayed by the kernel data path (kernel/offload.ts), per direction (RELAY_DIRECTIONS
   * order; UDP clients only): read from the bindings' kernel counters when metrics are
   * collected and when a binding ends, never per packet.
   */
  readonly kernelRelayedPackets: Float64Array;
  readonly kernelRelayedBytes: Float64Array;
  /** Set by the driver: the kernel data path in use ("tc", "xdp"), or "off". */
  kernelPath: "tc" | "xdp" | "off" | undefined;
  /**
   * What the kernel data path's program did with the datagrams it saw (KERNEL_PATH_STATS
   * order: relayed, rate-limited, left to userspace and why, failed), counted in the kernel
   * since it was loaded. One set per process: read at collection by whoever opened the path
   * (the engine with one engine, else the supervisor), never summed over workers.
   */
  readonly kernelPathDatagrams: Float64Array;
  /** Set by the driver: EVEN-PORT reservations held (relay-core's reservationsActive). */
  reservationsActive: number;
  /** Set by the driver from relay-core: requests accepted with old-scheme pinned credentials. */
  legacyPinnedAccepted: number;
  /** Set by the driver from relay-core: RFC 6062 pipes paused for a bandwidth limit. */
  bandwidthPauses: number;
  /** Set by the driver: whether this relay splices RFC 6062 pipes (stream/spliced-pipe.ts). */
  tcpSplice: boolean | undefined;
  /**
   * The kernel pipes of spliced RFC 6062 pipes (udp-batch's per-thread pool): made since the
   * start (a counter), lent now to a direction with bytes in flight and idle in the pool
   * (gauges). Each engine reads its own thread's pool when metrics are collected.
   */
  splicePipesMade: number;
  splicePipesLent: number;
  splicePipesIdle: number;
  /** Keyed by `${method}:${errorCode}`. */
  readonly responses: Map<string, ResponseCount>;
  /** Auth failures per reason. */
  readonly authFailures: Map<string, number>;
  /** Dropped packets per reason. */
  readonly drops: Map<string, number>;
  /**
   * Called by the metrics reader just before it reads the gauges, so the driver can refresh
   * permissionsActive / channelsActive / connectionsActive from relay-core lazily instead of
   * tracking every change.
   */
  beforeCollect: (() => void) | undefined;
  /**
   * Awaited by the metrics reader before beforeCollect, when the numbers live elsewhere and
   * must be fetched (the workers' supervisor asks every worker for a fresh snapshot).
   */
  refresh?: (() => Promise<void>) | undefined;
}

export function createRelayStats(startTimeMs: number = Date.now()): RelayStats {
  return {
    startTimeMs,
    relayedPackets: new Float64Array(RELAY_SLOTS),
    relayedBytes: new Float64Array(RELAY_SLOTS),
    packetSizeCounts: new Float64Array(PACKET_SIZE_BOUNDS.length + 1),
    packetSizeSum: 0,
    allocationsActive: new Float64Array(ALLOCATION_SLOTS),
    allocationsCreated: new Float64Array(ALLOCATION_SLOTS),
    allocationsExpired: new Float64Array(ALLOCATION_SLOTS),
    allocationsDeleted: new Float64Array(ALLOCATION_SLOTS),
    lifetimeCounts: new Float64Array(LIFETIME_BOUNDS.length + 1),
    lifetimeSum: 0,
    permissionsActive: 0,
    channelsActive: 0,
    connectionsActive: 0,
    udpIo: undefined,
    kernelRelayedPackets: new Float64Array(RELAY_DIRECTIONS.length),
    kernelRelayedBytes: new Float64Array(RELAY_DIRECTIONS.length),
    kernelPath: undefined,
    kernelPathDatagrams: new Float64Array(KERNEL_PATH_STATS.length),
    reservationsActive: 0,
    legacyPinnedAccepted: 0,
    bandwidthPauses: 0,
    tcpSplice: undefined,
    splicePipesMade: 0,
    splicePipesLent: 0,
    splicePipesIdle: 0,
    responses: new Map(),
    authFailures: new Map(),
    drops: new Map(),
    beforeCollect: undefined,
  };
}

/** The per-packet call: three increments and an add. */
export function recordRelayed(stats: RelayStats, slot: number, bytes: number): void {
  stats.relayedPackets[slot]! += 1;
  stats.relayedBytes[slot]! += bytes;
  stats.packetSizeCounts[packetSizeBucket(bytes)]! += 1;
  stats.packetSizeSum += bytes;
}

/** Low-rate relay events. Counting only: metrics.ts exports what this records. */
export interface RelayTelemetry {
  readonly stats: RelayStats;
  /** Same as recordRelayed(stats, slot, bytes). */
  relayed(slot: number, bytes: number): void;
  allocationCreated(transport: RelayTransport, family: 4 | 6): void;
  allocationEnded(
    transport: RelayTransport,
    family: 4 | 6,
    reason: "expired" | "deleted",
    lifetimeSeconds: number,
  ): void;
  /** A STUN response sent: method name ("binding", "allocate", ...), class, error code (0/omitted on success). */
  response(method: string, cls: "success" | "error", errorCode?: number): void;
  /** Reason examples: "bad-integrity", "unknown-user", "stale-nonce", "expired-credentials". */
  authFailure(reason: string): void;
  /** Reason examples: "malformed", "no-permission", "no-allocation", "policy", "backpressure". */
  drop(reason: string, count?: number): void;
}

// Reasons and methods come from the driver's code, so they are few; the cap only guards
// against a driver bug turning a traffic-derived string into an unbounded metric label.
const MAX_LABEL_VALUES = 64;
const OTHER = "other";

function bump(map: Map<string, number>, key: string, by: number): void {
  const current = map.get(key);
  if (current !== undefined) map.set(key, current + by);
  else if (map.size < MAX_LABEL_VALUES) map.set(key, by);
  else map.set(OTHER, (map.get(OTHER) ?? 0) + by);
}

class StatsTelemetry implements RelayTelemetry {
  constructor(readonly stats: RelayStats) {}

  relayed(slot: number, bytes: number): void {
    recordRelayed(this.stats, slot, bytes);
  }

  allocationCreated(transport: RelayTransport, family: 4 | 6): void {
    const slot = allocationSlot(transport, family);
    this.stats.allocationsCreated[slot]! += 1;
    this.stats.allocationsActive[slot]! += 1;
  }

  allocationEnded(
    transport: RelayTransport,
    family: 4 | 6,
    reason: "expired" | "deleted",
    lifetimeSeconds: number,
  ): void {
    const s = this.stats;
    const slot = allocationSlot(transport, family);
    if (s.allocationsActive[slot]! > 0) s.allocationsActive[slot]! -= 1;
    (reason === "expired" ? s.allocationsExpired : s.allocationsDeleted)[slot]! += 1;
    const lifetime = Number.isFinite(lifetimeSeconds) && lifetimeSeconds > 0 ? lifetimeSeconds : 0;
    s.lifetimeCounts[bucketOf(LIFETIME_BOUNDS, lifetime)]! += 1;
    s.lifetimeSum += lifetime;
  }

  response(method: string, cls: "success" | "error", errorCode = 0): void {
    const code = cls === "success" ? 0 : errorCode;
    const key = `${method}:${code}`;
    const entry = this.stats.responses.get(key);
    if (entry !== undefined) {
      entry.count++;
      return;
    }
    if (this.stats.responses.size >= MAX_LABEL_VALUES) {
      const other = `${OTHER}:${code}`;
      const o = this.stats.responses.get(other);
      if (o !== undefined) o.count++;
      else this.stats.responses.set(other, { method: OTHER, cls, errorCode: code, count: 1 });
      return;
    }
    this.stats.responses.set(key, { method, cls, errorCode: code, count: 1 });
  }

  authFailure(reason: string): void {
    bump(this.stats.authFailures, reason, 1);
  }

  drop(reason: string, count = 1): void {
    bump(this.stats.drops, reason, count);
  }
}

export function createRelayTelemetry(stats: RelayStats = createRelayStats()): RelayTelemetry {
  return new StatsTelemetry(stats);
}
