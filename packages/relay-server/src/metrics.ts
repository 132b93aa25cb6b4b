// OpenTelemetry metrics for turnpike-relay.
//
// Enabled by OTLP_GRPC_ENDPOINT (the Firezone relay's variable, "host:port" or a URL) or the
// standard OTEL_EXPORTER_OTLP_METRICS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT (first set wins, in
// that order: metrics-specific, Firezone, generic), and/or by --prometheus-listen. Honours
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_METRIC_EXPORT_INTERVAL (ms, default 60000),
// OTEL_METRIC_EXPORT_TIMEOUT and OTEL_SDK_DISABLED.
//
// We use @opentelemetry/sdk-metrics' MeterProvider directly rather than sdk-node's NodeSDK: the
// relay needs metrics only, and NodeSDK would also register global tracer/propagator/logger
// providers and configure itself from process.env behind our back. A MeterProvider is explicit,
// owns exactly the readers below, and several can coexist in one test process.
//
// Data path cost: the driver only bumps plain numbers in RelayStats (stats.ts). Every
// instrument here is read at collection time:
// - sums and gauges are observable instruments fed by one batch callback over RelayStats;
// - the two histograms (packet size, allocation lifetime) come from a MetricProducer. OTel JS
//   has no observable histogram, and feeding a synchronous Histogram from bucket deltas would
//   mean one record() call per packet at collection time. RelayStats keeps fixed buckets, and
//   the producer hands them to the SDK as a genuine cumulative OTLP histogram (explicit
//   bounds, counts, sum), which both readers (OTLP push and Prometheus pull) export as-is.
//
// Instruments (attribute values in parentheses):
//
// | name                         | kind                  | unit          | attributes |
// |------------------------------|-----------------------|---------------|------------|
// | turn.allocations.active      | UpDownCounter (obs.)  | {allocation}  | transport (udp/tcp/tls), family (ipv4/ipv6) |
// | turn.allocations.created     | Counter (obs.)        | {allocation}  | transport, family |
// | turn.allocations.expired     | Counter (obs.)        | {allocation}  | transport, family |
// | turn.allocations.deleted     | Counter (obs.)        | {allocation}  | transport, family |
// | turn.allocation.lifetime     | Histogram             | s             | - |
// | stun.responses               | Counter (obs.)        | {response}    | method, class (success/error), error_code (errors only) |
// | turn.relayed.packets         | Counter (obs.)        | {packet}      | direction (client_to_peer/peer_to_client), transport, path (userspace/kernel) |
// | turn.relayed.bytes           | Counter (obs.)        | By            | direction, transport, path |
// | turn.packet.size             | Histogram             | By            | - |
// | turn.permissions.active      | UpDownCounter (obs.)  | {permission}  | - |
// | turn.channels.active         | UpDownCounter (obs.)  | {channel}     | - |
// | turn.connections.active      | UpDownCounter (obs.)  | {connection}  | - |
// | turn.reservations.active     | UpDownCounter (obs.)  | {reservation} | - |
// | turn.relay.udp_io            | Gauge (obs.)          | 1             | io (batch/dgram) |
// | turn.relay.kernel_path       | Gauge (obs.)          | 1             | path (tc/off) |
// | turn.auth.failures           | Counter (obs.)        | {failure}     | reason |
// | turn.dropped.packets         | Counter (obs.)        | {packet}      | reason |
// | turn.auth.legacy_pinned      | Counter (obs.)        | {request}     | - |
// | turn.bandwidth.pauses        | Counter (obs.)        | {pause}       | - |
// | nodejs.eventloop.delay.p50   | Gauge (obs.)          | s             | - |
// | nodejs.eventloop.delay.p99   | Gauge (obs.)          | s             | - |
// | nodejs.eventloop.delay.max   | Gauge (obs.)          | s             | - |
// | process.cpu.time             | Counter (obs.)        | s             | cpu.mode (user/system) |
// | process.memory.usage         | UpDownCounter (obs.)  | By            | - |
//
// METRIC_DOCS (metric-docs.ts) is the same table as data, for the README.

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { type Attributes, type Meter, type Observable, ValueType } from "@opentelemetry/api";
import type { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import type { Resource } from "@opentelemetry/resources";
import type {
  CollectionResult,
  HistogramMetricData,
  IMetricReader,
  MetricProducer,
} from "@opentelemetry/sdk-metrics";
import type { Logger } from "@turnpike/runtime-kit";
import {
  metricExportTiming,
  OtlpExportHealth,
  resourceAttributesFrom as otelResourceAttributes,
  otlpEndpointFrom,
  routeOtelDiagnostics,
  watchOtlpExport,
} from "@turnpike/runtime-kit";
import type { SocketAddress } from "./config/types.js";
import {
  ALLOCATION_SLOTS,
  allocationSlotLabels,
  createRelayStats,
  createRelayTelemetry,
  LIFETIME_BOUNDS,
  PACKET_SIZE_BOUNDS,
  RELAY_DIRECTIONS,
  RELAY_SLOTS,
  type RelayStats,
  relaySlotLabels,
} from "./stats.js";
import type { RelayMetricsSink } from "./types.js";
import { RELAY_VERSION } from "./version.js";

export type { RelayStats, RelayTelemetry } from "./stats.js";

export const DEFAULT_SERVICE_NAME = "turnpike-relay";
const SCOPE_NAME = "turnpike-relay";

// The instruments below as data, for the README and the tests (metric-docs.ts).
export { METRIC_DOCS, type MetricDoc, renderMetricsTable } from "./metric-docs.js";

export interface MetricsOptions {
  /** Where OTEL_* / OTLP_GRPC_ENDPOINT are read from. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Counters to export; a fresh set when omitted. */
  stats?: RelayStats;
  /** Serve Prometheus /metrics here (port 0 = any free port). */
  prometheusListen?: SocketAddress | undefined;
  serviceVersion?: string;
  /** Receives exporter errors (rate-limited) and the "metrics enabled" line. */
  logger?: Logger;
}

export interface RelayMetrics extends RelayMetricsSink {
  /** The OTLP gRPC URL metrics are pushed to, if any. */
  readonly otlpEndpoint: string | undefined;
  /** The bound Prometheus address (real port), if enabled. */
  prometheusAddress(): SocketAddress | undefined;
  /** Collect and export now. */
  forceFlush(): Promise<void>;
  /** Flush, stop the exporters and the Prometheus server. Idempotent. */
  shutdown(): Promise<void>;
}

// The OTEL_* / OTLP_GRPC_ENDPOINT conventions are runtime-kit's (shared with turnpike-tunnel).
export { otlpEndpointFrom };

/**
 * Resource attributes: OTEL_RESOURCE_ATTRIBUTES (`k=v,k2=v2`, values percent-decoded), then
 * service.name from OTEL_SERVICE_NAME (else the attribute, else "turnpike-relay") and
 * service.version.
 */
export function resourceAttributesFrom(env: NodeJS.ProcessEnv, version: string): Attributes {
  return otelResourceAttributes(env, version, DEFAULT_SERVICE_NAME);
}

/**
 * Builds the metrics layer. With neither OTLP nor Prometheus configured it is counting only
 * (RelayStats + RelayTelemetry) and shutdown/forceFlush do nothing.
 */
export async function startMetrics(options: MetricsOptions = {}): Promise<RelayMetrics> {
  const env = options.env ?? process.env;
  const stats = options.stats ?? createRelayStats();
  const telemetry = createRelayTelemetry(stats);
  const version = options.serviceVersion ?? RELAY_VERSION;
  const otlpEndpoint = otlpEndpointFrom(env);
  const logger = options.logger;

  if (otlpEndpoint === undefined && options.prometheusListen === undefined) {
    return {
      stats,
      telemetry,
      otlpEndpoint: undefined,
      prometheusAddress: () => undefined,
      forceFlush: async () => {},
      shutdown: async () => {},
    };
  }

  // The SDK and exporters (gRPC among them) weigh ~50 MB of heap: load them only when metrics
  // are on, so a relay without a collector starts small.
  const [{ OTLPMetricExporter }, { PrometheusExporter }, { resourceFromAttributes }, sdkMetrics] =
    await Promise.all([
      import("@opentelemetry/exporter-metrics-otlp-grpc"),
      import("@opentelemetry/exporter-prometheus"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/sdk-metrics"),
    ]);
  sdk = sdkMetrics;
  const { MeterProvider, PeriodicExportingMetricReader } = sdkMetrics;
  if (logger !== undefined) routeOtelDiagnostics(logger);

  const resource = resourceFromAttributes(resourceAttributesFrom(env, version));
  const producer = new StatsHistogramProducer(stats, resource, version);
  const readers: IMetricReader[] = [];

  if (otlpEndpoint !== undefined) {
    const { intervalMs: interval, timeoutMs: timeout } = metricExportTiming(env);
    const exporter = new OTLPMetricExporter({ url: otlpEndpoint, timeoutMillis: timeout });
    // A collector that is down is one WARN line (and one when it is back), not a stack trace
    // per interval (runtime-kit's otlp-export.ts; routeOtelDiagnostics drops the SDK's own).
    if (logger !== undefined) {
      watchOtlpExport(exporter, new OtlpExportHealth({ endpoint: otlpEndpoint, logger }));
    }
    readers.push(
      new PeriodicExportingMetricReader({
        exporter,
        exportIntervalMillis: interval,
        exportTimeoutMillis: timeout,
        metricProducers: [producer],
      }),
    );
  }

  let prometheus: { exporter: PrometheusExporter; server: Server } | undefined;
  if (options.prometheusListen !== undefined) {
    // Our own http server (instead of the exporter's) so we control the bind address, learn the
    // real port when asked for port 0, and get listen errors as a rejected promise.
    const exporter = new PrometheusExporter({
      preventServerStart: true,
      metricProducers: [producer],
    });
    const server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if ((req.method === "GET" || req.method === "HEAD") && path === "/metrics") {
        exporter.getMetricsRequestHandler(req, res);
        return;
      }
      res.statusCode = 404;
      res.setHeader("content-type", "application/json");
      res.end('{"error":"not found"}');
    });
    await listen(server, options.prometheusListen);
    readers.push(exporter);
    prometheus = { exporter, server };
  }

  const provider = new MeterProvider({ resource, readers });
  const meter = provider.getMeter(SCOPE_NAME, version);
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  registerObservables(meter, stats, loopDelay, logger);

  let shutdownPromise: Promise<void> | undefined;
  return {
    stats,
    telemetry,
    otlpEndpoint,
    prometheusAddress: () => {
      const a = prometheus?.server.address() as AddressInfo | null | undefined;
      return a ? { ip: a.address, port: a.port, family: a.family === "IPv6" ? 6 : 4 } : undefined;
    },
    forceFlush: () => provider.forceFlush(),
    shutdown: () => {
      shutdownPromise ??= (async () => {
        loopDelay.disable();
        try {
          // MeterProvider.shutdown flushes the periodic reader once more before stopping it.
          await provider.shutdown();
        } catch (err) {
          logger?.warn("metrics shutdown failed", { err });
        }
        if (prometheus !== undefined) await closeServer(prometheus.server);
      })();
      return shutdownPromise;
    },
  };
}

function listen(server: Server, at: SocketAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: at.ip, port: at.port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

interface LoopDelay {
  readonly count: number;
  readonly max: number;
  percentile(p: number): number;
  reset(): void;
}

function registerObservables(
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
  const kernelPath = meter.createObservableGauge("turn.relay.kernel_path", {
    ...int,
    unit: "1",
    description: "The kernel data path (path: tc, or off); always 1",
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
    kernelPath,
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
    if (stats.kernelPath !== undefined) result.observe(kernelPath, 1, { path: stats.kernelPath });
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
 * Exports RelayStats' fixed-bucket histograms as cumulative OTLP histograms (see the header
 * comment for why a MetricProducer and not a Histogram instrument).
 */
/** @opentelemetry/sdk-metrics, loaded by startMetrics once metrics are enabled. */
let sdk: typeof import("@opentelemetry/sdk-metrics") | undefined;

class StatsHistogramProducer implements MetricProducer {
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
        aggregationTemporality: sdk!.AggregationTemporality.CUMULATIVE,
        dataPointType: sdk!.DataPointType.HISTOGRAM,
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
