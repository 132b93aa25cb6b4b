// Relay counters across workers. Each worker counts in its own RelayStats (plain numbers, as
// with one engine) and posts a snapshot a few times a second; the supervisor's stats, which
// metrics.ts reads, are the sum over the workers' latest snapshots plus what workers that
// died had counted (so counters never go backwards across a restart). Gauges (live
// allocations, permissions, channels, connections, reservations, kernel pipes lent and idle)
// are the sum over live workers only.

import type { RelayStats, ResponseCount } from "../stats.js";

/** What a worker posts: RelayStats without its callback, cloneable. */
export type StatsSnapshot = Omit<RelayStats, "beforeCollect" | "refresh" | "startTimeMs">;

export function snapshotOf(stats: RelayStats): StatsSnapshot {
  stats.beforeCollect?.();
  const { beforeCollect: _callback, refresh: _refresh, startTimeMs: _start, ...rest } = stats;
  return rest;
}

const COUNTER_ARRAYS = [
  "relayedPackets",
  "relayedBytes",
  "packetSizeCounts",
  "allocationsCreated",
  "allocationsExpired",
  "allocationsDeleted",
  "lifetimeCounts",
  "kernelRelayedPackets",
  "kernelRelayedBytes",
] as const;
const COUNTER_SCALARS = [
  "packetSizeSum",
  "lifetimeSum",
  "legacyPinnedAccepted",
  "bandwidthPauses",
  "splicePipesMade",
] as const;
const COUNTER_MAPS = ["authFailures", "drops"] as const;

/** Adds `from`'s counters (not gauges) into `into`. */
function addCounters(into: StatsSnapshot | RelayStats, from: StatsSnapshot): void {
  for (const key of COUNTER_ARRAYS) {
    const a = into[key];
    const b = from[key];
    for (let i = 0; i < a.length && i < b.length; i++) a[i]! += b[i]!;
  }
  for (const key of COUNTER_SCALARS) into[key] += from[key];
  for (const key of COUNTER_MAPS) {
    for (const [k, v] of from[key]) into[key].set(k, (into[key].get(k) ?? 0) + v);
  }
  for (const [k, r] of from.responses) {
    const entry = into.responses.get(k);
    if (entry) entry.count += r.count;
    else into.responses.set(k, { ...r } satisfies ResponseCount);
  }
}

function addGauges(into: RelayStats, from: StatsSnapshot): void {
  for (let i = 0; i < into.allocationsActive.length; i++) {
    into.allocationsActive[i]! += from.allocationsActive[i] ?? 0;
  }
  into.permissionsActive += from.permissionsActive;
  into.channelsActive += from.channelsActive;
  into.connectionsActive += from.connectionsActive;
  into.reservationsActive += from.reservationsActive;
  into.splicePipesLent += from.splicePipesLent;
  into.splicePipesIdle += from.splicePipesIdle;
}

function zero(stats: StatsSnapshot | RelayStats): void {
  for (const key of COUNTER_ARRAYS) stats[key].fill(0);
  stats.allocationsActive.fill(0);
  for (const key of COUNTER_SCALARS) stats[key] = 0;
  for (const key of COUNTER_MAPS) stats[key].clear();
  stats.responses.clear();
  stats.permissionsActive = 0;
  stats.channelsActive = 0;
  stats.connectionsActive = 0;
  stats.reservationsActive = 0;
  stats.splicePipesLent = 0;
  stats.splicePipesIdle = 0;
}

/** The supervisor's side: latest snapshot per worker, and the totals of dead ones. */
export class StatsAggregator {
  private readonly latest = new Map<number, StatsSnapshot>();
  private readonly retired: StatsSnapshot;

  constructor(private readonly target: RelayStats) {
    const { beforeCollect: _b, refresh: _r, startTimeMs: _s, ...shape } = target;
    this.retired = structuredClone(shape);
    zero(this.retired);
  }

  update(worker: number, snapshot: StatsSnapshot): void {
    this.latest.set(worker, snapshot);
  }

  /** The worker died: keep what it counted, forget its gauges. */
  retire(worker: number): void {
    const last = this.latest.get(worker);
    if (last !== undefined) addCounters(this.retired, last);
    this.latest.delete(worker);
  }

  /** Recompute the target's numbers (called just before metrics are read). */
  aggregate(): void {
    const t = this.target;
    zero(t);
    addCounters(t, this.retired);
    for (const s of this.latest.values()) {
      addCounters(t, s);
      addGauges(t, s);
      t.udpIo ??= s.udpIo;
      t.kernelPath ??= s.kernelPath;
      t.tcpSplice ||= s.tcpSplice;
    }
  }
}
