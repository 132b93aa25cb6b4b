// deploy/grafana/turnpike-relay.json asks Prometheus only for series the relay exports. The
// names come from the relay's metrics table (METRIC_DOCS, the README's generated table),
// translated as its Prometheus endpoint translates them, and that translation is itself
// checked against a real scrape of the endpoint with every instrument holding a value.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  METRIC_DOCS,
  type RelayMetrics,
  startMetrics,
} from "../../packages/relay-server/src/metrics.js";
import { REPO } from "./launch.js";

// biome-ignore lint/suspicious/noExplicitAny: dashboard JSON
type Obj = Record<string, any>;

/** The series names Prometheus has for an OTel instrument as the relay exports it. */
function prometheusNames(name: string, instrument: string): string[] {
  const base = name.replaceAll(".", "_");
  if (instrument === "Counter") return [`${base}_total`];
  if (instrument === "Histogram") return [`${base}_bucket`, `${base}_sum`, `${base}_count`];
  return [base]; // UpDownCounter, Gauge
}

const EXPORTED = new Map<string, (typeof METRIC_DOCS)[number]>();
for (const doc of METRIC_DOCS) {
  for (const n of prometheusNames(doc.name, doc.instrument)) EXPORTED.set(n, doc);
}

/** Labels a series of `doc` carries: its attributes (dots to underscores) plus Prometheus's. */
function labelsOf(doc: (typeof METRIC_DOCS)[number], series: string): Set<string> {
  const attrs = doc.attributes === "-" ? [] : doc.attributes.split(/,\s*/);
  const labels = new Set(["instance", "job", ...attrs.map((a) => a.replaceAll(".", "_"))]);
  if (series.endsWith("_bucket")) labels.add("le");
  return labels;
}

const PROMQL_WORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "and",
  "or",
  "unless",
  "offset",
  "bool",
]);

/** Metric names and label names one PromQL expression uses (Grafana variables removed). */
function parseExpr(expr: string): { metrics: string[]; labels: string[] } {
  const text = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // string literals
    .replace(/\[[^\]]*\]/g, ""); // range selectors
  const labels: string[] = [];
  for (const m of text.matchAll(/\b(?:by|without|on|ignoring)\s*\(([^)]*)\)/g)) {
    labels.push(
      ...m[1]!
        .split(",")
        .map((l) => l.trim())
        .filter(Boolean),
    );
  }
  for (const m of text.matchAll(/\{([^}]*)\}/g)) {
    for (const matcher of m[1]!.matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)) labels.push(matcher[1]!);
  }
  const bare = text
    .replace(/\b(?:by|without|on|ignoring)\s*\([^)]*\)/g, "")
    .replace(/\{[^}]*\}/g, "");
  const metrics: string[] = [];
  for (const m of bare.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?/g)) {
    if (m[2] !== undefined || PROMQL_WORDS.has(m[1]!) || /^\d/.test(m[1]!)) continue;
    metrics.push(m[1]!);
  }
  return { metrics, labels };
}

function queries(dashboard: Obj): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: Obj[]) => {
    for (const p of panels) {
      for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}"`, expr: t.expr });
      walk(p.panels ?? []);
    }
  };
  walk(dashboard.panels);
  for (const v of dashboard.templating.list as Obj[]) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : v.query.query;
    // label_values(metric, label): the metric must exist and carry the label.
    const m = /^label_values\((\w+),\s*(\w+)\)$/.exec(q);
    expect(m, `variable ${v.name}`).not.toBeNull();
    out.push({ where: `variable ${v.name}`, expr: `${m![1]}` });
  }
  return out;
}

const dashboard = JSON.parse(
  readFileSync(join(REPO, "deploy/grafana/turnpike-relay.json"), "utf8"),
) as Obj;

describe("deploy/grafana/turnpike-relay.json", () => {
  let metrics: RelayMetrics;
  let scraped: string;
  beforeAll(async () => {
    metrics = await startMetrics({
      env: {},
      prometheusListen: { ip: "127.0.0.1", port: 0, family: 4 },
    });
    // One value in every instrument, so every series is in the scrape.
    const t = metrics.telemetry;
    t.allocationCreated("udp", 4);
    t.allocationEnded("udp", 4, "expired", 30);
    t.allocationCreated("tcp", 4);
    t.allocationEnded("tcp", 4, "deleted", 5);
    t.allocationCreated("udp", 4);
    t.relayed(0, 100);
    t.response("allocate", "error", 401);
    t.authFailure("bad-integrity");
    t.drop("malformed");
    metrics.stats.udpIo = "batch"; // the driver sets it once its UDP path is chosen
    // and this once its kernel path is (tc: the kernel program's counters are series too)
    metrics.stats.kernelPath = "tc";
    // and this once it knows it splices RFC 6062 pipes (the kernel pipe pool's series)
    metrics.stats.tcpSplice = true;
    // The event-loop gauges report once the delay monitor holds samples: scrape until then.
    const addr = metrics.prometheusAddress();
    for (let i = 0; i < 50; i++) {
      scraped = await (await fetch(`http://127.0.0.1:${addr?.port}/metrics`)).text();
      if (scraped.includes("nodejs_eventloop_delay_p50")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  afterAll(async () => {
    await metrics?.shutdown();
  });

  it("translates the metrics table the way the relay's Prometheus endpoint names series", () => {
    const present = new Set(
      scraped
        .split("\n")
        .filter((l) => l !== "" && !l.startsWith("#"))
        .map((l) => l.slice(0, l.search(/[{ ]/))),
    );
    for (const name of EXPORTED.keys()) expect(present, name).toContain(name);
  });

  it("queries only series the relay exports, with labels those series carry", () => {
    const all = queries(dashboard);
    expect(all.length).toBeGreaterThan(10);
    for (const { where, expr } of all) {
      const { metrics: used, labels } = parseExpr(expr);
      expect(used.length, `${where}: ${expr}`).toBeGreaterThan(0);
      for (const name of used) {
        const doc = EXPORTED.get(name);
        expect(doc, `${where} uses ${name}, which the relay does not export`).toBeDefined();
        const known = labelsOf(doc!, name);
        // Labels inside an aggregation apply to every metric of the expression.
        for (const l of labels)
          expect(known.has(l), `${where}: ${name} has no label ${l}`).toBe(true);
      }
    }
  });

  it("has panels for allocations, traffic per direction, the kernel path's outcomes, spliced pipes' kernel pipes, drops, auth failures, error codes, event loop, CPU and RSS", () => {
    const used = new Set(queries(dashboard).flatMap((q) => parseExpr(q.expr).metrics));
    for (const name of [
      "turn_allocations_active",
      "turn_relayed_packets_total",
      "turn_relayed_bytes_total",
      "turn_dropped_packets_total",
      "turn_auth_failures_total",
      "stun_responses_total",
      "nodejs_eventloop_delay_p99",
      "process_cpu_time_total",
      "process_memory_usage",
      "turn_relay_kernel_path_datagrams_total",
      "turn_relay_splice_pool_pipes",
    ]) {
      expect(used, name).toContain(name);
    }
    const exprs = queries(dashboard)
      .map((q) => q.expr)
      .join("\n");
    expect(exprs).toMatch(/by \(direction/);
    expect(exprs).toMatch(/by \(reason\) \(rate\(turn_dropped_packets_total/);
    expect(exprs).toMatch(/error_code/);
  });
});
