// OpenTelemetry environment conventions shared by turnpike-relay and turnpike-tunnel. Only
// @opentelemetry/api is used here: the SDK and exporters stay with the packages that load them.
//
// Export is enabled by OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTLP_GRPC_ENDPOINT (the Firezone
// relay's variable, "host:port" or a URL) or OTEL_EXPORTER_OTLP_ENDPOINT: first set wins, in that
// order (metrics-specific, Firezone, generic); OTEL_SDK_DISABLED=true turns it off.
//
// Nothing here loads OpenTelemetry at import: a relay or a connector without a collector never
// loads it at all (its API included; routeOtelDiagnostics imports it when export is on).

import type { Attributes, DiagAPI, DiagLogLevel } from "@opentelemetry/api";
import type { Logger } from "./log.js";
import { exportErrorReason, otlpExportWatched } from "./otlp-export.js";

/** The OTLP gRPC endpoint as a URL, or undefined when OTLP export is not configured. */
export function otlpEndpointFrom(env: NodeJS.ProcessEnv): string | undefined {
  if (isTrue(env.OTEL_SDK_DISABLED)) return undefined;
  const raw = [
    env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    env.OTLP_GRPC_ENDPOINT,
    env.OTEL_EXPORTER_OTLP_ENDPOINT,
  ].find((v) => v !== undefined && v.trim() !== "");
  if (raw === undefined) return undefined;
  const text = raw.trim();
  // Firezone's OTLP_GRPC_ENDPOINT is "host:port"; gRPC exporters want a URL.
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`;
}

function isTrue(v: string | undefined): boolean {
  return v !== undefined && v.trim().toLowerCase() === "true";
}

/**
 * Resource attributes: OTEL_RESOURCE_ATTRIBUTES (`k=v,k2=v2`, values percent-decoded), then
 * service.name from OTEL_SERVICE_NAME (else the attribute, else `defaultServiceName`) and
 * service.version (else `version`).
 */
export function resourceAttributesFrom(
  env: NodeJS.ProcessEnv,
  version: string,
  defaultServiceName: string,
): Attributes {
  const attrs: Attributes = {};
  for (const pair of (env.OTEL_RESOURCE_ATTRIBUTES ?? "").split(",")) {
    const eq = pair.indexOf("=");
    if (eq <= 0) continue;
    const key = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (key === "") continue;
    try {
      attrs[key] = decodeURIComponent(value);
    } catch {
      // The spec says to discard malformed entries rather than fail.
    }
  }
  const serviceName = env.OTEL_SERVICE_NAME?.trim();
  if (serviceName) attrs["service.name"] = serviceName;
  else if (typeof attrs["service.name"] !== "string") attrs["service.name"] = defaultServiceName;
  if (attrs["service.version"] === undefined) attrs["service.version"] = version;
  return attrs;
}

/**
 * OTEL_METRIC_EXPORT_INTERVAL (ms, default 60000) and OTEL_METRIC_EXPORT_TIMEOUT (ms, default
 * 30000, capped at the interval: the SDK rejects a longer timeout). Bad values mean the default.
 */
export function metricExportTiming(env: NodeJS.ProcessEnv): {
  intervalMs: number;
  timeoutMs: number;
} {
  const intervalMs = positiveInt(env.OTEL_METRIC_EXPORT_INTERVAL, 60_000);
  const timeoutMs = Math.min(positiveInt(env.OTEL_METRIC_EXPORT_TIMEOUT, 30_000), intervalMs);
  return { intervalMs, timeoutMs };
}

function positiveInt(text: string | undefined, fallback: number): number {
  const n = text === undefined ? Number.NaN : Number(text);
  return Number.isInteger(n) && n > 0 ? n : fallback;
}

let diagRouted: Promise<void> | undefined;

/**
 * Exporter failures (collector down, timeouts) reach OTel's diag logger; without one they
 * vanish. Routes warnings and errors into `logger` (component=otel) as one short line each (an
 * exception's message, never its stack), rate-limited: a dead collector must not flood logs.
 * The metric reader's report of a failed export is left out once the exporter is watched
 * (watchOtlpExport), which tells failures and recovery with the endpoint. Process-wide (OTel's
 * diag is global): the first call wins.
 */
export function routeOtelDiagnostics(logger: Logger): Promise<void> {
  diagRouted ??= import("@opentelemetry/api").then(({ DiagLogLevel, diag }) =>
    routeDiag(diag, DiagLogLevel.WARN, logger),
  );
  return diagRouted;
}

function routeDiag(diag: DiagAPI, warnLevel: DiagLogLevel, logger: Logger): void {
  const limited = logger.child({ component: "otel" }).rateLimited({ perWindow: 5 });
  const report = (key: string, args: unknown[]): void => {
    const text = diagText(args);
    if (otlpExportWatched() && READER_EXPORT_FAILURE.test(text)) return;
    limited.warn(key, text);
  };
  diag.setLogger(
    {
      error: (...args) => report("otel-error", args),
      warn: (...args) => report("otel-warn", args),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    { logLevel: warnLevel, suppressOverrideMessage: true },
  );
}

/** What PeriodicExportingMetricReader says about an export that failed, timed out or threw. */
const READER_EXPORT_FAILURE = /^PeriodicExportingMetricReader: metrics export /;

/**
 * A diag call's arguments as one short line. The SDK's global error handler passes an exception
 * as the JSON of all its properties, stack included: of that, the message.
 */
export function diagText(args: readonly unknown[]): string {
  return args
    .map((a) => {
      if (a instanceof Error) return exportErrorReason(a);
      if (typeof a === "string" && a.startsWith("{")) {
        try {
          const o = JSON.parse(a) as { message?: unknown };
          if (typeof o.message === "string") return exportErrorReason(o.message);
        } catch {
          // not JSON after all: as it is
        }
      }
      return String(a);
    })
    .join(" ")
    .split("\n")[0]!
    .slice(0, 300);
}
