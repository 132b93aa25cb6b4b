// OpenTelemetry metrics for turnpike-tunnel, with the relay's conventions (relay-server's
// metrics.ts): enabled by OTLP_GRPC_ENDPOINT (Firezone's variable) or the standard
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT; service.name defaults to
// "turnpike-tunnel"; OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_METRIC_EXPORT_INTERVAL and
// OTEL_SDK_DISABLED are honoured. Every instrument is observable: the data path only bumps plain
// numbers (TunnelCounters), read at collection time.
//
// | name                        | kind                 | unit         | attributes |
// |-----------------------------|----------------------|--------------|------------|
// | tunnel.tunnels              | UpDownCounter (obs.) | {tunnel}     | state, protocol |
// | tunnel.reconnects           | Counter (obs.)       | {reconnect}  | - |
// | tunnel.connections.opened   | Counter (obs.)       | {connection} | - |
// | tunnel.connections.failed   | Counter (obs.)       | {connection} | - |
// | tunnel.connections.active   | UpDownCounter (obs.) | {connection} | protocol |
// | tunnel.bytes                | Counter (obs.)       | By           | direction (in = peer to target, out = target to peer) |
// | tunnel.splice_pool.pipes    | Gauge (obs.)         | {pipe}       | state (lent/idle) |
// | tunnel.splice_pool.made     | Counter (obs.)       | {pipe}       | - |
//
// The last two, where TCP pipes are spliced (the native module loaded): the kernel pipes
// udp-batch's pool lends a direction with bytes in flight and keeps idle (at most 8), each 16
// pages of the user's pipe allowance (fs.pipe-user-pages-soft) while it exists.
// The SDK, the gRPC exporter and the API are imported only once OTLP is configured: together
// they are most of what the connector would otherwise hold idle (bench/README.md, "Footprint").

import type { Attributes } from "@opentelemetry/api";
import type { Logger } from "@turnpike/runtime-kit";
import {
  metricExportTiming,
  OtlpExportHealth,
  resourceAttributesFrom as otelResourceAttributes,
  otlpEndpointFrom,
  routeOtelDiagnostics,
  watchOtlpExport,
} from "@turnpike/runtime-kit";
import { splicePipePoolCounters } from "@turnpike/udp-batch";
import { TUNNEL_VERSION } from "./config/index.js";
import { TUNNEL_STATES } from "./lifecycle.js";
import type { TunnelSupervisor } from "./supervisor.js";
import { spliceAvailable } from "./tunnel/spliced-pipe.js";

export const DEFAULT_SERVICE_NAME = "turnpike-tunnel";

export interface TunnelMetrics {
  readonly otlpEndpoint: string | undefined;
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

// The OTEL_* / OTLP_GRPC_ENDPOINT conventions are runtime-kit's (shared with turnpike-relay).
export { otlpEndpointFrom };

export function resourceAttributesFrom(env: NodeJS.ProcessEnv, version: string): Attributes {
  return otelResourceAttributes(env, version, DEFAULT_SERVICE_NAME);
}

export async function startMetrics(
  supervisor: TunnelSupervisor,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<TunnelMetrics> {
  const endpoint = otlpEndpointFrom(env);
  if (endpoint === undefined) {
    return { otlpEndpoint: undefined, forceFlush: async () => {}, shutdown: async () => {} };
  }
  const [{ ValueType }, { OTLPMetricExporter }, { resourceFromAttributes }, sdkMetrics] =
    await Promise.all([
      import("@opentelemetry/api"),
      import("@opentelemetry/exporter-metrics-otlp-grpc"),
      import("@opentelemetry/resources"),
      import("@opentelemetry/sdk-metrics"),
    ]);
  const { MeterProvider, PeriodicExportingMetricReader } = sdkMetrics;
  const { intervalMs: interval, timeoutMs: timeout } = metricExportTiming(env);
  // A collector that is down is one WARN line and its return one INFO line (runtime-kit's
  // otlp-export.ts); the SDK's own diagnostics go to the same log, without that repetition.
  await routeOtelDiagnostics(logger);
  const exporter = watchOtlpExport(
    new OTLPMetricExporter({ url: endpoint, timeoutMillis: timeout }),
    new OtlpExportHealth({ endpoint, logger }),
  );
  const provider = new MeterProvider({
    resource: resourceFromAttributes(resourceAttributesFrom(env, TUNNEL_VERSION)),
    readers: [
      new PeriodicExportingMetricReader({
        exporter,
        exportIntervalMillis: interval,
        exportTimeoutMillis: timeout,
      }),
    ],
  });
  const meter = provider.getMeter("turnpike-tunnel", TUNNEL_VERSION);
  const int = { valueType: ValueType.INT };
  const tunnels = meter.createObservableUpDownCounter("tunnel.tunnels", {
    ...int,
    unit: "{tunnel}",
    description: "Tunnels (service x relay address) by state",
  });
  const reconnects = meter.createObservableCounter("tunnel.reconnects", {
    ...int,
    unit: "{reconnect}",
    description: "Times a tunnel lost its relay or allocation and went to backoff",
  });
  const opened = meter.createObservableCounter("tunnel.connections.opened", {
    ...int,
    unit: "{connection}",
    description: "Peer connections (TCP) or peer flows (UDP) opened towards targets",
  });
  const failed = meter.createObservableCounter("tunnel.connections.failed", {
    ...int,
    unit: "{connection}",
    description: "Peer connections that failed (bind refused, target refused)",
  });
  const active = meter.createObservableUpDownCounter("tunnel.connections.active", {
    ...int,
    unit: "{connection}",
    description: "Open peer connections / flows",
  });
  const bytes = meter.createObservableCounter("tunnel.bytes", {
    ...int,
    unit: "By",
    description: "Payload bytes relayed (in: peer to target, out: target to peer)",
  });
  const splicePipes = meter.createObservableGauge("tunnel.splice_pool.pipes", {
    ...int,
    unit: "{pipe}",
    description: "Kernel pipes of spliced TCP pipes, by state: lent or idle",
  });
  const splicePipesMade = meter.createObservableCounter("tunnel.splice_pool.made", {
    ...int,
    unit: "{pipe}",
    description: "Kernel pipes made for spliced TCP pipes",
  });
  const spliced = spliceAvailable();
  meter.addBatchObservableCallback(
    (result) => {
      const rows = supervisor.list();
      for (const protocol of ["tcp", "udp"] as const) {
        for (const state of TUNNEL_STATES) {
          const n = rows.filter((r) => r.protocol === protocol && r.state === state).length;
          result.observe(tunnels, n, { state, protocol });
        }
        const conns = rows
          .filter((r) => r.protocol === protocol)
          .reduce((a, r) => a + r.openConnections, 0);
        result.observe(active, conns, { protocol });
      }
      const c = supervisor.counters;
      result.observe(reconnects, c.reconnects);
      result.observe(opened, c.connectionsOpened);
      result.observe(failed, c.connectionsFailed);
      result.observe(bytes, c.bytesIn, { direction: "in" });
      result.observe(bytes, c.bytesOut, { direction: "out" });
      // The pool is this thread's, where every pipe of the tunnel runs.
      if (spliced) {
        const pool = splicePipePoolCounters();
        result.observe(splicePipes, pool.lent, { state: "lent" });
        result.observe(splicePipes, pool.idle, { state: "idle" });
        result.observe(splicePipesMade, pool.made);
      }
    },
    [tunnels, reconnects, opened, failed, active, bytes, splicePipes, splicePipesMade],
  );
  let done: Promise<void> | undefined;
  return {
    otlpEndpoint: endpoint,
    forceFlush: () => provider.forceFlush(),
    shutdown: () => {
      done ??= provider.shutdown().catch((err: unknown) => {
        logger.warn("metrics shutdown failed", {
          err: err instanceof Error ? err.message : String(err),
        });
      });
      return done;
    },
  };
}
