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
// Data path cost: the driver only bumps plain numbers in RelayStats (stats.ts), whether or not
// anything exports them. Every instrument (metric-instruments.ts, loaded with the SDK only once
// OTLP or Prometheus is configured) is read at collection time:
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
// | turn.relay.socket_pool.sockets | Counter (obs.)      | {socket}      | source (pool/inline) |
// | turn.relay.socket_pool.held  | Gauge (obs.)          | {socket}      | family (ipv4/ipv6) |
// | turn.relay.splice_pool.pipes | Gauge (obs.)          | {pipe}        | state (lent/idle) |
// | turn.relay.splice_pool.made  | Counter (obs.)        | {pipe}        | - |
// | turn.relay.kernel_path       | Gauge (obs.)          | 1             | path (tc/off) |
// | turn.relay.kernel_path.datagrams | Counter (obs.)    | {datagram}    | outcome (relayed-*, rate-limited, error, pass-*) |
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

import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Attributes } from "@opentelemetry/api";
import type { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import type { IMetricReader } from "@opentelemetry/sdk-metrics";
import type { Logger } from "@turnpike/runtime-kit";
import {
  metricExportTiming,
  nodeHttp,
  OtlpExportHealth,
  resourceAttributesFrom as otelResourceAttributes,
  otlpEndpointFrom,
  routeOtelDiagnostics,
  watchOtlpExport,
} from "@turnpike/runtime-kit";
import type { SocketAddress } from "./config/types.js";
import { createRelayStats, createRelayTelemetry, type RelayStats } from "./stats.js";
import type { RelayMetricsSink } from "./types.js";
import { RELAY_VERSION } from "./version.js";

export type { RelayStats, RelayTelemetry } from "./stats.js";

export const DEFAULT_SERVICE_NAME = "turnpike-relay";

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

  // Nothing of OpenTelemetry is loaded until here, and then only the exporter configured: the
  // SDK with the gRPC exporter is most of an idle relay's heap (bench/README.md, "Footprint").
  const [
    { resourceFromAttributes },
    { MeterProvider, PeriodicExportingMetricReader },
    instruments,
  ] = await Promise.all([
    import("@opentelemetry/resources"),
    import("@opentelemetry/sdk-metrics"),
    import("./metric-instruments.js"),
  ]);
  if (logger !== undefined) await routeOtelDiagnostics(logger);

  const resource = resourceFromAttributes(resourceAttributesFrom(env, version));
  const producer = new instruments.StatsHistogramProducer(stats, resource, version);
  const readers: IMetricReader[] = [];

  if (otlpEndpoint !== undefined) {
    const { OTLPMetricExporter } = await import("@opentelemetry/exporter-metrics-otlp-grpc");
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
    const { PrometheusExporter } = await import("@opentelemetry/exporter-prometheus");
    const { createServer } = nodeHttp();
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
  const meter = provider.getMeter(instruments.SCOPE_NAME, version);
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  instruments.registerObservables(meter, stats, loopDelay, logger);

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
