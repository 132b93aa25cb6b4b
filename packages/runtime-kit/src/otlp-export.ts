// OTLP metric exports as an operator wants to read about them. A collector that is down fails
// every export, once per interval, for as long as it is down; the SDK reports each failure as a
// JSON-encoded exception with its stack (over a thousand characters). Here the outcome of each
// export is watched at the exporter instead, and told in one short line per change:
//
//   WARN otlp export failed endpoint=http://127.0.0.1:4317 error="14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:4317"
//   WARN otlp export still failing endpoint=... failures=10 error="..."      (every 10 minutes)
//   INFO otlp export recovered endpoint=... failures=12
//
// Once an exporter is watched, routeOtelDiagnostics (otel.ts) drops the SDK's own report of the
// same failures.

import type { Logger } from "./log.js";

/** What an OTLP exporter hands its callback (@opentelemetry/core's ExportResult). */
export interface ExportResultLike {
  /** 0: success (ExportResultCode.SUCCESS); anything else failed. */
  readonly code: number;
  readonly error?: unknown;
}

/** The part of a push exporter that is watched (OTLPMetricExporter has it). */
export interface WatchableExporter {
  // biome-ignore lint/suspicious/noExplicitAny: the exporter's own item type passes through
  export(items: any, resultCallback: (result: ExportResultLike) => void): void;
}

export interface ExportHealthOptions {
  /** The collector's URL, named on every line. */
  readonly endpoint: string;
  readonly logger: Logger;
  /** How often a failure that persists is reported again, with the count. Default 10 min. */
  readonly reminderMs?: number;
  /** Monotonic clock in ms. Default performance.now. */
  readonly clock?: () => number;
}

/** Failures and recoveries of one exporter's exports, logged when they change. */
export class OtlpExportHealth {
  /** Failed exports since the last success (0 while healthy). */
  failures = 0;
  private lastLineAt = 0;
  private lastReason = "";
  private readonly reminderMs: number;
  private readonly clock: () => number;

  constructor(private readonly options: ExportHealthOptions) {
    this.reminderMs = options.reminderMs ?? 600_000;
    this.clock = options.clock ?? (() => performance.now());
  }

  failed(error: unknown): void {
    const now = this.clock();
    this.failures++;
    this.lastReason = exportErrorReason(error);
    const { endpoint, logger } = this.options;
    if (this.failures === 1) {
      logger.warn("otlp export failed", { endpoint, error: this.lastReason });
      this.lastLineAt = now;
    } else if (now - this.lastLineAt >= this.reminderMs) {
      logger.warn("otlp export still failing", {
        endpoint,
        failures: this.failures,
        error: this.lastReason,
      });
      this.lastLineAt = now;
    }
  }

  succeeded(): void {
    if (this.failures === 0) return;
    this.options.logger.info("otlp export recovered", {
      endpoint: this.options.endpoint,
      failures: this.failures,
    });
    this.failures = 0;
  }
}

let watched = 0;

/** True once some exporter is watched: its failures need no second report from diag. */
export function otlpExportWatched(): boolean {
  return watched > 0;
}

/**
 * Reports every export's outcome of `exporter` to `health` (the exporter itself is changed, so
 * that a reader holding it needs nothing else) and returns it.
 */
export function watchOtlpExport<E extends WatchableExporter>(
  exporter: E,
  health: OtlpExportHealth,
): E {
  const exportOnce = exporter.export.bind(exporter);
  exporter.export = (items, resultCallback) =>
    exportOnce(items, (result) => {
      if (result.code === 0) health.succeeded();
      else health.failed(result.error);
      resultCallback(result);
    });
  watched++;
  return exporter;
}

/**
 * An export error as a short reason: its message's first line, without the nested "Error: "
 * prefixes, timestamps and the empty "Resolution note:" gRPC appends, at most 200 characters.
 */
export function exportErrorReason(error: unknown): string {
  const raw =
    error instanceof Error ? error.message : error === undefined ? "unknown" : String(error);
  const text = (raw.split("\n")[0] ?? "")
    .replace(/\bError: /g, "")
    .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)/g, "")
    .replace(/[.\s]*Resolution note:\s*(?=\)|$)/g, "")
    .replace(/[.\s]+$/, "")
    .trim();
  return text.length > 200 ? `${text.slice(0, 199)}…` : text || "unknown";
}
