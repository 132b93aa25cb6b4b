import { KERNEL_PATH_STATS } from "@turnpike/kernel-path";
import {
  type OtlpReceiver,
  type ReceivedMetric,
  startOtlpReceiver,
} from "@turnpike/test-support/otlp-receiver";
import { afterEach, describe, expect, it } from "vitest";
import {
  METRIC_DOCS,
  otlpEndpointFrom,
  type RelayMetrics,
  renderMetricsTable,
  resourceAttributesFrom,
  startMetrics,
} from "../src/metrics.js";
import { PACKET_SIZE_BOUNDS, recordRelayed, relaySlot } from "../src/stats.js";

let receiver: OtlpReceiver | undefined;
let metrics: RelayMetrics | undefined;
afterEach(async () => {
  await metrics?.shutdown();
  await receiver?.close();
  metrics = undefined;
  receiver = undefined;
});

function point(m: ReceivedMetric | undefined, attrs: Record<string, unknown> = {}) {
  const p = m?.points.find((pt) => Object.entries(attrs).every(([k, v]) => pt.attributes[k] === v));
  if (p === undefined)
    throw new Error(
      `no point ${JSON.stringify(attrs)} in ${m?.name}: ${JSON.stringify(m?.points)}`,
    );
  return p;
}

describe("OTLP gRPC metrics export", () => {
  it("delivers relay counters, histograms and resource attributes to a real OTLP receiver", async () => {
    receiver = await startOtlpReceiver();
    metrics = await startMetrics({
      env: {
        OTLP_GRPC_ENDPOINT: receiver.endpoint,
        OTEL_SERVICE_NAME: "relay-under-test",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,cloud.region=eu%2Dwest-1",
        OTEL_METRIC_EXPORT_INTERVAL: "600000",
      },
      serviceVersion: "9.9.9",
    });
    expect(metrics.otlpEndpoint).toBe(`http://${receiver.endpoint}`);
    const { telemetry, stats } = metrics;

    telemetry.allocationCreated("udp", 4);
    telemetry.allocationCreated("udp", 4);
    telemetry.allocationCreated("tcp", 6);
    telemetry.allocationEnded("udp", 4, "expired", 700);
    telemetry.allocationEnded("tcp", 6, "deleted", 5);
    telemetry.response("allocate", "success");
    telemetry.response("allocate", "error", 401);
    telemetry.response("allocate", "error", 401);
    telemetry.response("binding", "success");
    telemetry.authFailure("bad-integrity");
    telemetry.drop("malformed", 5);
    telemetry.drop("no-permission");
    const c2p = relaySlot("client_to_peer", "udp");
    const p2c = relaySlot("peer_to_client", "udp");
    for (let i = 0; i < 10; i++) recordRelayed(stats, c2p, 100);
    for (let i = 0; i < 4; i++) recordRelayed(stats, p2c, 1400);
    stats.beforeCollect = () => {
      stats.permissionsActive = 7;
      stats.channelsActive = 3;
      stats.reservationsActive = 2;
      stats.legacyPinnedAccepted = 5;
      stats.bandwidthPauses = 11;
      // As an engine reads its thread's kernel pipe pool (stream/spliced-pipe.ts).
      stats.splicePipesMade = 9;
      stats.splicePipesLent = 2;
      stats.splicePipesIdle = 5;
    };
    stats.tcpSplice = true;
    stats.udpIo = "batch";
    // As the kernel data path's bindings report at collection (kernel/offload.ts).
    stats.kernelPath = "tc";
    stats.kernelRelayedPackets[0] = 3;
    stats.kernelRelayedBytes[0] = 360;
    // As the kernel program's own counters read at collection (the opener's handle).
    stats.kernelPathDatagrams[KERNEL_PATH_STATS.indexOf("relayed-to-peer")] = 3;
    stats.kernelPathDatagrams[KERNEL_PATH_STATS.indexOf("pass-checksum-offload")] = 2;
    await new Promise((r) => setTimeout(r, 60)); // let the event-loop monitor take samples

    await metrics.forceFlush();

    const active = await receiver.waitForMetric("turn.allocations.active");
    expect(active.resource).toMatchObject({
      "service.name": "relay-under-test",
      "service.version": "9.9.9",
      "deployment.environment": "test",
      "cloud.region": "eu-west-1",
    });
    expect(active.kind).toBe("sum");
    expect(active.isMonotonic).toBe(false);
    expect(point(active, { transport: "udp", family: "ipv4" }).value).toBe(1);
    expect(point(active, { transport: "tcp", family: "ipv6" }).value).toBe(0);
    expect(
      point(receiver.latest("turn.allocations.created"), { transport: "udp", family: "ipv4" })
        .value,
    ).toBe(2);
    expect(
      point(receiver.latest("turn.allocations.expired"), { transport: "udp", family: "ipv4" })
        .value,
    ).toBe(1);
    expect(
      point(receiver.latest("turn.allocations.deleted"), { transport: "tcp", family: "ipv6" })
        .value,
    ).toBe(1);

    // Every documented instrument arrives, and nothing undocumented does.
    const exported = new Set(
      receiver
        .metrics()
        .filter((m) => m.request === active.request)
        .map((m) => m.name),
    );
    expect([...exported].sort()).toEqual(METRIC_DOCS.map((d) => d.name).sort());

    const responses = receiver.latest("stun.responses");
    expect(point(responses, { method: "allocate", class: "error", error_code: 401 }).value).toBe(2);
    expect(point(responses, { method: "binding", class: "success" }).value).toBe(1);
    expect(point(responses, { method: "binding", class: "success" }).attributes).not.toHaveProperty(
      "error_code",
    );

    const packets = receiver.latest("turn.relayed.packets");
    expect(packets?.isMonotonic).toBe(true);
    const userspace = (direction: string) => ({ direction, transport: "udp", path: "userspace" });
    const kernel = (direction: string) => ({ direction, transport: "udp", path: "kernel" });
    expect(point(packets, userspace("client_to_peer")).value).toBe(10);
    expect(point(packets, userspace("peer_to_client")).value).toBe(4);
    expect(point(packets, kernel("client_to_peer")).value).toBe(3);
    expect(point(packets, kernel("peer_to_client")).value).toBe(0);
    const bytes = receiver.latest("turn.relayed.bytes");
    expect(bytes?.unit).toBe("By");
    expect(point(bytes, userspace("client_to_peer")).value).toBe(1000);
    expect(point(bytes, userspace("peer_to_client")).value).toBe(5600);
    expect(point(bytes, kernel("client_to_peer")).value).toBe(360);
    expect(point(receiver.latest("turn.relay.kernel_path"), { path: "tc" }).value).toBe(1);
    const outcomes = receiver.latest("turn.relay.kernel_path.datagrams");
    expect(outcomes?.isMonotonic).toBe(true);
    expect(point(outcomes, { outcome: "relayed-to-peer" }).value).toBe(3);
    expect(point(outcomes, { outcome: "pass-checksum-offload" }).value).toBe(2);
    expect(point(outcomes, { outcome: "pass-no-neighbour" }).value).toBe(0);

    const sizes = receiver.latest("turn.packet.size");
    expect(sizes?.kind).toBe("histogram");
    expect(sizes?.temporality).toBe("AGGREGATION_TEMPORALITY_CUMULATIVE");
    const sizePoint = point(sizes);
    expect(sizePoint.count).toBe(14);
    expect(sizePoint.sum).toBe(6600);
    expect(sizePoint.explicitBounds).toEqual([...PACKET_SIZE_BOUNDS]);
    expect(sizePoint.bucketCounts?.[1]).toBe(10); // 64 < 100 <= 128
    expect(sizePoint.bucketCounts?.[6]).toBe(4); // 1280 < 1400 <= 1500
    const lifetime = point(receiver.latest("turn.allocation.lifetime"));
    expect(lifetime).toMatchObject({ count: 2, sum: 705 });

    expect(point(receiver.latest("turn.permissions.active")).value).toBe(7);
    expect(point(receiver.latest("turn.channels.active")).value).toBe(3);
    expect(point(receiver.latest("turn.reservations.active")).value).toBe(2);
    expect(point(receiver.latest("turn.auth.legacy_pinned")).value).toBe(5);
    expect(point(receiver.latest("turn.bandwidth.pauses")).value).toBe(11);
    const pipes = receiver.latest("turn.relay.splice_pool.pipes");
    expect(point(pipes, { state: "lent" }).value).toBe(2);
    expect(point(pipes, { state: "idle" }).value).toBe(5);
    expect(point(receiver.latest("turn.relay.splice_pool.made")).value).toBe(9);
    expect(point(receiver.latest("turn.auth.failures"), { reason: "bad-integrity" }).value).toBe(1);
    expect(point(receiver.latest("turn.dropped.packets"), { reason: "malformed" }).value).toBe(5);
    expect(point(receiver.latest("nodejs.eventloop.delay.p99")).value).toBeGreaterThan(0);
    expect(
      point(receiver.latest("process.cpu.time"), { "cpu.mode": "user" }).value,
    ).toBeGreaterThan(0);

    // Cumulative: a later export carries the totals so far.
    for (let i = 0; i < 5; i++) recordRelayed(stats, c2p, 50);
    await metrics.forceFlush();
    const later = await receiver.waitForMetric(
      "turn.relayed.packets",
      (m) => m.request > packets!.request,
    );
    expect(point(later, userspace("client_to_peer")).value).toBe(15);
    expect(point(receiver.latest("turn.packet.size")).count).toBe(19);
  });

  it("exports on its own at OTEL_METRIC_EXPORT_INTERVAL and once more at shutdown", async () => {
    receiver = await startOtlpReceiver();
    metrics = await startMetrics({
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_METRIC_EXPORT_INTERVAL: "200" },
    });
    metrics.telemetry.drop("policy");
    const first = await receiver.waitForMetric("turn.dropped.packets", undefined, 5000);
    expect(first.resource["service.name"]).toBe("turnpike-relay");
    metrics.telemetry.drop("policy", 41);
    await metrics.shutdown();
    expect(point(receiver.latest("turn.dropped.packets"), { reason: "policy" }).value).toBe(42);
  });

  it("counts into RelayStats with exporting disabled", async () => {
    metrics = await startMetrics({ env: {} });
    expect(metrics.otlpEndpoint).toBeUndefined();
    metrics.telemetry.allocationCreated("udp", 4);
    metrics.telemetry.drop("malformed");
    expect(Array.from(metrics.stats.allocationsCreated).reduce((a, b) => a + b)).toBe(1);
    expect(metrics.stats.drops.get("malformed")).toBe(1);
    await metrics.forceFlush();
  });

  it("serves the same instruments to Prometheus on --prometheus-listen", async () => {
    metrics = await startMetrics({
      env: {},
      prometheusListen: { ip: "127.0.0.1", port: 0, family: 4 },
    });
    recordRelayed(metrics.stats, relaySlot("peer_to_client", "tcp"), 300);
    metrics.telemetry.response("allocate", "error", 486);
    const addr = metrics.prometheusAddress();
    const res = await fetch(`http://127.0.0.1:${addr?.port}/metrics`);
    const text = await res.text();
    expect(res.status).toBe(200);
    expect(text).toMatch(
      /turn_relayed_packets(_total)?\{[^}]*direction="peer_to_client"[^}]*transport="tcp"[^}]*\} 1\b/,
    );
    expect(text).toMatch(/stun_responses(_total)?\{[^}]*error_code="486"[^}]*\} 1\b/);
    expect(text).toMatch(/turn_packet_size(_bytes)?_bucket\{[^}]*le="512"[^}]*\} 1\b/);
    expect((await fetch(`http://127.0.0.1:${addr?.port}/other`)).status).toBe(404);
  });
});

describe("metrics configuration", () => {
  it("picks the metrics-specific endpoint, then Firezone's, then the generic one", () => {
    expect(otlpEndpointFrom({})).toBeUndefined();
    expect(otlpEndpointFrom({ OTLP_GRPC_ENDPOINT: "collector:4317" })).toBe(
      "http://collector:4317",
    );
    expect(
      otlpEndpointFrom({ OTLP_GRPC_ENDPOINT: "a:1", OTEL_EXPORTER_OTLP_ENDPOINT: "https://b:2" }),
    ).toBe("http://a:1");
    expect(
      otlpEndpointFrom({
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "https://m:3",
        OTLP_GRPC_ENDPOINT: "a:1",
      }),
    ).toBe("https://m:3");
    expect(
      otlpEndpointFrom({ OTLP_GRPC_ENDPOINT: "a:1", OTEL_SDK_DISABLED: "true" }),
    ).toBeUndefined();
  });

  it("parses OTEL_RESOURCE_ATTRIBUTES and lets OTEL_SERVICE_NAME win", () => {
    expect(
      resourceAttributesFrom(
        { OTEL_RESOURCE_ATTRIBUTES: "service.name=x, team=net%20ops,broken,=v" },
        "1.0.0",
      ),
    ).toEqual({ "service.name": "x", team: "net ops", "service.version": "1.0.0" });
    expect(
      resourceAttributesFrom(
        { OTEL_RESOURCE_ATTRIBUTES: "service.name=x", OTEL_SERVICE_NAME: "y" },
        "1",
      ),
    ).toMatchObject({ "service.name": "y" });
  });

  it("renders the README metrics table from METRIC_DOCS", () => {
    const table = renderMetricsTable();
    for (const m of METRIC_DOCS) expect(table).toContain(`\`${m.name}\``);
  });
});
