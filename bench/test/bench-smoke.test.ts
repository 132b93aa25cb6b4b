// End-to-end smoke test of turnpike-bench: the real CLI against real relays on loopback,
// no thresholds, only "every figure is there and the report was written".
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { missingTools, requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultUdpIo } from "../src/floor/start.js";
import { nativeUnavailable } from "../src/load/native.js";
import { defaultSettings, repoRoot, startTurnpike } from "../src/servers.js";

const cli = path.join(repoRoot, "bench/bin/turnpike-bench.js");
const built = path.join(repoRoot, "bench/dist/cli.js");

interface Report {
  machine: {
    node: string;
    coturn: string;
    cpuModel: string;
    cores: number;
    nodeFloor?: { rss: number; anon: number; file: number };
  };
  options: { udpIo: string[]; floor: string[]; generator: string };
  generator: { kind: string; note: string };
  network: { namespace: string | null; note: string };
  results: {
    scenario: string;
    server: string;
    error?: string;
    skipped?: string;
    udpIo?: string;
    kernelPath?: string;
    generator?: string;
    ceiling?: { passedRate: number | null; steps: number };
    notes: string[];
    metrics: { key: string; value: number | null }[];
  }[];
}

const root = process.getuid?.() === 0;

/** The bench's network namespaces that exist now. */
function namespaces(): string[] {
  if (!root) return [];
  return execFileSync("ip", ["netns", "list"], { encoding: "utf8" })
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith("turnpike-bench-"));
}

/**
 * As root a run has a private network namespace of its own, named after the bench's PID, and
 * deletes it at the end; otherwise it runs on the host's loopback and says so.
 */
function expectNetwork(run: { pid: number | undefined; stderr: string }, report?: Report): void {
  const name = `turnpike-bench-${run.pid}`;
  if (!root) {
    expect(run.stderr).toMatch(/# network: host loopback \(not root/);
    if (report) expect(report.network.namespace).toBeNull();
    return;
  }
  expect(run.stderr).toContain(`# network: private network namespace ${name}`);
  if (report) expect(report.network.namespace).toBe(name);
  expect(namespaces()).not.toContain(name);
}

/** The native generator ran where it is built (CI builds it at install: it must be there). */
function expectGenerator(report: Report): void {
  const why = nativeUnavailable();
  if (process.env.CI === "true") expect(why).toBeUndefined();
  const kind = why ? "js" : "native";
  expect(report.generator.kind).toBe(kind);
  for (const r of report.results.filter((x) => x.scenario === "relay" && !x.skipped))
    expect(r.generator, r.server).toBe(kind);
  // allocations and churn: the native setup generator (turnpike-setupgen) over UDP.
  for (const r of report.results.filter((x) => ["allocations", "churn"].includes(x.scenario))) {
    expect(r.generator, `${r.scenario} on ${r.server}`).toBe(kind);
    expect(r.notes, `${r.scenario} on ${r.server}`).toContainEqual(
      expect.stringMatching(/limited by the generator/),
    );
  }
}

/** The no-relay column: the same load straight to the echo peer, with its figures. */
function expectNoRelay(report: Report): void {
  const row = report.results.find((x) => x.scenario === "relay" && x.server === "no relay");
  expect(row?.error, "no relay").toBeUndefined();
  expect(metric(report, "relay", "no relay", "deliveredPps")).toBeGreaterThan(0);
  expect(metric(report, "relay", "no relay", "rttP50Us")).toBeGreaterThan(0);
  expect(metric(report, "relay", "no relay", "machineUsPerRoundTrip")).toBeGreaterThan(0);
  expect(metric(report, "relay", "no relay", "runUsPerRoundTrip")).toBeGreaterThan(0);
  expect(metric(report, "relay", "no relay", "generatorUsPerRoundTrip")).toBeGreaterThan(0);
  expect(metric(report, "relay", "no relay", "serverUsPerPacket")).toBeNull();
  expect(metric(report, "relay", "no relay", "maxPpsUnderLoss")).toBeGreaterThan(0);
}

/** Why turnpike-relay does not start the way the bench starts it, or undefined when it does. */
async function turnpikeStartFailure(): Promise<string | undefined> {
  try {
    const s = await startTurnpike(defaultSettings());
    await s.stop();
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message.split("\n").slice(0, 3).join(" / ") : String(e);
  }
}

/** The relay row of a floor forwarder measured a delivered rate and its CPU per packet. */
function expectFloor(report: Report, io: string): void {
  const server = `floor (${io})`;
  const row = report.results.find((x) => x.scenario === "relay" && x.server === server);
  expect(row, server).toBeDefined();
  expect(row?.error, server).toBeUndefined();
  expect(row?.skipped, server).toBeUndefined();
  expect(row?.udpIo).toBe(io);
  expect(metric(report, "relay", server, "deliveredPps")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "serverUsPerPacket")).toBeGreaterThan(0);
  // The batch module's own counters: how it batched the floor's traffic.
  if (io === "batch")
    expect(metric(report, "relay", server, "floorPacketsPerRecvmmsg")).toBeGreaterThanOrEqual(1);
  else expect(metric(report, "relay", server, "floorPacketsPerRecvmmsg")).toBeNull();
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** the bench's PID: its network namespace is named after it */
  pid: number | undefined;
}

function runBench(args: string[], onStart?: (pid: number | undefined) => void): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [cli, ...args],
      {
        cwd: repoRoot,
        timeout: 150_000,
        maxBuffer: 10 << 20,
        env: { ...process.env, [marker.split("=")[0]!]: marker.split("=")[1]! },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr, pid: child.pid });
      },
    );
    onStart?.(child.pid);
  });
}

function metric(r: Report, scenario: string, server: string, key: string): number | null {
  const row = r.results.find((x) => x.scenario === scenario && x.server === server);
  return row?.metrics.find((m) => m.key === key)?.value ?? null;
}

function expectFigures(report: Report, server: string): void {
  for (const scenario of ["relay", "allocations", "churn"]) {
    const row = report.results.find((x) => x.scenario === scenario && x.server === server);
    expect(row?.error, `${scenario} on ${server}`).toBeUndefined();
  }
  expect(metric(report, "relay", server, "deliveredPps")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "lossPct")).toBeTypeOf("number");
  expect(metric(report, "relay", server, "rttP99Us")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "serverUsPerPacket")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "generatorCorePct")).toBeGreaterThan(0);
  // Machine-wide CPU and the run's own processes, next to the server's own figure.
  expect(metric(report, "relay", server, "machineUsPerRoundTrip")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "runUsPerRoundTrip")).toBeGreaterThan(0);
  expect(metric(report, "relay", server, "peerUsPerRoundTrip")).toBeGreaterThan(0);
  for (const scenario of ["relay", "allocations", "churn"])
    expect(metric(report, scenario, server, "serverIdleRssMB"), scenario).toBeGreaterThan(0);
  expect(metric(report, "allocations", server, "setupsPerSec")).toBeGreaterThan(0);
  expect(metric(report, "allocations", server, "bytesPerAllocation")).toBeTypeOf("number");
  expectRounds(report, server);
  expect(metric(report, "churn", server, "cyclesPerSec")).toBeGreaterThan(0);
}

/** --quick's allocations ran two rounds, the first round's allocations deleted in between. */
function expectRounds(report: Report, server: string): void {
  const row = report.results.find((x) => x.scenario === "allocations" && x.server === server);
  expect(row?.error).toBeUndefined();
  expect(row?.notes).toContainEqual(expect.stringMatching(/^2 rounds of \d+ setups, each deleted/));
  expect(row?.notes).not.toContainEqual(expect.stringMatching(/deletes failed|setups failed/));
  expect(metric(report, "allocations", server, "failedSetups")).toBe(0);
}

/** The tunnel scenario's tools: missing ones skip its paths locally, fail the suite under CI. */
const TUNNEL_TOOLS = ["iperf3", "sshd", "ssh", "ssh-keygen"];

/** Every path of the tunnel scenario measured a throughput, or was skipped for a missing tool. */
function expectTunnel(report: Report, relays: string[]): void {
  const missing = missingTools(...TUNNEL_TOOLS);
  for (const path of ["direct", ...relays, "ssh -R"]) {
    const row = report.results.find((x) => x.scenario === "tunnel" && x.server === path);
    expect(row, `tunnel row ${path}`).toBeDefined();
    expect(row?.error, `tunnel ${path}`).toBeUndefined();
    const needs = path === "ssh -R" ? TUNNEL_TOOLS : ["iperf3"];
    if (needs.some((t) => missing.includes(t))) {
      expect(row?.skipped, `tunnel ${path} without ${missing.join(", ")}`).toMatch(/missing tool/);
      continue;
    }
    // Not root and no /run/sshd: a local run may skip ssh -R; CI may not.
    if (path === "ssh -R" && process.env.CI !== "true" && /\/run\/sshd/.test(row?.skipped ?? "")) {
      console.warn(`[bench] ssh -R skipped: ${row?.skipped}`);
      continue;
    }
    expect(row?.skipped, `tunnel ${path}`).toBeUndefined();
    expect(metric(report, "tunnel", path, "receivedMbps"), `tunnel ${path}`).toBeGreaterThan(0);
    if (path !== "direct") {
      expect(metric(report, "tunnel", path, "serverSideCorePct"), path).toBeGreaterThan(0);
      expect(metric(report, "tunnel", path, "clientSideCorePct"), path).toBeGreaterThan(0);
      // turnpike-tunnel's (or ssh's) memory under load and idle, the relay's idle.
      for (const key of [
        "clientSideRssPeakMB",
        "clientSideRssAvgMB",
        "clientSideIdleRssMB",
        "serverIdleRssMB",
      ])
        expect(metric(report, "tunnel", path, key), `${path} ${key}`).toBeGreaterThan(0);
    }
  }
}

/** Marks every process a bench run starts (children inherit the environment). */
const marker = `TURNPIKE_BENCH_SMOKE=${process.pid}-${Date.now()}`;

/** Processes of our bench runs still alive: relays, iperf3, turnpike-tunnel, sshd, ssh. */
function leftovers(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
      // sshd rewrites its environment area (setproctitle): known by its config path instead.
      const ours =
        readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").includes(marker) ||
        cmd.includes("turnpike-bench-ssh-");
      if (ours) found.push(`${pid}: ${cmd}`);
    } catch {
      // exited while we looked
    }
  }
  return found;
}

describe.skipIf(skipUnlessTools("turnserver"))("turnpike-bench --quick", () => {
  let dir: string;

  beforeAll(() => {
    requireTools("turnserver");
    // Under CI the tunnel's tools must be there (scripts/ensure-tools.sh); locally a missing
    // one turns its paths into "skipped" rows, which expectTunnel checks.
    if (process.env.CI === "true") requireTools(...TUNNEL_TOOLS);
    if (!existsSync(built)) throw new Error("bench is not built: run pnpm exec tsc -b");
    dir = mkdtempSync(path.join(tmpdir(), "turnpike-bench-test-"));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Runs the bench with a JSON report and an HTML directory of its own; it must succeed. */
  async function runReported(name: string, args: string[]) {
    const json = path.join(dir, `${name}.json`);
    const run = await runBench([...args, "--json", json, "--out", path.join(dir, `out-${name}`)]);
    expect(run.code, run.stderr).toBe(0);
    return { run, report: JSON.parse(readFileSync(json, "utf8")) as Report };
  }

  it("measures coturn end to end (tunnel paths too) and writes the table, the JSON and the HTML report", async () => {
    const { run, report } = await runReported("coturn", ["--quick", "--server", "coturn"]);
    expect(run.stdout).toContain("## relay");
    expect(run.stdout).toContain("server CPU per relayed packet");
    expect(report.machine.coturn).toMatch(/\d+\.\d+/);
    expect(report.machine.node).toBe(process.version);
    expectFigures(report, "coturn");
    expectTunnel(report, ["coturn"]);
    expectGenerator(report);
    expectNoRelay(report);
    expectNetwork(run, report);
    expect(leftovers()).toEqual([]);
    const html = readFileSync(path.join(dir, "out-coturn", "latest.html"), "utf8");
    expect(html).toContain("<svg");
    expect(html).toContain("coturn");
    if (missingTools("iperf3").length === 0) expect(html).toContain("TCP throughput");
  });

  it("measures Turnpike and coturn side by side with ratio columns", async (ctx) => {
    // Only once the relay runs: start it the way the bench does and see whether it answers.
    const reason = await turnpikeStartFailure();
    if (reason) {
      console.warn(`[bench] SKIPPED --server both: turnpike-relay does not start: ${reason}`);
      ctx.skip();
      return;
    }
    const { run, report } = await runReported("both", ["--quick", "--server", "both"]);
    expect(run.stdout).toContain("turnpike/coturn");
    expectFigures(report, "turnpike");
    expectFigures(report, "coturn");
    expectTunnel(report, ["turnpike", "coturn"]);
    if (missingTools(...TUNNEL_TOOLS).length === 0) expect(run.stdout).toContain("turnpike/ssh -R");
    // Turnpike on its default UDP path, with the floor on the same I/O next to it.
    const io = defaultUdpIo();
    expect(report.results.find((x) => x.server === "turnpike")?.udpIo).toBe(io);
    expectFloor(report, io);
    expect(run.stdout).toContain(`turnpike/floor (${io})`);
    expectGenerator(report);
    expectNoRelay(report);
    expect(report.results.find((x) => x.server === "turnpike")?.notes).toContainEqual(
      expect.stringMatching(/^against no relay: machine CPU per round trip/),
    );
    // Idle memory is read beside node's own floor of the same moment, split private / file.
    const floor = report.machine.nodeFloor;
    expect(floor?.anon).toBeGreaterThan(0);
    expect(floor!.anon + floor!.file).toBeLessThanOrEqual(floor!.rss + 4096);
    expect(run.stdout).toMatch(/node's floor: a bare node .* idles at [\d.]+ MB RSS/);
    const anon = report.results
      .find((x) => x.server === "turnpike" && x.scenario === "allocations")
      ?.metrics.find((m) => m.key === "serverIdleAnonMB")?.value;
    expect(anon).toBeGreaterThan(floor!.anon / 2 ** 20);
    expectNetwork(run, report);
    expect(leftovers()).toEqual([]);
  });

  it("compares both Turnpike UDP paths with coturn and their floors in one relay table", async (ctx) => {
    const reason = await turnpikeStartFailure();
    if (reason) {
      console.warn(
        `[bench] SKIPPED --udp-io batch,dgram: turnpike-relay does not start: ${reason}`,
      );
      ctx.skip();
      return;
    }
    const { run, report } = await runReported("udp-io", [
      "relay",
      "--quick",
      "--server",
      "both",
      "--udp-io",
      "batch,dgram",
    ]);
    expect(report.options.udpIo).toEqual(["batch", "dgram"]);
    expect(report.options.floor).toEqual(["batch", "dgram", "no-relay"]);
    expect(report.results.map((r) => r.server)).toEqual([
      "turnpike (batch)",
      "turnpike (dgram)",
      "coturn",
      "floor (batch)",
      "floor (dgram)",
      "no relay",
    ]);
    for (const io of ["batch", "dgram"]) {
      const server = `turnpike (${io})`;
      const row = report.results.find((x) => x.server === server);
      expect(row?.error, server).toBeUndefined();
      // The path the relay itself reported at start, not just the flag the bench passed.
      expect(row?.udpIo).toBe(io);
      expect(metric(report, "relay", server, "serverUsPerPacket")).toBeGreaterThan(0);
      expect(row?.notes.some((n) => n.includes(`against floor (${io})`))).toBe(true);
      expectFloor(report, io);
    }
    expect(metric(report, "relay", "coturn", "serverUsPerPacket")).toBeGreaterThan(0);
    const header = run.stdout.split("\n").find((l) => l.startsWith("| metric"));
    for (const column of [
      "turnpike (batch)/coturn",
      "turnpike (dgram)/coturn",
      "turnpike (batch)/floor (batch)",
      "turnpike (dgram)/floor (dgram)",
    ]) {
      expect(header).toContain(column);
    }
    expectNetwork(run, report);
    expect(leftovers()).toEqual([]);
  });

  it("runs the JavaScript generator on request, with the no-relay column", async () => {
    const { run, report } = await runReported("js", [
      "relay",
      "allocations",
      "--quick",
      "--server",
      "coturn",
      "--generator",
      "js",
    ]);
    expect(report.generator.kind).toBe("js");
    expect(
      report.results.filter((r) => r.scenario === "relay").map((r) => [r.server, r.generator]),
    ).toEqual([
      ["coturn", "js"],
      ["no relay", "js"],
    ]);
    // The JavaScript generator's rounds: setups, every one deleted, setups again.
    expect(
      report.results.find((r) => r.scenario === "allocations" && r.server === "coturn")?.generator,
    ).toBe("js");
    expectRounds(report, "coturn");
    expect(metric(report, "relay", "coturn", "machineUsPerRoundTrip")).toBeGreaterThan(0);
    expectNoRelay(report);
    expectNetwork(run, report);
    expect(leftovers()).toEqual([]);
  });

  it("gives each --kernel-path a Turnpike column: the path the relay reports, or SKIPPED with its error", async (ctx) => {
    const reason = await turnpikeStartFailure();
    if (reason) {
      console.warn(`[bench] SKIPPED --kernel-path: turnpike-relay does not start: ${reason}`);
      ctx.skip();
      return;
    }
    const { run, report } = await runReported("kernel-path", [
      "relay",
      "--quick",
      "--server",
      "turnpike",
      "--kernel-path",
      "off,tc",
      "--floor",
      "none",
      "--duration",
      "1",
    ]);
    for (const kp of ["off", "tc"]) {
      const server = `turnpike (kernel-path ${kp})`;
      const row = report.results.find((r) => r.server === server);
      expect(row, server).toBeDefined();
      expect(row?.error, server).toBeUndefined();
      // A relay that does not know the flag (or cannot attach) says so in one line, and the
      // column is skipped rather than measured on another path.
      if (row?.skipped) {
        expect(row.skipped, server).toMatch(/kernel.?path/i);
        expect(row.skipped.split("\n")).toHaveLength(1);
        expect(run.stdout).toContain(`- ${server}: SKIPPED`);
      } else {
        expect(row?.kernelPath, server).toBe(kp);
        // In the kernel the relay process does no work per packet: in a one-second run its CPU
        // can stay below one clock tick. The machine's figure always counts the round trips.
        expect(
          metric(
            report,
            "relay",
            server,
            kp === "tc" ? "machineUsPerRoundTrip" : "serverUsPerPacket",
          ),
        ).toBeGreaterThan(0);
      }
    }
    expectNetwork(run, report);
    expect(leftovers()).toEqual([]);
  });
});

describe.skipIf(!root)("turnpike-bench network namespace", () => {
  it("deletes its namespace after a run that fails", async () => {
    // Nothing answers on port 9 inside the namespace: the run fails after its STUN probe.
    const run = await runBench(["relay", "--quick", "--external", "127.0.0.1:9"]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/external|STUN|timed out|answer/i);
    expectNetwork(run);
    expect(leftovers()).toEqual([]);
  });

  it.skipIf(skipUnlessTools("turnserver"))(
    "deletes its namespace and stops every process when interrupted with Ctrl-C",
    async () => {
      let seen = "";
      const running = runBench(["relay", "--quick", "--server", "coturn"], (pid) => {
        // Once the namespace holds a relay and load, interrupt as a terminal would.
        const poll = setInterval(() => {
          seen = namespaces().find((n) => n === `turnpike-bench-${pid}`) ?? seen;
          if (!seen || pid === undefined) return;
          try {
            const inside = execFileSync("ip", ["netns", "pids", seen], { encoding: "utf8" });
            if (inside.trim().split("\n").length < 3) return; // bench, coturn, echo peer
          } catch {
            return;
          }
          clearInterval(poll);
          process.kill(pid, "SIGINT");
        }, 200);
        setTimeout(() => clearInterval(poll), 60_000).unref();
      });
      const run = await running;
      expect(seen).toBe(`turnpike-bench-${run.pid}`);
      expect(run.code).toBe(130);
      expect(namespaces()).not.toContain(seen);
      expect(leftovers()).toEqual([]);
    },
  );
});

describe("turnpike-bench options", () => {
  it("refuses an unknown --udp-io path and --udp-io without Turnpike", async () => {
    const bogus = await runBench(["relay", "--udp-io", "batch,epoll"]);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toMatch(/--udp-io wants batch, dgram/);
    const coturnOnly = await runBench(["relay", "--server", "coturn", "--udp-io", "dgram"]);
    expect(coturnOnly.code).toBe(2);
    expect(coturnOnly.stderr).toMatch(/--udp-io picks Turnpike's data path/);
    expect(leftovers()).toEqual([]);
  });

  it("refuses a relay port range that overlaps the bench's own local ports, or is no range", async () => {
    // 16384-32767 overlaps the generator's 12000-31999: relay binds would fail on its ports.
    const overlap = await runBench(["allocations", "--min-port", "16384", "--max-port", "32767"]);
    expect(overlap.code).toBe(2);
    expect(overlap.stderr).toMatch(
      /--min-port\/--max-port 16384-32767 overlaps the bench's own local ports 12000-31999/,
    );
    const inverted = await runBench(["allocations", "--min-port", "60000", "--max-port", "50000"]);
    expect(inverted.code).toBe(2);
    expect(inverted.stderr).toMatch(/--min-port\/--max-port want 1 <= min <= max <= 65535/);
    expect(leftovers()).toEqual([]);
  });

  it("refuses --kernel-path tc on the host's loopback, where the program would attach to its lo", async () => {
    const onHost = await runBench(["relay", "--netns", "off", "--kernel-path", "tc"]);
    expect(onHost.code).toBe(2);
    expect(onHost.stderr).toMatch(
      /--kernel-path tc attaches a BPF program to lo: only in the bench's own network namespace/,
    );
    expect(leftovers()).toEqual([]);
  });
});
