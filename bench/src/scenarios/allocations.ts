// `allocations`: how fast the relay sets up allocations (authenticated Allocate +
// CreatePermission + ChannelBind, the 401 round trip included) and how much memory each
// live allocation costs, up to a bound.
import { cpuMicros, openFdCount, RssSampler, rssAnonBytes, rssBytes } from "../proc.js";
import {
  CONCURRENCY,
  type GeneratorRun,
  limitNote,
  type SetupGenerator,
  setupGenerator,
} from "./setup-generator.js";
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

/**
 * Measured rounds: each sets the bound up and then deletes it all (Refresh 0), so every round
 * starts from the same state. One round of 10,000 setups lasts under a second against either
 * server, and six single-round runs of one build gave Turnpike 57-86 µs per setup and a ratio
 * to coturn of 1.08x-1.81x (bench/README.md, "The allocations rounds"): setups/s is the median
 * round's, CPU per setup is over all rounds, memory is the first round's.
 */
export const ROUNDS = 3;

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
    await pause();
    // --quick: two rounds, so a smoke test goes through the delete between rounds too.
    return await measure(ctx, gen, bound, warm.done, opts.quick ? 2 : ROUNDS);
  } finally {
    await gen.stop();
  }
}

const pause = () => new Promise((r) => setTimeout(r, 200));

/**
 * Waits (at most 30 s) until the server holds no more descriptors than before the first round,
 * give or take the 64 in flight: a deleted allocation's relay socket may be closed a while after
 * its Refresh(0) was answered (coturn), and a round started before would find the relay port
 * range still taken (508). Answers the ms waited, or undefined without a pid.
 */
async function relayPortsReleased(
  pid: number | undefined,
  before: number | undefined,
): Promise<number | undefined> {
  if (!pid || before === undefined) return undefined;
  const t0 = performance.now();
  while (performance.now() - t0 < 30_000) {
    const now = openFdCount(pid);
    if (now === undefined || now <= before + CONCURRENCY) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - t0;
}

/** One round's window: `bound` setups, the server's CPU over it. */
interface Round extends GeneratorRun {
  serverCpuMicros: number | undefined;
  windowMs: number;
}

async function openRound(
  ctx: ScenarioContext,
  gen: SetupGenerator,
  bound: number,
  label: string,
): Promise<Round> {
  const { server, progress } = ctx;
  const pid = server.pid;
  const cpu0 = pid ? cpuMicros(pid) : undefined;
  progress.start(label, bound);
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
  return {
    ...open,
    serverCpuMicros: cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined,
    windowMs,
  };
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

async function measure(
  ctx: ScenarioContext,
  gen: SetupGenerator,
  bound: number,
  warmed: number,
  rounds: number,
): Promise<ScenarioResult> {
  const { opts, server } = ctx;
  const pid = server.pid;
  const rss0 = pid ? rssBytes(pid) : undefined;
  const sampler = pid ? new RssSampler(pid, 250).start() : undefined;
  const runs: Round[] = [];
  let rss1: number | undefined;
  let anon1: number | undefined;
  const deleteFailures: string[] = [];
  const releaseWaits: number[] = [];
  const fds0 = pid ? openFdCount(pid) : undefined;
  for (let r = 0; r < rounds; r++) {
    const label = rounds > 1 ? `round ${r + 1}/${rounds}` : "";
    runs.push(await openRound(ctx, gen, bound, `${server.name} allocations ${label}`.trim()));
    if (r === 0) {
      // Memory with the first round's allocations live: the state a relay holds for them.
      await new Promise((res) => setTimeout(res, 300));
      sampler?.stop();
      rss1 = pid ? rssBytes(pid) : undefined;
      anon1 = pid ? rssAnonBytes(pid) : undefined;
    }
    if (r + 1 < rounds) {
      const deleted = await gen.deleteAll();
      if (deleted.failures > 0)
        deleteFailures.push(
          `round ${r + 1}: ${deleted.failures} deletes failed; first: ${deleted.firstError}`,
        );
      const waited = await relayPortsReleased(pid, fds0);
      if (waited !== undefined) releaseWaits.push(waited);
      await pause();
    }
  }
  const first = runs[0]!;
  const live = first.done;
  const rates = runs.map((run) => run.done / (run.elapsedMs / 1000));
  const sum = (f: (run: Round) => number) => runs.reduce((a, run) => a + f(run), 0);
  const attempted = sum((run) => run.done + run.failures);
  const failures = sum((run) => run.failures);
  const serverCpu = runs.every((run) => run.serverCpuMicros !== undefined)
    ? sum((run) => run.serverCpuMicros!)
    : undefined;
  const windowMs = sum((run) => run.windowMs);
  const serverCore = serverCpu !== undefined ? (100 * serverCpu) / (windowMs * 1000) : null;
  const overall: GeneratorRun = {
    done: sum((run) => run.done),
    failures,
    firstError: runs.find((run) => run.firstError)?.firstError,
    elapsedMs: sum((run) => run.elapsedMs),
    generatorCpuMicros: sum((run) => run.generatorCpuMicros),
  };
  const notes = [
    `bound ${bound} allocations over ${opts.transport.toUpperCase()}, ${CONCURRENCY} in flight, one client socket each, after ${warmed} warm-up setups (each deleted with Refresh 0 once set up)`,
    rounds > 1
      ? `${rounds} rounds of ${bound} setups, each deleted (Refresh 0) before the next and the next started once the server had closed their sockets (waited ${releaseWaits.map((ms) => `${(ms / 1000).toFixed(1)} s`).join(", ") || "n/a"}): setups/s is the median round's (rounds: ${rates.map((x) => Math.round(x).toLocaleString("en-US")).join(", ")} /s), CPU per setup over all rounds, memory with the first round live`
      : "one round",
    gen.note,
    limitNote(gen, overall, serverCore),
    ...deleteFailures,
  ];
  if (failures > 0) notes.push(`${failures} setups failed; first: ${overall.firstError}`);
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
          value: median(rates),
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
          value: failures,
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
          value: serverCpu !== undefined && attempted > 0 ? serverCpu / attempted : null,
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
          value: (100 * overall.generatorCpuMicros) / (overall.elapsedMs * 1000),
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
