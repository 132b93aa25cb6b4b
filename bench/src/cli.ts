// turnpike-bench: the same load against Turnpike and coturn, side by side.
import path from "node:path";
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { killTrackedNow } from "./children.js";
import { defaultUdpIo, floorUnavailable, startFloor } from "./floor/start.js";
import { runMicro } from "./micro.js";
import { machineInfo } from "./proc.js";
import { Progress } from "./progress.js";
import { addFloorNotes, type BenchReport, renderTable, writeOutputs } from "./report.js";
import { defaultScenarios, scenarios } from "./scenarios/index.js";
import { runTunnelScenario } from "./scenarios/tunnel.js";
import type { BenchOptions, ScenarioResult } from "./scenarios/types.js";
import {
  defaultSettings,
  type RunningServer,
  repoRoot,
  type ServerSettings,
  startCoturn,
  startTurnpike,
  stopAll,
  turnpikeName,
  UDP_IO,
  type UdpIo,
  useExternal,
} from "./servers.js";

/** What the bench starts for one column. */
type Target =
  | { kind: "turnpike"; udpIo: UdpIo | undefined; workers: number | undefined }
  | { kind: "coturn" }
  | { kind: "external" }
  | { kind: "floor"; udpIo: UdpIo };

/** "batch", "dgram" or a comma-separated list of them, in the order given, without repeats. */
function parseIoList(text: string, flag: string): UdpIo[] {
  const list: UdpIo[] = [];
  for (const part of text.split(",")) {
    const io = part.trim();
    if (!(UDP_IO as readonly string[]).includes(io)) {
      throw new Error(`${flag} wants batch, dgram or a list of them (batch,dgram), got "${text}"`);
    }
    if (!list.includes(io as UdpIo)) list.push(io as UdpIo);
  }
  return list;
}

/** "1", "2" or a list of worker counts (1,2), in the order given, without repeats. */
function parseWorkersList(text: string): number[] {
  const list: number[] = [];
  for (const part of text.split(",")) {
    const n = Number(part.trim());
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new Error(`--workers wants a worker count or a list of them (1,2), got "${text}"`);
    }
    if (!list.includes(n)) list.push(n);
  }
  return list;
}

/** The column a target fills (for rows that could not start). */
function targetName(t: Target): string {
  if (t.kind === "floor") return `floor (${t.udpIo})`;
  if (t.kind === "turnpike") return turnpikeName(t.udpIo, t.workers);
  return t.kind;
}

async function main(): Promise<number> {
  const argv = await yargs(hideBin(process.argv))
    .scriptName("turnpike-bench")
    .usage(
      "$0 [scenario...] [options]\n\nScenarios: relay, allocations, churn, tunnel, micro.\nDefault: relay allocations churn tunnel.",
    )
    .option("server", {
      choices: ["turnpike", "coturn", "both"] as const,
      default: "both" as const,
      describe: "which relay(s) the bench starts on loopback",
    })
    .option("external", {
      type: "string",
      describe: "measure a relay already running at HOST:PORT (token from TURNPIKE_TOKEN)",
    })
    .option("quick", {
      type: "boolean",
      default: false,
      describe: "every scenario briefly (< 60 s in all)",
    })
    .option("json", { type: "string", describe: "write every figure and the machine info to FILE" })
    .option("out", {
      type: "string",
      default: "bench/results",
      describe: "directory for the HTML report",
    })
    .option("duration", {
      type: "number",
      describe: "seconds of load per scenario (per ramp step); default 10, --quick 2",
    })
    .option("allocations", {
      type: "number",
      describe: "allocations (relay 100, allocations 10000/--quick 1000, churn clients 64/16)",
    })
    .option("rate", { type: "number", default: 20000, describe: "offered packets/s (relay)" })
    .option("size", { type: "number", default: 100, describe: "payload bytes per packet (>= 16)" })
    .option("transport", {
      choices: ["udp", "tcp"] as const,
      default: "udp" as const,
      describe: "client <-> relay transport",
    })
    .option("mode", {
      choices: ["channel", "send"] as const,
      default: "channel" as const,
      describe: "ChannelData or Send/Data indications",
    })
    .option("ramp", {
      type: "boolean",
      default: false,
      describe: "relay: raise the rate until loss >= 0.1 %",
    })
    .option("coturn-threads", {
      type: "number",
      describe:
        "coturn --relay-threads (default: coturn's own default, one per CPU; 0 = single-threaded)",
    })
    .option("min-port", {
      type: "number",
      default: 49152,
      describe: "relay port range start (both servers)",
    })
    .option("max-port", {
      type: "number",
      default: 65535,
      describe: "relay port range end (both servers)",
    })
    .option("udp-io", {
      type: "string",
      describe:
        "Turnpike's UDP data path: batch or dgram, or a list (batch,dgram) for one Turnpike column each; default: the relay's own choice (auto)",
    })
    .option("workers", {
      type: "string",
      describe:
        "Turnpike's worker threads: a count, or a list (1,2) for one Turnpike column each; default: the relay's own (auto = cores)",
    })
    .option("floor", {
      type: "string",
      default: "auto",
      describe:
        "relay: floor forwarders as extra columns: batch, dgram, a list, or none; auto = one per Turnpike column, on its I/O",
    })
    .strictOptions()
    .help()
    .parse();

  const names = argv._.map(String);
  if (names.includes("micro")) {
    await runMicro(argv.quick);
    if (names.length === 1) return 0;
  }
  const list = names.filter((n) => n !== "micro");
  const chosen = list.length ? list : defaultScenarios;
  for (const n of chosen) {
    if (!scenarios[n] && n !== "tunnel")
      throw new Error(`unknown scenario "${n}" (relay, allocations, churn, tunnel, micro)`);
  }
  const udpIo = argv["udp-io"] === undefined ? [] : parseIoList(argv["udp-io"], "--udp-io");
  const workers = argv.workers === undefined ? [] : parseWorkersList(argv.workers);
  const measuresTurnpike = !argv.external && argv.server !== "coturn";
  if (workers.length > 0 && !measuresTurnpike) {
    throw new Error(
      "--workers sets Turnpike's worker threads: use it with --server turnpike or both",
    );
  }
  if (udpIo.length > 0 && !measuresTurnpike) {
    throw new Error("--udp-io picks Turnpike's data path: use it with --server turnpike or both");
  }
  // --floor auto: one floor per Turnpike column, on the I/O that column runs on.
  const turnpikePaths = !measuresTurnpike ? [] : udpIo.length > 0 ? udpIo : [defaultUdpIo()];
  const floor =
    argv.floor === "none"
      ? []
      : argv.floor === "auto"
        ? turnpikePaths
        : parseIoList(argv.floor, "--floor");
  const opts: BenchOptions = {
    quick: argv.quick,
    duration: argv.duration ?? (argv.quick ? 2 : 10),
    allocations: argv.allocations,
    rate: argv.rate,
    size: Math.max(16, argv.size),
    transport: argv.transport,
    mode: argv.mode,
    ramp: argv.ramp,
    udpIo,
    workers,
    floor,
  };
  const base: ServerSettings = {
    ...defaultSettings(),
    minPort: argv["min-port"],
    maxPort: argv["max-port"],
    coturnThreads: argv["coturn-threads"],
  };
  // One Turnpike column per (UDP path, worker count) asked for.
  const turnpikes: Target[] = (udpIo.length > 0 ? udpIo : [undefined]).flatMap((io) =>
    (workers.length > 0 ? workers : [undefined]).map(
      (n): Target => ({ kind: "turnpike", udpIo: io, workers: n }),
    ),
  );
  const relays: Target[] = argv.external
    ? [{ kind: "external" }]
    : argv.server === "both"
      ? [...turnpikes, { kind: "coturn" }]
      : argv.server === "turnpike"
        ? turnpikes
        : [{ kind: "coturn" }];
  const floors: Target[] = floor.map((io) => ({ kind: "floor", udpIo: io }));
  // The tunnel carries TCP only (RFC 6062 on both sides of the relay): one Turnpike path,
  // the first asked, is enough there.
  const kinds = [...new Set(relays.map((t) => t.kind))] as ("turnpike" | "coturn" | "external")[];

  const progress = new Progress();
  const results: ScenarioResult[] = [];
  const servers = new Map<string, { name: string; command: string; notes: string[] }>();
  let failed = false;
  const start = async (t: Target): Promise<RunningServer> => {
    const server =
      t.kind === "turnpike"
        ? await startTurnpike(base, t.udpIo, t.workers)
        : t.kind === "coturn"
          ? await startCoturn(base)
          : t.kind === "floor"
            ? await startFloor(t.udpIo)
            : await useExternal(argv.external!, process.env.TURNPIKE_TOKEN ?? "", base.realm);
    servers.set(server.name, { name: server.name, command: server.command, notes: server.notes });
    return server;
  };
  const startRelay = (kind: (typeof kinds)[number]) => start(relays.find((t) => t.kind === kind)!);
  for (const scenario of chosen) {
    if (scenario === "tunnel") {
      // Four paths (direct, through each relay, ssh -R), not one run per server.
      const rows = await runTunnelScenario({ kinds, startRelay, opts, progress });
      if (rows.some((r) => r.error)) failed = true;
      results.push(...rows);
      continue;
    }
    // The floor forwards the relay scenario's traffic only.
    for (const target of scenario === "relay" ? [...relays, ...floors] : relays) {
      if (target.kind === "floor") {
        const why =
          floorUnavailable(target.udpIo) ??
          (opts.transport !== "udp" || opts.mode !== "channel"
            ? "the floor forwards UDP ChannelData only (--transport udp --mode channel)"
            : undefined);
        if (why) {
          results.push({
            scenario,
            server: targetName(target),
            metrics: [],
            notes: [],
            skipped: why,
          });
          continue;
        }
      }
      let server: RunningServer | undefined;
      try {
        server = await start(target);
        process.stderr.write(
          `# ${scenario} on ${server.name} (pid ${server.pid ?? "-"}, port ${server.port})\n`,
        );
        const result = await scenarios[scenario]!({ server, opts, progress });
        result.udpIo ??= server.udpIo;
        results.push(result);
      } catch (e) {
        failed = true;
        progress.stop();
        const msg = e instanceof Error ? e.message : String(e);
        process.stderr.write(`# ${scenario} on ${targetName(target)} failed: ${msg}\n`);
        results.push({
          scenario,
          server: server?.name ?? targetName(target),
          metrics: [],
          notes: [],
          error: msg,
          ...(server?.udpIo ? { udpIo: server.udpIo } : {}),
        });
      } finally {
        await server?.stop();
      }
    }
  }
  addFloorNotes(results);

  const report: BenchReport = {
    tool: "turnpike-bench",
    machine: machineInfo(repoRoot),
    options: opts,
    servers: [...servers.values()],
    results,
    generator: {
      pid: process.pid,
      note: "generator CPU = this process; echo peer CPU = its child process; both are reported per relay run",
    },
  };
  process.stdout.write(`${renderTable(report)}\n`);
  const outDir = path.isAbsolute(argv.out) ? argv.out : path.resolve(repoRoot, argv.out);
  const written = writeOutputs(report, outDir, argv.json);
  process.stderr.write(
    `# report: ${path.relative(process.cwd(), written.html)} (also ${path.relative(process.cwd(), written.latest)})${written.json ? `, JSON: ${written.json}` : ""}\n`,
  );
  return failed ? 1 : 0;
}

let stopping = false;
/** Stops every child (gracefully, then by SIGKILL) and exits; the first caller wins. */
function stopAndExit(code: number, why: string): void {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`\n# ${why}: stopping the servers\n`);
  // stopAll gives up on each child after its grace period; this bounds the whole of it.
  setTimeout(() => process.exit(code), 10_000).unref();
  void stopAll().finally(() => process.exit(code));
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => stopAndExit(130, sig));
}
const fatal = (kind: string) => (e: unknown) => {
  process.stderr.write(
    `turnpike-bench: ${kind}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
  );
  stopAndExit(1, kind);
};
process.on("uncaughtException", fatal("uncaught exception"));
process.on("unhandledRejection", fatal("unhandled rejection"));
// Whatever path ends the process (process.exit included), no child outlives it: a synchronous
// SIGKILL by PID of every child still tracked (a graceful stop has already untracked its own).
process.on("exit", killTrackedNow);

main()
  .then((code) => {
    process.exitCode = code;
    // Sockets of closed clients may linger a tick; do not wait on them.
    setTimeout(() => process.exit(code), 100).unref();
  })
  .catch(async (e) => {
    await stopAll();
    process.stderr.write(`turnpike-bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
