// turnpike-bench: the same load against Turnpike and coturn, side by side.
import path from "node:path";
import { killTrackedNow } from "./children.js";
import { floorUnavailable, startFloor } from "./floor/start.js";
import { runMicro } from "./micro.js";
import {
  hostLoopbackAttachable,
  namespaceUnavailable,
  networkInfo,
  runInNamespace,
  runOnHost,
} from "./netns.js";
import { measureNodeFloor } from "./node-floor.js";
import { type Plan, parseArgs, plan, type Target, targetName } from "./options.js";
import { machineInfo, residentMemory } from "./proc.js";
import { Progress } from "./progress.js";
import {
  addFloorNotes,
  addNoRelayNotes,
  type BenchReport,
  idleAnonMetric,
  idleRssMetric,
  renderTable,
  writeOutputs,
} from "./report.js";
import { scenarios } from "./scenarios/index.js";
import { runTunnelScenario } from "./scenarios/tunnel.js";
import type { ScenarioResult } from "./scenarios/types.js";
import {
  noRelay,
  RelayRefused,
  type RunningServer,
  repoRoot,
  startCoturn,
  startTurnpike,
  stopAll,
  useExternal,
} from "./servers.js";

async function main(p: Plan): Promise<number> {
  const { argv, chosen, opts, base, relays, floors, kinds } = p;
  process.stderr.write(`# network: ${networkInfo().note}\n`);
  if (p.micro) await runMicro(argv.quick);
  if (chosen.length === 0) return 0;
  const progress = new Progress();
  const results: ScenarioResult[] = [];
  const servers = new Map<string, { name: string; command: string; notes: string[] }>();
  let failed = false;
  const start = async (t: Target): Promise<RunningServer> => {
    const server =
      t.kind === "turnpike"
        ? await startTurnpike(base, t)
        : t.kind === "coturn"
          ? await startCoturn(base)
          : t.kind === "floor"
            ? await startFloor(t.udpIo)
            : t.kind === "no-relay"
              ? noRelay()
              : await useExternal(argv.external!, process.env.TURNPIKE_TOKEN ?? "", base.realm);
    // Idle: ready, and nothing asked of it yet.
    const idle = server.pid ? residentMemory(server.pid) : undefined;
    server.idleRss = idle?.rss;
    server.idleAnon = idle?.anon;
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
    // The floors carry the relay scenario's traffic only.
    for (const target of scenario === "relay" ? [...relays, ...floors] : relays) {
      if (target.kind === "floor" || target.kind === "no-relay") {
        const why =
          target.kind === "no-relay"
            ? opts.transport !== "udp"
              ? "no relay: the echo peer speaks UDP only (--transport udp)"
              : undefined
            : (floorUnavailable(target.udpIo) ??
              (opts.transport !== "udp" || opts.mode !== "channel"
                ? "the floor forwards UDP ChannelData only (--transport udp --mode channel)"
                : undefined));
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
        if (server.kernelPath) result.kernelPath = server.kernelPath;
        if (server.pid) {
          result.metrics.push(idleRssMetric(server.idleRss), idleAnonMetric(server.idleAnon));
        }
        results.push(result);
      } catch (e) {
        progress.stop();
        const msg = e instanceof Error ? e.message : String(e);
        if (e instanceof RelayRefused) {
          process.stderr.write(`# ${scenario} on ${targetName(target)} SKIPPED: ${msg}\n`);
          results.push({
            scenario,
            server: targetName(target),
            metrics: [],
            notes: [],
            skipped: msg,
          });
          continue;
        }
        failed = true;
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
  addNoRelayNotes(results);

  const floor = await measureNodeFloor();
  const report: BenchReport = {
    tool: "turnpike-bench",
    machine: { ...machineInfo(repoRoot), ...(floor ? { nodeFloor: floor } : {}) },
    options: opts,
    servers: [...servers.values()],
    results,
    generator: {
      kind: opts.generator,
      note:
        opts.generator === "native"
          ? "native: bench/native/turnpike-loadgen (C) paces the load over the sockets the bench set up, turnpike-echo echoes; bench/native/turnpike-setupgen (C) sets allocations up and churns them over UDP (allocations, churn); each its own process, CPU from /proc and getrusage"
          : `JavaScript: the bench process generates (process.cpuUsage), a node:dgram child echoes${opts.generatorFallback ? ` (the native generator is not available: ${opts.generatorFallback})` : ""}`,
    },
    network: networkInfo(),
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
const fatal = (kind: string) => (e: unknown) => {
  process.stderr.write(
    `turnpike-bench: ${kind}: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`,
  );
  stopAndExit(1, kind);
};

/** Runs the plan in this process: the servers, the load, the report. */
async function runHere(p: Plan): Promise<number> {
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => stopAndExit(130, sig));
  }
  process.on("uncaughtException", fatal("uncaught exception"));
  process.on("unhandledRejection", fatal("unhandled rejection"));
  // Whatever path ends the process (process.exit included), no child outlives it: a synchronous
  // SIGKILL by PID of every child still tracked (a graceful stop has already untracked its own).
  process.on("exit", killTrackedNow);
  try {
    return await main(p);
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/**
 * As root, the run goes into a private network namespace of its own (netns.ts): this process
 * creates it, runs the bench again inside and deletes it. Otherwise, or inside, it runs here.
 */
async function entry(): Promise<number> {
  const p = plan(await parseArgs());
  const why = namespaceUnavailable(p.argv.netns);
  if (why && hostLoopbackAttachable() && p.opts.kernelPath.includes("tc")) {
    // Root on the host's loopback: the relay would attach its program to the host's `lo`.
    throw new Error(
      `--kernel-path tc attaches a BPF program to lo: only in the bench's own network namespace (as root, without --netns off); here: ${why}`,
    );
  }
  if (why) {
    runOnHost(why);
    return runHere(p);
  }
  let created = false;
  try {
    return await runInNamespace(() => {
      created = true;
    });
  } catch (e) {
    if (created) throw e;
    runOnHost(
      `could not create a network namespace: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`,
    );
    return runHere(p);
  }
}

entry()
  .then((code) => {
    process.exitCode = code;
    // Sockets of closed clients may linger a tick; do not wait on them.
    setTimeout(() => process.exit(code), 100).unref();
  })
  .catch((e) => {
    process.stderr.write(`turnpike-bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
