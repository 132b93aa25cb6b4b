// The relay's OpenTelemetry instruments over RelayStats (the table in metrics.ts): observables
// fed by one batch callback, and the two histograms as a MetricProducer. Imported by
// startMetrics only when an exporter is configured, with the SDK it needs: a relay without
// OTLP or Prometheus loads none of OpenTelemetry.

import type { Attributes, Meter, Observable } from "@opentelemetry/api";
import { ValueType } from "@opentelemetry/api";
import type { Resource } from "@opentelemetry/resources";
import {
  AggregationTemporality,
  type CollectionResult,
  DataPointType,
  type HistogramMetricData,
  type MetricProducer,
} from "@opentelemetry/sdk-metrics";
import { KERNEL_PATH_STATS } from "@turnpike/kernel-path";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, socketPoolCounters } from "@turnpike/udp-batch";
import {
  ALLOCATION_SLOTS,
  allocationSlotLabels,
  LIFETIME_BOUNDS,
  PACKET_SIZE_BOUNDS,
  RELAY_DIRECTIONS,
  RELAY_SLOTS,
  type RelayStats,
  relaySlotLabels,
} from "./stats.js";

export const SCOPE_NAME = "turnpike-relay";

export interface LoopDelay {
  readonly count: number;
  readonly max: number;
  percentile(p: number): number;
  reset(): void;
}

export function registerObservables(
  meter: Meter,
  stats: RelayStats,
  loopDelay: LoopDelay,
  logger: Logger | undefined,
): void {
  const int = { valueType: ValueType.INT };
  const allocationsActive = meter.createObservableUpDownCounter("turn.allocations.active", {
    ...int,
    unit: "{allocation}",
    description: "Allocations currently live",
  });
  const allocationsCreated = meter.createObservableCounter("turn.allocations.created", {
    ...int,
    unit: "{allocation}",
    description: "Allocations created",
  });
  const allocationsExpired = meter.createObservableCounter("turn.allocations.expired", {
    ...int,
    unit: "{allocation}",
    description: "Allocations that reached the end of their lifetime",
  });
  const allocationsDeleted = meter.createObservableCounter("turn.allocations.deleted", {
    ...int,
    unit: "{allocation}",
    description: "Allocations deleted by the client or the relay",
  });
  const responses = meter.createObservableCounter("stun.responses", {
    ...int,
    unit: "{response}",
    description: "STUN/TURN responses sent",
  });
  const relayedPackets = meter.createObservableCounter("turn.relayed.packets", {
    ...int,
    unit: "{packet}",
    description: "Packets relayed",
  });
  const relayedBytes = meter.createObservableCounter("turn.relayed.bytes", {
    ...int,
    unit: "By",
    description: "Payload bytes relayed",
  });
  const permissions = meter.createObservableUpDownCounter("turn.permissions.active", {
    ...int,
    unit: "{permission}",
    description: "Permissions installed across all allocations",
  });
  const channels = meter.createObservableUpDownCounter("turn.channels.active", {
    ...int,
    unit: "{channel}",
    description: "Channel bindings across all allocations",
  });
  const connections = meter.createObservableUpDownCounter("turn.connections.active", {
    ...int,
    unit: "{connection}",
    description: "Open TCP/TLS client connections",
  });
  const udpIo = meter.createObservableGauge("turn.relay.udp_io", {
    ...int,
    unit: "1",
    description: "The UDP data path in use (io: batch or dgram); always 1",
  });
  const poolSockets = meter.createObservableCounter("turn.relay.socket_pool.sockets", {
    ...int,
    unit: "{socket}",
    description: "UDP sockets the batched path opened, by source: pool or inline",
  });
  const poolHeld = meter.createObservableGauge("turn.relay.socket_pool.held", {
    ...int,
    unit: "{socket}",
    description: "Unbound UDP sockets udp-batch's pool holds ready",
  });
  const splicePipes = meter.createObservableGauge("turn.relay.splice_pool.pipes", {
    ...int,
    unit: "{pipe}",
    description: "Kernel pipes of spliced RFC 6062 pipes, by state: lent or idle",
  });
  const splicePipesMade = meter.createObservableCounter("turn.relay.splice_pool.made", {
    ...int,
    unit: "{pipe}",
    description: "Kernel pipes made for spliced RFC 6062 pipes",
  });
  const kernelPath = meter.createObservableGauge("turn.relay.kernel_path", {
    ...int,
    unit: "1",
    description: "The kernel data path (path: tc, or off); always 1",
  });
  const kernelPathDatagrams = meter.createObservableCounter("turn.relay.kernel_path.datagrams", {
    ...int,
    unit: "{datagram}",
    description: "UDP datagrams the kernel data path's program saw, by outcome",
  });
  const authFailures = meter.createObservableCounter("turn.auth.failures", {
    ...int,
    unit: "{failure}",
    description: "Requests rejected by authentication",
  });
  const drops = meter.createObservableCounter("turn.dropped.packets", {
    ...int,
    unit: "{packet}",
    description: "Packets dropped",
  });
  const loopP50 = meter.createObservableGauge("nodejs.eventloop.delay.p50", {
    unit: "s",
    description: "Event-loop delay median since the previous collection",
  });
  const loopP99 = meter.createObservableGauge("nodejs.eventloop.delay.p99", {
    unit: "s",
    description: "Event-loop delay 99th percentile since the previous collection",
  });
  const loopMax = meter.createObservableGauge("nodejs.eventloop.delay.max", {
    unit: "s",
    description: "Event-loop delay maximum since the previous collection",
  });
  const cpuTime = meter.createObservableCounter("process.cpu.time", {
    unit: "s",
    description: "CPU time used by the process",
  });
  const reservations = meter.createObservableUpDownCounter("turn.reservations.active", {
    ...int,
    unit: "{reservation}",
    description: "EVEN-PORT reservations held",
  });
  const legacyPinned = meter.createObservableCounter("turn.auth.legacy_pinned", {
    ...int,
    unit: "{request}",
    description: "Requests accepted with old-scheme pinned credentials",
  });
  const bandwidthPauses = meter.createObservableCounter("turn.bandwidth.pauses", {
    ...int,
    unit: "{pause}",
    description: "RFC 6062 pipes paused for a bandwidth limit",
  });
  const memory = meter.createObservableUpDownCounter("process.memory.usage", {
    ...int,
    unit: "By",
    description: "Resident set size",
  });

  const observables: Observable[] = [
    allocationsActive,
    allocationsCreated,
    allocationsExpired,
    allocationsDeleted,
    responses,
    relayedPackets,
    relayedBytes,
    permissions,
    channels,
    connections,
    authFailures,
    drops,
    loopP50,
    loopP99,
    loopMax,
    cpuTime,
    memory,
    udpIo,
    poolSockets,
    poolHeld,
    splicePipes,
    splicePipesMade,
    kernelPath,
    kernelPathDatagrams,
    reservations,
    legacyPinned,
    bandwidthPauses,
  ];

  meter.addBatchObservableCallback(async (result) => {
    try {
      await stats.refresh?.();
      stats.beforeCollect?.();
    } catch (err) {
      logger?.warn("stats refresh before metrics collection failed", { err });
    }
    for (let slot = 0; slot < ALLOCATION_SLOTS; slot++) {
      const attrs = allocationSlotLabels(slot);
      result.observe(allocationsActive, stats.allocationsActive[slot]!, attrs);
      result.observe(allocationsCreated, stats.allocationsCreated[slot]!, attrs);
      result.observe(allocationsExpired, stats.allocationsExpired[slot]!, attrs);
      result.observe(allocationsDeleted, stats.allocationsDeleted[slot]!, attrs);
    }
    for (let slot = 0; slot < RELAY_SLOTS; slot++) {
      const attrs = { ...relaySlotLabels(slot), path: "userspace" };
      result.observe(relayedPackets, stats.relayedPackets[slot]!, attrs);
      result.observe(relayedBytes, stats.relayedBytes[slot]!, attrs);
    }
    // What the kernel data path relayed (UDP clients' bound ChannelData), read from its
    // bindings' counters (kernel/offload.ts).
    if (stats.kernelPath === "tc" || stats.kernelPath === "xdp") {
      RELAY_DIRECTIONS.forEach((direction, i) => {
        const attrs = { direction, transport: "udp", path: "kernel" };
        result.observe(relayedPackets, stats.kernelRelayedPackets[i]!, attrs);
        result.observe(relayedBytes, stats.kernelRelayedBytes[i]!, attrs);
      });
    }
    for (const r of stats.responses.values()) {
      const attrs: Attributes = { method: r.method, class: r.cls };
      if (r.cls === "error") attrs.error_code = r.errorCode;
      result.observe(responses, r.count, attrs);
    }
    result.observe(permissions, stats.permissionsActive);
    result.observe(channels, stats.channelsActive);
    result.observe(connections, stats.connectionsActive);
    result.observe(reservations, stats.reservationsActive);
    result.observe(legacyPinned, stats.legacyPinnedAccepted);
    result.observe(bandwidthPauses, stats.bandwidthPauses);
    if (stats.udpIo !== undefined) result.observe(udpIo, 1, { io: stats.udpIo });
    // The pool is the process's (udp-batch/native/socket_pool.c), shared by every engine.
    if (stats.udpIo === "batch" && batchIoAvailability().available) {
      const pool = socketPoolCounters();
      result.observe(poolSockets, pool.taken, { source: "pool" });
      result.observe(poolSockets, pool.inline, { source: "inline" });
      result.observe(poolHeld, pool.heldIpv4, { family: "ipv4" });
      result.observe(poolHeld, pool.heldIpv6, { family: "ipv6" });
    }
    // Each engine's thread has its own pool (udp-batch/native/splice_pipe.c); summed over them.
    if (stats.tcpSplice) {
      result.observe(splicePipes, stats.splicePipesLent, { state: "lent" });
      result.observe(splicePipes, stats.splicePipesIdle, { state: "idle" });
      result.observe(splicePipesMade, stats.splicePipesMade);
    }
    if (stats.kernelPath !== undefined) result.observe(kernelPath, 1, { path: stats.kernelPath });
    // The program's own counters: what it relayed, dropped, and left to userspace and why (a
    // channel's traffic that never reaches the kernel path says so here, not in silence).
    if (stats.kernelPath === "tc" || stats.kernelPath === "xdp") {
      KERNEL_PATH_STATS.forEach((outcome, i) => {
        result.observe(kernelPathDatagrams, stats.kernelPathDatagrams[i]!, { outcome });
      });
    }
    for (const [reason, count] of stats.authFailures)
      result.observe(authFailures, count, { reason });
    for (const [reason, count] of stats.drops) result.observe(drops, count, { reason });
    if (loopDelay.count > 0) {
      // The monitor reports nanoseconds; semantic conventions want seconds.
      result.observe(loopP50, loopDelay.percentile(50) / 1e9);
      result.observe(loopP99, loopDelay.percentile(99) / 1e9);
      result.observe(loopMax, loopDelay.max / 1e9);
      loopDelay.reset();
    }
    const cpu = process.cpuUsage();
    result.observe(cpuTime, cpu.user / 1e6, { "cpu.mode": "user" });
    result.observe(cpuTime, cpu.system / 1e6, { "cpu.mode": "system" });
    result.observe(memory, process.memoryUsage.rss());
  }, observables);
}

function hrTime(ms: number): [number, number] {
  const seconds = Math.floor(ms / 1000);
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)];
}

/**
 * Exports RelayStats' fixed-bucket histograms as cumulative OTLP histograms (see metrics.ts's
 * header comment for why a MetricProducer and not a Histogram instrument).
 */
export class StatsHistogramProducer implements MetricProducer {
  constructor(
    private readonly stats: RelayStats,
    private readonly resource: Resource,
    private readonly version: string,
  ) {}

  async collect(): Promise<CollectionResult> {
    // The histograms come from the same numbers as the observables: bring them up to date.
    await this.stats.refresh?.().catch(() => undefined);
    this.stats.beforeCollect?.();
    const start = hrTime(this.stats.startTimeMs);
    const end = hrTime(Date.now());
    const histogram = (
      name: string,
      unit: string,
      description: string,
      bounds: readonly number[],
      counts: Float64Array,
      sum: number,
    ): HistogramMetricData => {
      let count = 0;
      for (const c of counts) count += c;
      return {
        descriptor: { name, unit, description, valueType: ValueType.DOUBLE },
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: [
          {
            startTime: start,
            endTime: end,
            attributes: {},
            value: {
              buckets: { boundaries: [...bounds], counts: Array.from(counts) },
              sum,
              count,
            },
          },
        ],
      };
    };
    const s = this.stats;
    return {
      resourceMetrics: {
        resource: this.resource,
        scopeMetrics: [
          {
            scope: { name: SCOPE_NAME, version: this.version },
            metrics: [
              histogram(
                "turn.packet.size",
                "By",
                "Relayed payload sizes",
                PACKET_SIZE_BOUNDS,
                s.packetSizeCounts,
                s.packetSizeSum,
              ),
              histogram(
                "turn.allocation.lifetime",
                "s",
                "How long ended allocations lived",
                LIFETIME_BOUNDS,
                s.lifetimeCounts,
                s.lifetimeSum,
              ),
            ],
          },
        ],
      },
      errors: [],
    };
  }
}
