// `tunnel`: TCP throughput with iperf3 to a private service through four paths, each with the
// same iperf3 settings (one stream, client -> server, --duration seconds):
//   direct      iperf3 -> iperf3 on loopback: the ceiling
//   turnpike    iperf3 -> relayed address on turnpike-relay -> turnpike-tunnel -> iperf3 -s
//   coturn      the same tunnel with coturn as the relay (RFC 6062 on both)
//   ssh -R      iperf3 -> sshd's forwarded port -> ssh client -> iperf3 -s (what users run today)
// CPU comes from /proc for the server side (relay or sshd with its session children) and the
// private side (turnpike-tunnel or the ssh client), over the iperf3 run.
import os from "node:os";
import { findExecutable } from "../children.js";
import { cpuMicros, nowUs, RssSampler, rssBytes } from "../proc.js";
import type { Progress } from "../progress.js";
import { idleRssMetric } from "../report.js";
import { RelayRefused, type RunningServer } from "../servers.js";
import {
  type IperfResult,
  iperfClientArgs,
  runIperfClient,
  startIperfServer,
} from "../tunnel/iperf.js";
import { sshTools, startSshReverse } from "../tunnel/ssh-reverse.js";
import { startTunnel, tunnelUnavailable } from "../tunnel/turnpike-tunnel.js";
import { SATURATION } from "./relay-metrics.js";
import type { BenchOptions, Metric, ScenarioResult } from "./types.js";

export type RelayKind = "turnpike" | "coturn" | "external";

export interface TunnelContext {
  /** the relays to tunnel through, in order (from --server / --external) */
  kinds: RelayKind[];
  /** starts (or attaches to) a relay the way the other scenarios do */
  startRelay(kind: RelayKind): Promise<RunningServer>;
  opts: BenchOptions;
  progress: Progress;
}

/** The processes of one path whose CPU is counted, and how to reach the service through it. */
interface PathSetup {
  host: string;
  port: number;
  serverSide: () => number[];
  clientSide: () => number[];
  /** RSS of the relay and of turnpike-tunnel once ready, before any load */
  idleRss?: { server: number | undefined; client: number | undefined };
  notes: string[];
  commands: string[];
  stop(): Promise<void>;
}

const SCENARIO = "tunnel";

function skipped(server: string, reason: string): ScenarioResult {
  return { scenario: SCENARIO, server, metrics: [], notes: [], skipped: reason };
}

/** CPU of a set of processes over the run: by PID, the set taken before and after. */
function cpuDelta(before: Map<number, number>, pids: number[]): number {
  let total = 0;
  for (const p of pids) {
    const now = cpuMicros(p);
    if (now === undefined) continue;
    total += now - (before.get(p) ?? 0);
  }
  return total;
}

async function measure(
  name: string,
  setup: PathSetup,
  iperf: string,
  ctx: TunnelContext,
): Promise<ScenarioResult> {
  const { opts, progress } = ctx;
  const seconds = opts.duration;
  const server0 = new Map(setup.serverSide().map((p) => [p, cpuMicros(p) ?? 0]));
  const client0 = new Map(setup.clientSide().map((p) => [p, cpuMicros(p) ?? 0]));
  // The private side's memory under load: sampled through the run (the tunnel client is one
  // process; ssh too).
  const clientPid = setup.clientSide()[0];
  const clientRss = clientPid === undefined ? undefined : new RssSampler(clientPid, 100).start();
  const t0 = nowUs();
  progress.start(`${name} tunnel`, Math.round(seconds * 10));
  const ticker = setInterval(() => {
    progress.update(Math.round((nowUs() - t0) / 100_000), "iperf3 running");
  }, 250);
  let r: IperfResult;
  try {
    r = await runIperfClient(iperf, setup.host, setup.port, seconds);
  } finally {
    clearInterval(ticker);
    clientRss?.stop();
    progress.stop();
  }
  const wallUs = nowUs() - t0;
  const serverPids = setup.serverSide();
  const clientPids = setup.clientSide();
  const serverCpu = serverPids.length ? cpuDelta(server0, serverPids) : null;
  const clientCpu = clientPids.length ? cpuDelta(client0, clientPids) : null;
  const pct = (us: number | null) => (us === null ? null : (us / wallUs) * 100);
  const mb = r.bytesReceived / 1e6;
  const both = serverCpu !== null && clientCpu !== null ? serverCpu + clientCpu : null;
  const mb2 = (bytes: number | undefined) => (bytes === undefined ? null : bytes / 2 ** 20);
  const rssAverage = clientRss?.samples.length
    ? clientRss.samples.reduce((s, x) => s + x.rss, 0) / clientRss.samples.length
    : undefined;
  const notes = [...setup.notes];
  for (const [side, share] of [
    ["server side (relay or sshd)", pct(serverCpu)],
    ["private side (turnpike-tunnel or ssh)", pct(clientCpu)],
  ] as const) {
    if (share !== null && share > SATURATION * 100)
      notes.push(`${side} saturated: ${share.toFixed(0)} % of a core`);
  }
  const busy =
    (pct(serverCpu) ?? 0) + (pct(clientCpu) ?? 0) + (r.clientCpuPct ?? 0) + (r.serverCpuPct ?? 0);
  if (busy > os.availableParallelism() * 100 * 0.8)
    notes.push(
      `machine busy: iperf3 (both ends) and the tunnel processes used ${busy.toFixed(0)} % of the ${os.availableParallelism() * 100} % that ${os.availableParallelism()} cores give`,
    );
  const metrics: Metric[] = [
    {
      key: "receivedMbps",
      label: "throughput at the receiver",
      unit: "Mbit/s",
      value: r.receivedMbps,
      better: "higher",
      digits: 0,
    },
    {
      key: "sentMbps",
      label: "throughput at the sender",
      unit: "Mbit/s",
      value: r.sentMbps,
      better: "higher",
      digits: 0,
    },
    {
      key: "retransmits",
      label: "TCP retransmits (sender)",
      unit: "",
      value: r.retransmits,
      digits: 0,
    },
    {
      key: "serverSideCorePct",
      label: "server-side CPU: relay or sshd",
      unit: "% core",
      value: pct(serverCpu),
      better: "lower",
      digits: 0,
    },
    {
      key: "clientSideCorePct",
      label: "private-side CPU: turnpike-tunnel or ssh",
      unit: "% core",
      value: pct(clientCpu),
      better: "lower",
      digits: 0,
    },
    {
      key: "tunnelUsPerMB",
      label: "tunnel CPU per MB carried (both sides)",
      unit: "µs",
      value: both !== null && mb > 0 ? both / mb : null,
      better: "lower",
      digits: 0,
    },
    {
      key: "clientSideRssPeakMB",
      label: "private-side RSS under load, peak",
      unit: "MB",
      value: clientRss ? mb2(clientRss.peak) : null,
      better: "lower",
      digits: 1,
    },
    {
      key: "clientSideRssAvgMB",
      label: "private-side RSS under load, average",
      unit: "MB",
      value: mb2(rssAverage),
      better: "lower",
      digits: 1,
    },
    {
      key: "clientSideIdleRssMB",
      label: "private-side RSS idle (ready, before load)",
      unit: "MB",
      value: mb2(setup.idleRss?.client),
      better: "lower",
      digits: 1,
    },
    idleRssMetric(setup.idleRss?.server),
    {
      key: "iperfSenderCpuPct",
      label: "iperf3 sender CPU (its own figure)",
      unit: "% core",
      value: r.clientCpuPct,
      digits: 0,
    },
    {
      key: "iperfReceiverCpuPct",
      label: "iperf3 receiver CPU (its own figure)",
      unit: "% core",
      value: r.serverCpuPct,
      digits: 0,
    },
  ];
  return { scenario: SCENARIO, server: name, metrics, notes, commands: setup.commands };
}

/** Sets up one path around a fresh iperf3 server, measures it, tears everything down. */
async function runPath(
  name: string,
  iperf: string,
  ctx: TunnelContext,
  setupPath: (targetPort: number) => Promise<PathSetup>,
): Promise<ScenarioResult> {
  process.stderr.write(`# tunnel: ${name}\n`);
  let target: Awaited<ReturnType<typeof startIperfServer>> | undefined;
  let setup: PathSetup | undefined;
  try {
    target = await startIperfServer(iperf);
    setup = await setupPath(target.port);
    const r = await measure(name, setup, iperf, ctx);
    r.commands = [
      `iperf3 -s -B 127.0.0.1 -p ${target.port} --forceflush`,
      ...(r.commands ?? []),
      `iperf3 ${iperfClientArgs(setup.host, setup.port, ctx.opts.duration).join(" ")}`,
    ];
    return r;
  } catch (e) {
    ctx.progress.stop();
    const msg = e instanceof Error ? e.message : String(e);
    if (e instanceof RelayRefused) return skipped(name, msg);
    process.stderr.write(`# tunnel: ${name} failed: ${msg}\n`);
    return { scenario: SCENARIO, server: name, metrics: [], notes: [], error: msg };
  } finally {
    await setup?.stop();
    await target?.child.stop();
  }
}

export async function runTunnelScenario(ctx: TunnelContext): Promise<ScenarioResult[]> {
  const iperf = findExecutable("iperf3");
  const names = ["direct", ...ctx.kinds.map(String), "ssh -R"];
  if (!iperf) return names.map((n) => skipped(n, "missing tool: iperf3 (apt install iperf3)"));
  const results: ScenarioResult[] = [];

  results.push(
    await runPath("direct", iperf, ctx, async (port) => ({
      host: "127.0.0.1",
      port,
      serverSide: () => [],
      clientSide: () => [],
      notes: ["the ceiling: iperf3 to iperf3 on loopback, no tunnel"],
      commands: [],
      stop: async () => {},
    })),
  );

  for (const kind of ctx.kinds) {
    const why =
      tunnelUnavailable() ??
      (kind === "coturn" && !findExecutable("turnserver")
        ? "missing tool: turnserver (apt install coturn)"
        : undefined);
    if (why) {
      results.push(skipped(kind, why));
      continue;
    }
    results.push(
      await runPath(kind, iperf, ctx, async (port) => {
        const relay = await ctx.startRelay(kind);
        try {
          const t = await startTunnel(relay, port);
          const relayPid = relay.pid;
          const tunnelPid = t.child.pid;
          return {
            idleRss: {
              server: relay.idleRss,
              client: tunnelPid === undefined ? undefined : rssBytes(tunnelPid),
            },
            host: t.relayedHost,
            port: t.relayedPort,
            serverSide: () => (relayPid === undefined ? [] : [relayPid]),
            clientSide: () => (tunnelPid === undefined ? [] : [tunnelPid]),
            notes: [
              `turnpike-tunnel -> ${relay.name} over TCP (RFC 6062), iperf3 to the relayed address ${t.relayedHost}:${t.relayedPort}`,
            ],
            commands: [relay.command, t.command],
            stop: async () => {
              await t.child.stop();
              await relay.stop();
            },
          };
        } catch (e) {
          await relay.stop();
          throw e;
        }
      }),
    );
  }

  const tools = sshTools();
  if (typeof tools === "string") {
    results.push(skipped("ssh -R", tools));
  } else {
    results.push(
      await runPath("ssh -R", iperf, ctx, async (port) => {
        const s = await startSshReverse(tools, port);
        const sshPid = s.ssh.pid;
        const sshdPid = s.sshdPids()[0];
        return {
          idleRss: {
            server: sshdPid === undefined ? undefined : rssBytes(sshdPid),
            client: sshPid === undefined ? undefined : rssBytes(sshPid),
          },
          host: "127.0.0.1",
          port: s.forwardPort,
          serverSide: s.sshdPids,
          clientSide: () => (sshPid === undefined ? [] : [sshPid]),
          notes: [`throwaway sshd on loopback, ${s.version} defaults: cipher ${s.negotiated}`],
          commands: [s.command],
          stop: s.stop,
        };
      }),
    );
  }
  return results;
}
