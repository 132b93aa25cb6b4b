// OTLP metrics of turnpike-tunnel, received by a real OTLP gRPC receiver (test-support) after
// real traffic through turnpike-relay and a relay restart: tunnels by state, reconnects,
// connections, bytes and the spliced pipes' kernel pipes, with service.name turnpike-tunnel.
// Loopback only, bounded waits.
import { randomBytes } from "node:crypto";
import {
  type OtlpReceiver,
  type ReceivedMetric,
  startOtlpReceiver,
} from "@turnpike/test-support/otlp-receiver";
import { freePort } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spliceAvailable } from "../src/tunnel/spliced-pipe.js";
import {
  allReady,
  echoUdp,
  parseAddress,
  sha256,
  startTunnel,
  tcpRoundTrip,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-metrics-secret";
const DATAGRAMS = 200;
const DATAGRAM_SIZE = 200;
const TCP_BYTES = 256 * 1024;

/** The value of the point whose attributes include `attrs` (undefined when there is none). */
function metricValue(m: ReceivedMetric, attrs: Record<string, string> = {}): number | undefined {
  return m.points.find((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))
    ?.value;
}

describe("turnpike-tunnel exports OTLP metrics", () => {
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });
  afterAll(async () => {
    await receiver?.close();
  });
  const f = useTunnelFixture({
    token: TOKEN,
    tunnelArgs: ["--keepalive", "1", "--backoff-base", "0.1", "--backoff-max", "1"],
    tunnelEnv: () => ({
      TURNPIKE_TOKEN: TOKEN,
      OTLP_GRPC_ENDPOINT: receiver.endpoint,
      OTEL_METRIC_EXPORT_INTERVAL: "300",
    }),
  });

  it("reports tunnels by state, reconnects, connections and bytes after real traffic", async () => {
    const tunnel = f.tunnel;
    const rows = await tunnel.list();
    const platform = await udpPeer("127.0.0.1");
    const u = parseAddress(rows.find((r) => r.name === "u")!.relayedAddress!);
    expect(await echoUdp(platform, u, DATAGRAMS, { size: DATAGRAM_SIZE })).toBe(DATAGRAMS);
    platform.close();
    const data = randomBytes(TCP_BYTES);
    const t = parseAddress(rows.find((r) => r.name === "t")!.relayedAddress!);
    expect(sha256(await tcpRoundTrip(t, data))).toBe(sha256(data));

    // Lose the relay once: both tunnels reconnect.
    await f.stopRelay();
    await tunnel.waitFor(
      (r) => r.every((x) => x.reconnects >= 1),
      10_000,
      "both tunnels to notice the dead relay",
    );
    await f.startRelay();
    await tunnel.waitFor((r) => allReady(r, 2), 10_000, "both tunnels ready again");

    const t0 = performance.now();
    const expected = DATAGRAMS * DATAGRAM_SIZE + TCP_BYTES;
    const bytes = await receiver.waitForMetric(
      "tunnel.bytes",
      (m) =>
        (metricValue(m, { direction: "in" }) ?? 0) >= expected &&
        (metricValue(m, { direction: "out" }) ?? 0) >= expected,
      10_000,
    );
    const tunnels = await receiver.waitForMetric(
      "tunnel.tunnels",
      (m) =>
        metricValue(m, { state: "ready", protocol: "udp" }) === 1 &&
        metricValue(m, { state: "ready", protocol: "tcp" }) === 1,
      10_000,
    );
    const ms = performance.now() - t0;
    expect(bytes.resource["service.name"]).toBe("turnpike-tunnel");
    expect(bytes.unit).toBe("By");
    expect(bytes.isMonotonic).toBe(true);
    expect(metricValue(tunnels, { state: "backoff", protocol: "udp" })).toBe(0);
    const reconnects = receiver.latest("tunnel.reconnects")!;
    expect(metricValue(reconnects)).toBeGreaterThanOrEqual(2);
    // One UDP peer flow and one TCP connection were opened towards the targets.
    expect(metricValue(receiver.latest("tunnel.connections.opened")!)).toBeGreaterThanOrEqual(2);
    expect(metricValue(receiver.latest("tunnel.connections.failed")!)).toBe(0);
    expect(receiver.latest("tunnel.connections.active")).toBeDefined();
    // The TCP round trip went through a spliced pipe where the native module loads: its kernel
    // pipes were made, and given back to the pool once its bytes were through.
    if (spliceAvailable()) {
      const pool = await receiver.waitForMetric(
        "tunnel.splice_pool.pipes",
        (m) => metricValue(m, { state: "lent" }) === 0,
        10_000,
      );
      expect(metricValue(pool, { state: "idle" })).toBeGreaterThanOrEqual(1);
      expect(metricValue(receiver.latest("tunnel.splice_pool.made")!)).toBeGreaterThanOrEqual(
        metricValue(pool, { state: "idle" })!,
      );
    } else {
      expect(receiver.latest("tunnel.splice_pool.pipes")).toBeUndefined();
    }
    console.log(
      `[tunnel-metrics] OTLP: bytes in ${metricValue(bytes, { direction: "in" })} / out ${metricValue(bytes, { direction: "out" })}, reconnects ${metricValue(reconnects)}; matched ${ms.toFixed(0)} ms after the tunnels were ready again`,
    );
  });
});

describe("turnpike-tunnel with its collector down", () => {
  it("says so in one WARN line, and that it is back in one INFO line", async () => {
    const port = await freePort();
    const tunnel = await startTunnel(
      [
        "--relay",
        `turn:127.0.0.1:${await freePort()}`,
        "--expose",
        "t=tcp://127.0.0.1:9",
        "--allow-peer",
        "127.0.0.1",
      ],
      {
        TURNPIKE_TOKEN: TOKEN,
        OTLP_GRPC_ENDPOINT: `127.0.0.1:${port}`,
        OTEL_METRIC_EXPORT_INTERVAL: "300",
      },
    );
    let collector: OtlpReceiver | undefined;
    const lines = (text: string) => tunnel.proc.stderr.split("\n").filter((l) => l.includes(text));
    try {
      await sleep(2000);
      expect(lines("otlp export failed"), tunnel.proc.stderr).toHaveLength(1);
      expect(lines("otlp export failed")[0]).toMatch(
        / WARN otlp export failed endpoint=http:\/\/127\.0\.0\.1:\d+ error="14 UNAVAILABLE: /,
      );
      expect(tunnel.proc.stderr).not.toContain("PeriodicExportingMetricReader");
      collector = await startOtlpReceiver("127.0.0.1", port);
      await collector.waitForMetric("tunnel.tunnels", undefined, 30_000);
      for (let i = 0; i < 50 && lines("otlp export recovered").length === 0; i++) await sleep(100);
      expect(lines("otlp export recovered"), tunnel.proc.stderr).toHaveLength(1);
      expect(lines("otlp export failed")).toHaveLength(1);
    } finally {
      await tunnel.stop();
      await collector?.close();
    }
  });
});
