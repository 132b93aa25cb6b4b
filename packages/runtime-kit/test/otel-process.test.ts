import { describe, expect, it } from "vitest";
import { createLogger } from "../src/log.js";
import { ConfigError } from "../src/option-values.js";
import { metricExportTiming, otlpEndpointFrom, resourceAttributesFrom } from "../src/otel.js";
import { asOutput, parseOrReport, withTimeout } from "../src/process.js";

describe("OTLP environment", () => {
  it("picks the metrics endpoint, then Firezone's, then the generic one, as a URL", () => {
    expect(otlpEndpointFrom({})).toBeUndefined();
    expect(otlpEndpointFrom({ OTLP_GRPC_ENDPOINT: "collector:4317" })).toBe(
      "http://collector:4317",
    );
    expect(
      otlpEndpointFrom({
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://generic:4317",
        OTLP_GRPC_ENDPOINT: " ",
      }),
    ).toBe("https://generic:4317");
    expect(
      otlpEndpointFrom({
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://m:4317",
        OTLP_GRPC_ENDPOINT: "f:4317",
      }),
    ).toBe("http://m:4317");
    expect(otlpEndpointFrom({ OTLP_GRPC_ENDPOINT: "f:4317", OTEL_SDK_DISABLED: "TRUE" })).toBe(
      undefined,
    );
  });

  it("reads resource attributes, discarding malformed entries, with the caller's defaults", () => {
    const env = { OTEL_RESOURCE_ATTRIBUTES: "region=eu%20west,=x,bad,broken=%E0%A4%A" };
    expect(resourceAttributesFrom(env, "1.2.3", "svc")).toEqual({
      region: "eu west",
      "service.name": "svc",
      "service.version": "1.2.3",
    });
    expect(
      resourceAttributesFrom(
        { OTEL_RESOURCE_ATTRIBUTES: "service.name=a,service.version=9", OTEL_SERVICE_NAME: "b" },
        "1",
        "svc",
      ),
    ).toEqual({ "service.name": "b", "service.version": "9" });
  });

  it("caps the export timeout at the interval and ignores bad values", () => {
    expect(metricExportTiming({})).toEqual({ intervalMs: 60_000, timeoutMs: 30_000 });
    expect(
      metricExportTiming({ OTEL_METRIC_EXPORT_INTERVAL: "1000", OTEL_METRIC_EXPORT_TIMEOUT: "x" }),
    ).toEqual({ intervalMs: 1000, timeoutMs: 1000 });
  });
});

describe("process lifecycle", () => {
  it("reports a ConfigError as one line naming the program, and lets other errors through", () => {
    const lines: string[] = [];
    const bad = parseOrReport(
      "kit",
      () => {
        throw new ConfigError("--port must be 1..65535");
      },
      (l) => lines.push(l),
    );
    expect(bad).toBeUndefined();
    expect(lines).toEqual(["kit: --port must be 1..65535"]);
    expect(
      parseOrReport(
        "kit",
        () => 7,
        () => {},
      ),
    ).toBe(7);
    expect(() =>
      parseOrReport(
        "kit",
        () => {
          throw new TypeError("bug");
        },
        () => {},
      ),
    ).toThrow(TypeError);
    expect(asOutput("0.1.0")).toBe("0.1.0\n");
    expect(asOutput("help\n")).toBe("help\n");
  });

  it("stops waiting after the timeout, and never rejects", async () => {
    const started = performance.now();
    await withTimeout(new Promise(() => {}), 50);
    expect(performance.now() - started).toBeGreaterThanOrEqual(45);
    await expect(withTimeout(Promise.reject(new Error("x")), 10_000)).resolves.toBeUndefined();
  });
});

describe("logger", () => {
  it("rate-limits per key and reports the suppressed count on flush", () => {
    const lines: string[] = [];
    const logger = createLogger({ format: "json", write: (l) => lines.push(l) });
    const limited = logger.rateLimited({ perWindow: 2, clock: () => 0 });
    for (let i = 0; i < 5; i++) limited.warn("bad-packet", "dropped a bad packet", { i });
    limited.flush();
    const records = lines.map((l) => JSON.parse(l));
    expect(records.map((r) => r.msg)).toEqual([
      "dropped a bad packet",
      "dropped a bad packet",
      "suppressed repeated log lines",
    ]);
    expect(records[2]).toMatchObject({ key: "bad-packet", suppressed: 3 });
  });
});
