// Output: a table on stdout, a JSON file with every figure, and a self-contained HTML page
// with inline SVG charts (latency percentiles per server; delivered vs offered for ramps).
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { GeneratorKind } from "./load/generator.js";
import type { NetworkInfo } from "./netns.js";
import type { MachineInfo, ResidentMemory } from "./proc.js";
import type { BenchOptions, Metric, ScenarioResult } from "./scenarios/types.js";

export interface ServerInfo {
  name: string;
  command: string;
  notes: string[];
}

export interface BenchReport {
  tool: "turnpike-bench";
  machine: MachineInfo;
  options: BenchOptions;
  servers: ServerInfo[];
  results: ScenarioResult[];
  generator: { kind: GeneratorKind; note: string };
  network: NetworkInfo;
}

/** Said once under a scenario's table: how to read its figures. */
const SCENARIO_NOTES: Record<string, string[]> = {
  relay: [
    "machine CPU = /proc/stat over all CPUs (user+nice+system+irq+softirq+steal) over the same window as the per-process figures, per round trip: every process and the kernel. On loopback the kernel delivers a datagram into the receiving socket within the sender's system call, so that work is charged to whichever process sends (a relay's own figure includes delivering into the echo peer's and the client's sockets; an in-kernel hop's work lands on the generator and the echo peer): compare machine CPU across columns, process figures within one.",
    "the machine may run other work too ('machine CPU before the load' shows how much): then the figure of the run's own processes (relay, generator, echo peer, the bench, and the kernel's ksoftirqd threads, which take over softirq work under load) is what the machine figure would be without it; on a shared machine compare ratios within one run.",
  ],
};

/** The relay's RSS once it was ready, before any load: in every scenario's table. */
export function idleRssMetric(bytes: number | undefined): Metric {
  return {
    key: "serverIdleRssMB",
    label: "server RSS idle (after start, before load)",
    unit: "MB",
    value: bytes === undefined ? null : bytes / 2 ** 20,
    better: "lower",
    digits: 1,
  };
}

/**
 * The part of the idle RSS the relay holds itself (RssAnon): its heaps and stacks, without the
 * executable's file pages, which are shared and move with the page cache (node-floor.ts).
 */
export function idleAnonMetric(bytes: number | undefined): Metric {
  return {
    key: "serverIdleAnonMB",
    label: "server private memory idle (RssAnon, after start)",
    unit: "MB",
    value: bytes === undefined ? null : bytes / 2 ** 20,
    better: "lower",
    digits: 1,
  };
}

export function formatValue(m: Pick<Metric, "value" | "digits">): string {
  if (m.value === null || Number.isNaN(m.value)) return "n/a";
  const d = m.digits ?? (Math.abs(m.value) >= 100 ? 0 : 1);
  return m.value.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
}

/** "turnpike" / "coturn" ratio, when both columns are present. */
function ratio(a: number | null | undefined, b: number | null | undefined): string {
  if (a === null || a === undefined || b === null || b === undefined || b === 0) return "";
  return `${(a / b).toFixed(2)}x`;
}

/** A Turnpike column: "turnpike" (its default UDP path) or "turnpike (batch)" / "(dgram)". */
function isTurnpike(server: string): boolean {
  return server === "turnpike" || server.startsWith("turnpike (");
}

function isFloor(server: string): boolean {
  return server.startsWith("floor (");
}

/**
 * Ratio columns of one scenario's table, each when both of its columns are there: every
 * Turnpike column against coturn; every Turnpike column against the floor on the same UDP
 * I/O (the protocol's cost over a bare forwarder); in the tunnel, turnpike-tunnel over
 * Turnpike against the ssh -R reverse tunnel (issue 6 §4).
 */
function ratioPairs(rows: ScenarioResult[]): [string, string][] {
  const names = rows.map((r) => r.server);
  const pairs: [string, string][] = [];
  for (const t of names) if (isTurnpike(t) && names.includes("coturn")) pairs.push([t, "coturn"]);
  for (const t of rows) {
    if (!isTurnpike(t.server) || !t.udpIo) continue;
    const floor = rows.find((f) => isFloor(f.server) && f.udpIo === t.udpIo);
    if (floor) pairs.push([t.server, floor.server]);
  }
  if (names.includes("turnpike") && names.includes("ssh -R")) pairs.push(["turnpike", "ssh -R"]);
  return pairs;
}

/**
 * In the relay table, a note per Turnpike column with a floor on its I/O: how much CPU per
 * relayed packet the relay spends over the bare forwarder, i.e. the protocol's share.
 */
export function addFloorNotes(results: ScenarioResult[]): void {
  const rows = results.filter((r) => r.scenario === "relay" && !r.skipped && !r.error);
  const usPerPacket = (r: ScenarioResult) =>
    r.metrics.find((m) => m.key === "serverUsPerPacket")?.value ?? null;
  for (const t of rows) {
    if (!isTurnpike(t.server) || !t.udpIo) continue;
    const floor = rows.find((f) => isFloor(f.server) && f.udpIo === t.udpIo);
    const a = usPerPacket(t);
    const b = floor ? usPerPacket(floor) : null;
    if (!floor || a === null || b === null || b <= 0) continue;
    t.notes.push(
      `server CPU per relayed packet ${a.toFixed(2)} µs against ${floor.server} ${b.toFixed(2)} µs: ${(a / b).toFixed(2)}x, the protocol adds ${(((a - b) / b) * 100).toFixed(0)} % over the floor (${(((a - b) / a) * 100).toFixed(0)} % of Turnpike's CPU per packet)`,
    );
  }
}

/**
 * In the relay table, a note per relay column against the no-relay column (the round trip's
 * floor on this machine): machine CPU per round trip and RTT p50, each as a ratio.
 */
export function addNoRelayNotes(results: ScenarioResult[]): void {
  const rows = results.filter((r) => r.scenario === "relay" && !r.skipped && !r.error);
  const floor = rows.find((r) => r.server === "no relay");
  if (!floor) return;
  const get = (r: ScenarioResult, key: string) =>
    r.metrics.find((m) => m.key === key)?.value ?? null;
  for (const r of rows) {
    if (r === floor || isFloor(r.server)) continue;
    const parts: string[] = [];
    for (const [key, what] of [
      ["machineUsPerRoundTrip", "machine CPU per round trip"],
      ["runUsPerRoundTrip", "the run's processes"],
      ["rttP50Us", "RTT p50"],
    ] as const) {
      const a = get(r, key);
      const b = get(floor, key);
      if (a !== null && b !== null && b > 0)
        parts.push(
          `${what} ${(a / b).toFixed(2)}x (${a.toFixed(key === "rttP50Us" ? 0 : 2)} against ${b.toFixed(key === "rttP50Us" ? 0 : 2)} µs)`,
        );
    }
    if (parts.length > 0) r.notes.push(`against no relay: ${parts.join("; ")}`);
  }
}

export function renderTable(report: BenchReport): string {
  const lines: string[] = [
    `Network: ${report.network.note}`,
    `Generator: ${report.generator.note}`,
  ];
  const scenarios = [...new Set(report.results.map((r) => r.scenario))];
  for (const sc of scenarios) {
    const all = report.results.filter((r) => r.scenario === sc);
    // A skipped row (missing tool) has no figures: a note, not a column.
    const rows = all.filter((r) => !r.skipped);
    const servers = rows.map((r) => r.server);
    const pairs = ratioPairs(rows);
    lines.push("", `## ${sc}`);
    const keys: Metric[] = [];
    for (const r of rows)
      for (const m of r.metrics) if (!keys.some((k) => k.key === m.key)) keys.push(m);
    const header = ["metric", ...servers, ...pairs.map(([a, b]) => `${a}/${b}`)];
    const body: string[][] = [];
    const value = (server: string, key: string) =>
      rows.find((r) => r.server === server)?.metrics.find((x) => x.key === key)?.value;
    for (const k of keys) {
      const cells = rows.map((r) => {
        const m = r.metrics.find((x) => x.key === k.key);
        return m ? formatValue(m) : "";
      });
      const label = `${k.label}${k.unit ? ` (${k.unit})` : ""}`;
      body.push([
        label,
        ...cells,
        ...pairs.map(([a, b]) => (k.better ? ratio(value(a, k.key), value(b, k.key)) : "")),
      ]);
    }
    const widths = header.map((h, i) =>
      Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)),
    );
    const fmt = (cells: string[]) =>
      `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`;
    if (rows.length === 0) {
      for (const r of all) if (r.skipped) lines.push(`- ${r.server}: SKIPPED ${r.skipped}`);
      continue;
    }
    lines.push(
      fmt(header),
      `|${widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : `${"-".repeat(w + 1)}:`)).join("|")}|`,
    );
    for (const b of body) lines.push(fmt(header.map((_, i) => b[i] ?? "")));
    for (const r of rows) for (const n of r.notes) lines.push(`- ${r.server}: ${n}`);
    for (const r of rows) if (r.error) lines.push(`- ${r.server}: ERROR ${r.error.split("\n")[0]}`);
    for (const r of all) if (r.skipped) lines.push(`- ${r.server}: SKIPPED ${r.skipped}`);
    for (const n of SCENARIO_NOTES[sc] ?? []) lines.push(`- ${n}`);
  }
  const m = report.machine;
  lines.push(
    "",
    `Machine: ${m.cpuModel}, ${m.cores} cores, Node ${m.node}, coturn ${m.coturn}, turnpike ${m.turnpike}, ${m.date}`,
  );
  if (m.nodeFloor) lines.push(`- ${nodeFloorNote(m.nodeFloor)}`);
  for (const s of report.servers) for (const n of s.notes) lines.push(`- ${s.name}: ${n}`);
  return lines.join("\n");
}

/** The runtime's floor measured in this run, for reading Turnpike's idle RSS. */
export function nodeFloorNote(f: ResidentMemory): string {
  const mb = (b: number) => (b / 2 ** 20).toFixed(1);
  return `node's floor: a bare node of this binary with the launchers' flags idles at ${mb(f.rss)} MB RSS, ${mb(f.anon)} MB of it private (RssAnon) and ${mb(f.file)} MB the executable's file pages (shared; ~28 MB more where the page cache holds the binary in large folios, mapped in 2 MB pieces): Turnpike's and turnpike-tunnel's RSS rows include it`;
}

// ---------- HTML with inline SVG ----------

const COLORS: Record<string, string> = {
  turnpike: "#1f77b4",
  "turnpike (batch)": "#1f77b4",
  "turnpike (dgram)": "#17becf",
  coturn: "#d62728",
  "floor (batch)": "#7f7f7f",
  "floor (dgram)": "#bcbd22",
  "no relay": "#000000",
};
const color = (name: string, i: number) =>
  COLORS[name] ?? ["#2ca02c", "#9467bd", "#8c564b"][i % 3]!;

function esc(s: string): string {
  return s.replace(
    /[&<>"]/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!,
  );
}

interface Series {
  name: string;
  points: [number, number][];
}

/** A small line chart; x can be categorical (labels) or numeric, y optionally log scale. */
function lineChart(
  title: string,
  series: Series[],
  opts: { xLabel: string; yLabel: string; xTicks?: string[]; logY?: boolean; diagonal?: boolean },
): string {
  const W = 640;
  const H = 320;
  const L = 70;
  const R = 20;
  const T = 30;
  const B = 50;
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return "";
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xMin = opts.xTicks ? 0 : 0;
  const xMax = opts.xTicks ? opts.xTicks.length - 1 : Math.max(...xs) * 1.05 || 1;
  const yMinRaw = Math.max(1, Math.min(...ys));
  const yMaxRaw = Math.max(...ys, opts.diagonal ? xMax : 0) * 1.1 || 1;
  const ty = (v: number) =>
    opts.logY
      ? Math.log10(Math.max(v, 1) / yMinRaw) / Math.log10(yMaxRaw / yMinRaw || 10)
      : v / yMaxRaw;
  const px = (x: number) => L + ((x - xMin) / (xMax - xMin || 1)) * (W - L - R);
  const py = (y: number) => H - B - ty(y) * (H - T - B);
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
  );
  parts.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`);
  parts.push(
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#444"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#444"/>`,
  );
  // y ticks
  const yTicks: number[] = [];
  if (opts.logY) {
    for (let v = 10 ** Math.floor(Math.log10(yMinRaw)); v <= yMaxRaw; v *= 10) yTicks.push(v);
  } else {
    for (let i = 0; i <= 5; i++) yTicks.push((yMaxRaw / 5) * i);
  }
  for (const v of yTicks) {
    const y = py(v);
    if (y < T - 1 || y > H - B + 1) continue;
    parts.push(
      `<line x1="${L}" y1="${y}" x2="${W - R}" y2="${y}" stroke="#eee"/><text x="${L - 5}" y="${y + 4}" text-anchor="end">${Math.round(v).toLocaleString("en-US")}</text>`,
    );
  }
  // x ticks
  if (opts.xTicks) {
    opts.xTicks.forEach((t, i) => {
      parts.push(`<text x="${px(i)}" y="${H - B + 16}" text-anchor="middle">${esc(t)}</text>`);
    });
  } else {
    for (let i = 0; i <= 5; i++) {
      const v = (xMax / 5) * i;
      parts.push(
        `<text x="${px(v)}" y="${H - B + 16}" text-anchor="middle">${Math.round(v).toLocaleString("en-US")}</text>`,
      );
    }
  }
  parts.push(
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${esc(opts.xLabel)}</text>`,
  );
  parts.push(
    `<text x="14" y="${(T + H - B) / 2}" text-anchor="middle" transform="rotate(-90 14 ${(T + H - B) / 2})">${esc(opts.yLabel)}</text>`,
  );
  if (opts.diagonal) {
    parts.push(
      `<line x1="${px(0)}" y1="${py(0)}" x2="${px(xMax)}" y2="${py(xMax)}" stroke="#999" stroke-dasharray="4 4"/>`,
    );
  }
  series.forEach((s, i) => {
    const c = color(s.name, i);
    const d = s.points
      .map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
      .join(" ");
    parts.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"/>`);
    for (const p of s.points)
      parts.push(
        `<circle cx="${px(p[0]).toFixed(1)}" cy="${py(p[1]).toFixed(1)}" r="3" fill="${c}"><title>${esc(s.name)}: ${p[0]} → ${Math.round(p[1])}</title></circle>`,
      );
    parts.push(
      `<rect x="${L + 10}" y="${T + 6 + i * 16}" width="10" height="10" fill="${c}"/><text x="${L + 26}" y="${T + 15 + i * 16}">${esc(s.name)}</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("");
}

/** Grouped horizontal bars: one group per category (a path), one bar per series. */
function barChart(
  title: string,
  categories: string[],
  series: { name: string; color: string; values: (number | null)[] }[],
  unit: string,
): string {
  const W = 640;
  const L = 90;
  const R = 90;
  const T = 30;
  const bar = 14;
  const group = series.length * bar + 12;
  const H = T + categories.length * group + 40;
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v ?? 0)));
  const px = (v: number) => (v / max) * (W - L - R);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="13">${esc(title)}</text>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - 40}" stroke="#444"/>`,
  ];
  categories.forEach((c, i) => {
    const y0 = T + i * group + 6;
    parts.push(
      `<text x="${L - 6}" y="${y0 + (series.length * bar) / 2 + 4}" text-anchor="end">${esc(c)}</text>`,
    );
    series.forEach((s, j) => {
      const v = s.values[i];
      if (v === null || v === undefined) return;
      const y = y0 + j * bar;
      parts.push(
        `<rect x="${L}" y="${y}" width="${px(v).toFixed(1)}" height="${bar - 2}" fill="${s.color}"><title>${esc(`${c} ${s.name}: ${Math.round(v)} ${unit}`)}</title></rect>`,
        `<text x="${(L + px(v) + 4).toFixed(1)}" y="${y + bar - 4}">${Math.round(v).toLocaleString("en-US")}</text>`,
      );
    });
  });
  series.forEach((s, j) => {
    const x = L + j * 150;
    parts.push(
      `<rect x="${x}" y="${H - 24}" width="10" height="10" fill="${s.color}"/><text x="${x + 14}" y="${H - 15}">${esc(s.name)} (${esc(unit)})</text>`,
    );
  });
  parts.push("</svg>");
  return parts.join("");
}

export function renderHtml(report: BenchReport): string {
  const sections: string[] = [];
  const scenarios = [...new Set(report.results.map((r) => r.scenario))];
  const table = renderTable(report);
  for (const sc of scenarios) {
    const rows = report.results.filter((r) => r.scenario === sc);
    const lat = rows.filter((r) => r.latency);
    if (lat.length) {
      const ticks = lat[0]!.latency!.points.map((p) => (p[0] === 100 ? "max" : `p${p[0]}`));
      sections.push(
        lineChart(
          `${sc}: round-trip latency by percentile`,
          lat.map((r) => ({ name: r.server, points: r.latency!.points.map((p, i) => [i, p[1]]) })),
          { xLabel: "percentile", yLabel: "RTT (µs, log)", xTicks: ticks, logY: true },
        ),
      );
    }
    const tput = rows.filter((r) => r.metrics.some((m) => m.key === "receivedMbps"));
    if (tput.length) {
      const get = (key: string) =>
        tput.map((r) => r.metrics.find((m) => m.key === key)?.value ?? null);
      sections.push(
        barChart(
          `${sc}: TCP throughput (iperf3, one stream)`,
          tput.map((r) => r.server),
          [
            { name: "receiver", color: "#1f77b4", values: get("receivedMbps") },
            { name: "sender", color: "#aec7e8", values: get("sentMbps") },
          ],
          "Mbit/s",
        ),
      );
    }
    const ramps = rows.filter((r) => r.ramp?.length);
    if (ramps.length) {
      sections.push(
        lineChart(
          `${sc}: delivered vs offered packets/s`,
          ramps.map((r) => ({
            name: r.server,
            points: r.ramp!.map((p) => [p.offered, p.delivered]),
          })),
          { xLabel: "offered (pkt/s)", yLabel: "delivered (pkt/s)", diagonal: true },
        ),
      );
    }
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>turnpike-bench ${esc(report.machine.date)}</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}svg{margin:1em 0;display:block}</style>
</head><body>
<h1>turnpike-bench</h1>
<p>${esc(report.machine.date)} · ${esc(report.machine.cpuModel)} · ${report.machine.cores} cores · Node ${esc(report.machine.node)} · coturn ${esc(report.machine.coturn)} · turnpike ${esc(report.machine.turnpike)}</p>
<p>Network: ${esc(report.network.note)}<br>Generator: ${esc(report.generator.note)}</p>
${sections.join("\n")}
<h2>Table</h2>
<pre>${esc(table)}</pre>
<h2>Servers</h2>
<ul>${report.servers.map((s) => `<li><b>${esc(s.name)}</b>: <code>${esc(s.command)}</code>${s.notes.map((n) => `<br>${esc(n)}`).join("")}</li>`).join("")}</ul>
${commandsHtml(report)}
<h2>Options</h2>
<pre>${esc(JSON.stringify(report.options, null, 2))}</pre>
</body></html>
`;
}

function commandsHtml(report: BenchReport): string {
  const rows = report.results.filter((r) => r.commands?.length);
  if (!rows.length) return "";
  return `<h2>Commands</h2>\n${rows
    .map(
      (r) =>
        `<p><b>${esc(r.scenario)} / ${esc(r.server)}</b></p><pre>${esc(r.commands!.join("\n"))}</pre>`,
    )
    .join("\n")}`;
}

export function writeOutputs(
  report: BenchReport,
  outDir: string,
  jsonFile: string | undefined,
): { html: string; latest: string; json: string | undefined } {
  mkdirSync(outDir, { recursive: true });
  const stamp = report.machine.date.replace(/[:.]/g, "-");
  const html = renderHtml(report);
  const htmlPath = path.join(outDir, `${stamp}.html`);
  const latest = path.join(outDir, "latest.html");
  writeFileSync(htmlPath, html);
  writeFileSync(latest, html);
  if (jsonFile) {
    mkdirSync(path.dirname(path.resolve(jsonFile)), { recursive: true });
    writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  }
  return { html: htmlPath, latest, json: jsonFile };
}
