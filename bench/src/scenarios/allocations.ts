// `allocations`: how fast the relay sets up allocations (authenticated Allocate +
// CreatePermission + ChannelBind, the 401 round trip included) and how much memory each
// live allocation costs, up to a bound.
import { cpuMicros, RssSampler, rssAnonBytes, rssBytes } from "../proc.js";
import { closeAll, openAllocations } from "./setup.js";
import type { ScenarioContext, ScenarioResult } from "./types.js";

export async function allocationsScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts, server, progress } = ctx;
  const bound = opts.allocations ?? (opts.quick ? 1000 : 10000);
  const pid = server.pid;
  // A fixed peer address: permissions and channels need not reach anything here.
  const peers = [{ address: "127.0.0.1", port: 9 }];
  // Warm-up, as the relay and churn scenarios have: a tenth of the bound (at most 1,000) set up
  // and closed before the window, so the figures are what a setup costs a running relay and
  // not V8 compiling the request path, a one-time cost (1.4-1.9 s of compile-thread CPU in a
  // 10,000-setup run, bench/README "Setup and churn profile") that coturn, compiled ahead of
  // time, never pays. Both servers get the same warm-up.
  const warm = await openAllocations({
    server,
    transport: opts.transport,
    count: Math.min(1000, Math.ceil(bound / 10)),
    peers,
    bind: true,
    concurrency: 64,
    userPrefix: "warm",
  });
  await closeAll(warm.opened);
  await new Promise((r) => setTimeout(r, 200));
  const rss0 = pid ? rssBytes(pid) : undefined;
  const cpu0 = pid ? cpuMicros(pid) : undefined;
  const gen0 = cpuMicros(process.pid) ?? 0;
  const sampler = pid ? new RssSampler(pid, 250).start() : undefined;
  progress.start(`${server.name} allocations`, bound);
  const t0 = performance.now();
  let last = t0;
  let lastDone = 0;
  const open = await openAllocations({
    server,
    transport: opts.transport,
    count: bound,
    peers,
    bind: true,
    concurrency: 64,
    stopOnError: false,
    onProgress: (done) => {
      const now = performance.now();
      if (now - last > 250) {
        progress.update(done, `${Math.round(((done - lastDone) * 1000) / (now - last))} alloc/s`);
        last = now;
        lastDone = done;
      }
    },
  });
  progress.stop();
  const cpu1 = pid ? cpuMicros(pid) : undefined;
  const gen1 = cpuMicros(process.pid) ?? 0;
  await new Promise((r) => setTimeout(r, 300));
  sampler?.stop();
  const rss1 = pid ? rssBytes(pid) : undefined;
  const anon1 = pid ? rssAnonBytes(pid) : undefined;
  const live = open.opened.length;
  const attempted = live + open.failures;
  const seconds = open.elapsedMs / 1000;
  const notes = [
    `bound ${bound} allocations over ${opts.transport.toUpperCase()}, 64 in flight, one client socket each, after ${warm.opened.length} warm-up setups opened and closed`,
  ];
  if (open.failures > 0) notes.push(`${open.failures} setups failed; first: ${open.firstError}`);
  try {
    return {
      scenario: "allocations",
      server: server.name,
      metrics: [
        {
          key: "setupsPerSec",
          label: "setups (Allocate+CreatePermission+ChannelBind)",
          unit: "/s",
          value: live / seconds,
          better: "higher",
        },
        {
          key: "liveAllocations",
          label: "live allocations reached",
          unit: "",
          value: live,
          better: "higher",
          digits: 0,
        },
        {
          key: "failedSetups",
          label: "failed setups",
          unit: "",
          value: open.failures,
          better: "lower",
          digits: 0,
        },
        {
          key: "serverUsPerSetup",
          // Failed setups cost the server CPU too: divide by every setup attempted, not only
          // the ones that succeeded (a failed one may have stopped short of 4 requests).
          label:
            "server CPU per attempted setup (4 requests: 401, Allocate, CreatePermission, ChannelBind)",
          unit: "µs",
          value:
            cpu0 !== undefined && cpu1 !== undefined && attempted > 0
              ? (cpu1 - cpu0) / attempted
              : null,
          better: "lower",
          digits: 1,
        },
        {
          key: "generatorCorePercent",
          // The load client runs in this (single-threaded) process: near 100 % of one core,
          // it, not the relay, is what limits setups/s.
          label: "generator CPU (the bench process, % of one core)",
          unit: "%",
          value: (100 * (gen1 - gen0)) / open.elapsedMs / 1000,
          digits: 0,
        },
        {
          key: "rssBaseMB",
          label: "server RSS before",
          unit: "MB",
          value: rss0 === undefined ? null : rss0 / 2 ** 20,
          digits: 1,
        },
        {
          key: "rssLiveMB",
          label: "server RSS with all live",
          unit: "MB",
          value: rss1 === undefined ? null : rss1 / 2 ** 20,
          better: "lower",
          digits: 1,
        },
        {
          key: "rssAnonLiveMB",
          label: "server heap-like memory with all live (RssAnon)",
          unit: "MB",
          value: anon1 === undefined ? null : anon1 / 2 ** 20,
          better: "lower",
          digits: 1,
        },
        {
          key: "bytesPerAllocation",
          label: "RSS per allocation",
          unit: "bytes",
          value: rss0 !== undefined && rss1 !== undefined && live > 0 ? (rss1 - rss0) / live : null,
          better: "lower",
        },
      ],
      notes,
    };
  } finally {
    await closeAll(open.opened);
  }
}
