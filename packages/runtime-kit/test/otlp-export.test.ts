import { OTLPMetricExporter } from "@opentelemetry/exporter-metrics-otlp-grpc";
import { MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { startOtlpReceiver } from "@turnpike/test-support/otlp-receiver";
import { freePort } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { describe, expect, it } from "vitest";
import { diagText, routeOtelDiagnostics } from "../src/otel.js";
import { exportErrorReason, OtlpExportHealth, watchOtlpExport } from "../src/otlp-export.js";
import { textLines } from "./text-lines.js";

const ENDPOINT = "http://127.0.0.1:4317";
const UNAVAILABLE = new Error(
  "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:4317 (2026-11-23T10:00:00.000Z). Resolution note: ",
);

describe("OTLP export health", () => {
  it("tells the first failure, then every ten minutes how many, then the recovery, once each", () => {
    const { lines, logger } = textLines();
    let now = 0;
    const health = new OtlpExportHealth({ endpoint: ENDPOINT, logger, clock: () => now });
    for (let i = 0; i < 10; i++, now += 60_000) health.failed(UNAVAILABLE);
    health.failed(UNAVAILABLE); // 10 minutes after the first
    health.failed(UNAVAILABLE);
    health.succeeded();
    health.succeeded();
    const reason =
      "14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:4317";
    expect(lines).toEqual([
      `2026-11-23T10:00:00.000Z WARN otlp export failed endpoint=${ENDPOINT} error="${reason}"`,
      `2026-11-23T10:00:00.000Z WARN otlp export still failing endpoint=${ENDPOINT} failures=11 error="${reason}"`,
      `2026-11-23T10:00:00.000Z INFO otlp export recovered endpoint=${ENDPOINT} failures=12`,
    ]);
  });

  it("tells a new outage after a recovery as a first failure again", () => {
    const { lines, logger } = textLines();
    const health = new OtlpExportHealth({ endpoint: ENDPOINT, logger, clock: () => 0 });
    health.failed(new Error("4 DEADLINE_EXCEEDED: Deadline exceeded"));
    health.succeeded();
    health.failed(UNAVAILABLE);
    expect(lines.map((l) => l.split(" ").slice(1, 6).join(" "))).toEqual([
      "WARN otlp export failed endpoint=http://127.0.0.1:4317",
      "INFO otlp export recovered endpoint=http://127.0.0.1:4317",
      "WARN otlp export failed endpoint=http://127.0.0.1:4317",
    ]);
  });

  it("shortens exceptions to their message, as the SDK's error handler passes them too", () => {
    expect(exportErrorReason("x".repeat(500))).toHaveLength(200);
    expect(exportErrorReason(undefined)).toBe("unknown");
    // @opentelemetry/core's loggingErrorHandler: every property, stack included, as JSON.
    const flattened = JSON.stringify({
      stack: `Error: PeriodicExportingMetricReader: metrics export failed\n    at currentRun (file:///x.mjs:1:1)`,
      message:
        "PeriodicExportingMetricReader: metrics export failed (error Error: 14 UNAVAILABLE: No connection established. Resolution note: )",
    });
    expect(diagText([flattened])).toBe(
      "PeriodicExportingMetricReader: metrics export failed (error 14 UNAVAILABLE: No connection established)",
    );
    expect(diagText(["Export failed:", new Error("boom\n    at x")])).toBe("Export failed: boom");
  });
});

describe("a watched OTLP exporter whose collector is down, then comes up", () => {
  it("logs one short WARN while exports fail and one INFO when they succeed again", async () => {
    // Nothing listens on the port yet: every export is refused.
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    const { lines, logger } = textLines();
    // The SDK's own reports (diag) reach the same log, as in the CLIs.
    await routeOtelDiagnostics(logger);
    const health = new OtlpExportHealth({ endpoint, logger });
    const exporter = watchOtlpExport(
      new OTLPMetricExporter({ url: endpoint, timeoutMillis: 300 }),
      health,
    );
    const provider = new MeterProvider({
      readers: [
        new PeriodicExportingMetricReader({
          exporter,
          exportIntervalMillis: 300,
          exportTimeoutMillis: 300,
        }),
      ],
    });
    provider.getMeter("test").createCounter("probe").add(1);
    let receiver: Awaited<ReturnType<typeof startOtlpReceiver>> | undefined;
    try {
      for (let i = 0; i < 100 && health.failures < 5; i++) await sleep(100);
      expect(health.failures).toBeGreaterThanOrEqual(5);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(
        new RegExp(`^\\S+ WARN otlp export failed endpoint=${endpoint} error="14 UNAVAILABLE: `),
      );
      expect(lines[0]).toContain(`ECONNREFUSED 127.0.0.1:${port}`);
      expect(lines[0]!.length).toBeLessThan(250);

      receiver = await startOtlpReceiver("127.0.0.1", port);
      // gRPC reconnects with backoff after refused connections: allow it some seconds.
      for (let i = 0; i < 300 && health.failures > 0; i++) await sleep(100);
      expect(lines.slice(1)).toEqual([
        expect.stringMatching(
          new RegExp(`^\\S+ INFO otlp export recovered endpoint=${endpoint} failures=\\d+$`),
        ),
      ]);
      await receiver.waitForMetric("probe");
    } finally {
      await provider.shutdown().catch(() => undefined);
      await receiver?.close();
    }
  });
});
