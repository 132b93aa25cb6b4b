// End to end: a real turnpike-relay process exports its metrics over OTLP gRPC to a real
// receiver (the collector's MetricsService/Export) after real TURN traffic on loopback:
// allocations, a permission, a channel and a few hundred ChannelData packets echoed by a peer.
// The numbers the receiver gets must match the traffic we sent, not merely be non-zero.

import { restCredentials } from "@turnpike/test-support/credentials";
import {
  type OtlpReceiver,
  type ReceivedMetric,
  startOtlpReceiver,
} from "@turnpike/test-support/otlp-receiver";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { startEchoPeer, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-otlp-token";
const ALLOCATIONS = 3;
const PACKETS = 300;
const CHANNEL = 0x4000;

/** Sum of a metric's points whose attributes include every pair of `match`. */
function sumWhere(m: ReceivedMetric | undefined, match: Record<string, string | number>): number {
  if (m === undefined) return 0;
  let total = 0;
  for (const p of m.points) {
    const ok = Object.entries(match).every(([k, v]) => String(p.attributes[k]) === String(v));
    if (ok) total += p.value ?? p.count ?? 0;
  }
  return total;
}

describe("turnpike-relay exports OTLP metrics to a real collector", () => {
  let receiver: OtlpReceiver;
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;

  beforeAll(async () => {
    receiver = await startOtlpReceiver();
    range = reservePortRange(50);
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    await receiver?.close();
    range?.release();
  });

  it("reports allocations, responses, relayed packets and sizes matching real traffic, with the env's resource", async () => {
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      env: {
        OTLP_GRPC_ENDPOINT: receiver.url,
        OTEL_METRIC_EXPORT_INTERVAL: "500",
        OTEL_SERVICE_NAME: "turnpike-e2e",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test,service.instance.id=relay-1",
      },
    });
    const peer = await startEchoPeer();
    const clients: TurnClientLite[] = [];
    try {
      for (let i = 0; i < ALLOCATIONS; i++) {
        const creds = restCredentials(TOKEN, `otlp-${i}`);
        const c = await TurnClientLite.open({
          port: relay.port,
          username: creds.username,
          password: creds.credential,
        });
        clients.push(c);
        const a = await c.allocate();
        expect(a.code, a.reason).toBe(0);
        expect(a.relayed[0]?.address).toBe("127.0.0.1");
      }
      const c = clients[0]!;
      expect((await c.createPermission(peer.address)).code).toBe(0);
      expect((await c.channelBind(CHANNEL, peer.address)).code).toBe(0);

      // Paced in bursts of 20 so nothing is lost in a socket queue on a 2-core machine: the
      // counters are then compared for equality with what was sent.
      const payload = Buffer.alloc(200, 0xab);
      for (let sent = 0; sent < PACKETS; sent += 20) {
        for (let i = 0; i < 20; i++) c.sendChannelData(CHANNEL, payload);
        await sleep(5);
      }
      await c.waitForChannelData(PACKETS, 10_000);
      expect(peer.received).toBe(PACKETS);
      expect(c.channelData.every((d) => d.channel === CHANNEL && d.data.length === 200)).toBe(true);

      const relayed = await receiver.waitForMetric(
        "turn.relayed.packets",
        (m) =>
          sumWhere(m, { direction: "client_to_peer" }) >= PACKETS &&
          sumWhere(m, { direction: "peer_to_client" }) >= PACKETS,
        10_000,
      );
      expect(relayed.resource["service.name"]).toBe("turnpike-e2e");
      expect(relayed.resource["deployment.environment"]).toBe("test");
      expect(relayed.resource["service.instance.id"]).toBe("relay-1");
      expect(sumWhere(relayed, { direction: "client_to_peer", transport: "udp" })).toBe(PACKETS);
      expect(sumWhere(relayed, { direction: "peer_to_client", transport: "udp" })).toBe(PACKETS);

      const bytes = receiver.latest("turn.relayed.bytes");
      expect(sumWhere(bytes, { direction: "client_to_peer" })).toBe(PACKETS * 200);
      expect(sumWhere(bytes, { direction: "peer_to_client" })).toBe(PACKETS * 200);

      const created = await receiver.waitForMetric("turn.allocations.created", (m) =>
        m.points.some((p) => (p.value ?? 0) >= ALLOCATIONS),
      );
      expect(sumWhere(created, { transport: "udp", family: "ipv4" })).toBe(ALLOCATIONS);

      const responses = await receiver.waitForMetric("stun.responses", (m) =>
        m.points.some((p) => p.attributes.method === "channel_bind"),
      );
      expect(sumWhere(responses, { method: "allocate", class: "success" })).toBe(ALLOCATIONS);
      // Each client's first Allocate is challenged (RFC 8489 §9.2.4).
      expect(sumWhere(responses, { method: "allocate", class: "error", error_code: 401 })).toBe(
        ALLOCATIONS,
      );
      expect(sumWhere(responses, { method: "create_permission", class: "success" })).toBe(1);
      expect(sumWhere(responses, { method: "channel_bind", class: "success" })).toBe(1);

      const sizes = receiver.latest("turn.packet.size");
      expect(sizes?.kind).toBe("histogram");
      const count = (sizes?.points ?? []).reduce((n, p) => n + (p.count ?? 0), 0);
      expect(count).toBeGreaterThanOrEqual(2 * PACKETS);

      const active = receiver.latest("turn.allocations.active");
      expect(sumWhere(active, { transport: "udp" })).toBe(ALLOCATIONS);
      expect(sumWhere(receiver.latest("turn.channels.active"), {})).toBe(1);
    } finally {
      for (const c of clients) c.close();
      await peer.close();
    }
    const exit = await relay.stop("SIGINT", 5000);
    relay = undefined;
    expect(exit.code).toBe(0);
  });

  it("also exports to OTEL_EXPORTER_OTLP_ENDPOINT, under the default service name", async () => {
    const other = await startOtlpReceiver();
    const r = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: other.url, OTEL_METRIC_EXPORT_INTERVAL: "500" },
    });
    try {
      const creds = restCredentials(TOKEN, "otlp-generic");
      const c = await TurnClientLite.open({
        port: r.port,
        username: creds.username,
        password: creds.credential,
      });
      expect((await c.allocate()).code).toBe(0);
      c.close();
      const created = await other.waitForMetric("turn.allocations.created", (m) =>
        m.points.some((p) => (p.value ?? 0) >= 1),
      );
      expect(created.resource["service.name"]).toBe("turnpike-relay");
      expect(receiver.requests.length).toBeGreaterThan(0); // the first relay's, not this one's
      expect(other.metrics().every((m) => m.resource["service.name"] === "turnpike-relay")).toBe(
        true,
      );
    } finally {
      expect((await r.stop("SIGINT", 5000)).code).toBe(0);
      await other.close();
    }
  });

  it("says a collector that is down in one WARN line, and its return in one INFO line", async () => {
    // Nothing listens on this port yet: every export is refused.
    const port = await freePort();
    const r = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      logLevel: "info",
      env: { OTLP_GRPC_ENDPOINT: `127.0.0.1:${port}`, OTEL_METRIC_EXPORT_INTERVAL: "300" },
    });
    let collector: OtlpReceiver | undefined;
    const lines = (text: string) => r.stderr.split("\n").filter((l) => l.includes(text));
    try {
      // Several intervals of refused exports ...
      await sleep(2000);
      expect(lines("otlp export failed"), r.stderr).toHaveLength(1);
      expect(lines("otlp export failed")[0]).toMatch(
        new RegExp(
          `WARN otlp export failed endpoint=http://127\\.0\\.0\\.1:${port} error="14 UNAVAILABLE: `,
        ),
      );
      // ... and not the SDK's own report of each of them, with its stack.
      expect(r.stderr).not.toContain("PeriodicExportingMetricReader");
      collector = await startOtlpReceiver("127.0.0.1", port);
      await collector.waitForMetric("turn.allocations.active", undefined, 30_000);
      for (let i = 0; i < 50 && lines("otlp export recovered").length === 0; i++) await sleep(100);
      expect(lines("otlp export recovered"), r.stderr).toHaveLength(1);
      expect(lines("otlp export recovered")[0]).toMatch(/ INFO otlp export recovered endpoint=/);
      expect(lines("otlp export failed")).toHaveLength(1);
    } finally {
      expect((await r.stop("SIGINT", 5000)).code).toBe(0);
      await collector?.close();
    }
  });
});
