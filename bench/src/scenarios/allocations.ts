// `allocations`: how fast the relay sets up allocations (authenticated Allocate +
// CreatePermission + ChannelBind, the 401 round trip included) and how much memory each
// live allocation costs, up to a bound.
import { cpuMicros, RssSampler, rssAnonBytes, rssBytes } from "../proc.js";
import { CONCURRENCY, limitNote, type SetupGenerator, setupGenerator } from "./setup-generator.js";
import type { ScenarioContext, ScenarioResult } from "./types.js";

/**
 * Setups before the window, each deleted once set up. V8 (Node 22's 12.4) compiles a function
 * with TurboFan after about 3,000 calls, so the functions a relay runs once per setup
 * (`openRelay`, `channelBind`, the challenge, the port pool) are compiled some 3,000 setups
 * after start: with a 1,000-setup warm-up, a third of Turnpike's CPU per setup in the window was
 * V8 compiling and the main thread running the path unoptimized meanwhile (bench/README.md,
 * "fourth pass"). 5,000 covers that with room; deleting each (Refresh 0) keeps them from
 * holding relay ports through the window.
 */
export const WARM_UP_SETUPS = 5000;

export async function allocationsScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts } = ctx;
  const bound = opts.allocations ?? (opts.quick ? 1000 : 10000);
  const gen = setupGenerator(ctx);
  try {
    // Warm-up, as the relay and churn scenarios have, by the same generator, the same for both
    // servers: the figures are what a setup costs a running relay, not V8 compiling the
    // request path, a one-time cost of a relay's first seconds that coturn, compiled ahead of
    // time, never pays (WARM_UP_SETUPS; --quick: a tenth of the bound, a smoke test).
    const warm = await gen.open({
      count: opts.quick ? Math.ceil(bound / 10) : WARM_UP_SETUPS,
      userPrefix: "warm",
      deleteEach: true,
    });
    await new Promise((r) => setTimeout(r, 200));
    return await measure(ctx, gen, bound, warm.done);
  } finally {
    await gen.stop();
  }
}

async function measure(
  ctx: ScenarioContext,
  gen: SetupGenerator,
  bound: number,
  warmed: number,
): Promise<ScenarioResult> {
  const { opts, server, progress } = ctx;
  const pid = server.pid;
  const rss0 = pid ? rssBytes(pid) : undefined;
  const cpu0 = pid ? cpuMicros(pid) : undefined;
  const sampler = pid ? new RssSampler(pid, 250).start() : undefined;
  progress.start(`${server.name} allocations`, bound);
  const t0 = performance.now();
  let last = t0;
  let lastDone = 0;
  const open = await gen.open({
    count: bound,
    userPrefix: "bench",
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
  const windowMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 300));
  sampler?.stop();
  const rss1 = pid ? rssBytes(pid) : undefined;
  const anon1 = pid ? rssAnonBytes(pid) : undefined;
  const live = open.done;
  const attempted = live + open.failures;
  const seconds = open.elapsedMs / 1000;
  const serverCore =
    cpu0 !== undefined && cpu1 !== undefined ? (100 * (cpu1 - cpu0)) / (windowMs * 1000) : null;
  const notes = [
    `bound ${bound} allocations over ${opts.transport.toUpperCase()}, ${CONCURRENCY} in flight, one client socket each, after ${warmed} warm-up setups (each deleted with Refresh 0 once set up)`,
    gen.note,
    limitNote(gen, open, serverCore),
  ];
  if (open.failures > 0) notes.push(`${open.failures} setups failed; first: ${open.firstError}`);
  try {
    return {
      scenario: "allocations",
      server: server.name,
      generator: gen.kind,
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
          key: "serverCorePercent",
          label: "server CPU while setting up (% of one core)",
          unit: "%",
          value: serverCore,
          digits: 0,
        },
        {
          key: "generatorCorePercent",
          // The generator is single-threaded: near 100 % of one core it, not the relay, is
          // what limits setups/s (the notes say which it was).
          label: gen.cpuLabel,
          unit: "%",
          value: (100 * open.generatorCpuMicros) / (open.elapsedMs * 1000),
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
    await gen.closeAll();
  }
}
