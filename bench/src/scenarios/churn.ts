// `churn`: allocate, refresh and delete in a steady cycle; what matters is that the relay's
// memory comes back (RSS drift) and how many cycles per second it sustains.

import { cpuMicros, RssSampler, rssBytes } from "../proc.js";
import { type GeneratorRun, limitNote, setupGenerator } from "./setup-generator.js";
import type { ScenarioContext, ScenarioResult } from "./types.js";

/**
 * How long after the churn the relay's RSS is read again: memory a burst took should come back
 * (an idle relay must not keep its peak). `--quick`: a few seconds, a smoke test only.
 */
export const SETTLE_SECONDS = 30;
/** Warm-up cycles per client: 6,400 with the default 64 clients (WARM_UP_SETUPS's reasoning). */
const WARM_UP_CYCLES_PER_CLIENT = 100;
const QUICK_SETTLE_SECONDS = 3;

export async function churnScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts, server, progress } = ctx;
  const workers = opts.allocations ?? (opts.quick ? 16 : 64);
  const seconds = opts.duration;
  const pid = server.pid;
  const gen = setupGenerator(ctx);
  let run: GeneratorRun;
  let serverCpu: number | undefined;
  let windowMs: number;
  let sampler: RssSampler | undefined;
  let warmed = 0;
  try {
    // Cycles before the baseline, so nonces, pools and V8's compiled code are a running relay's:
    // one cycle per client left ~150 TurboFan compilations inside the window (bench/README.md,
    // "fourth pass"). --quick: one per client, a smoke test.
    const warmUp = await gen.churn({
      workers,
      seconds,
      warmUpCycles: opts.quick ? 1 : WARM_UP_CYCLES_PER_CLIENT,
    });
    warmed = warmUp.done;
    await new Promise((r) => setTimeout(r, 200));
    sampler = pid ? new RssSampler(pid, 200).start() : undefined;
    const cpu0 = pid ? cpuMicros(pid) : undefined;
    const t0 = performance.now();
    let cycles = 0;
    progress.start(`${server.name} churn`, Math.round(seconds * 10));
    const ticker = setInterval(() => {
      const el = performance.now() - t0;
      progress.update(Math.round(el / 100), `${Math.round((cycles * 1000) / el)} cycles/s`);
    }, 250);
    try {
      run = await gen.churn({
        workers,
        seconds,
        warmUpCycles: 0,
        onProgress: (n) => {
          cycles = n;
        },
      });
    } finally {
      clearInterval(ticker);
      progress.stop();
    }
    const cpu1 = pid ? cpuMicros(pid) : undefined;
    windowMs = performance.now() - t0;
    serverCpu = cpu0 !== undefined && cpu1 !== undefined ? cpu1 - cpu0 : undefined;
    await new Promise((r) => setTimeout(r, 300));
    sampler?.stop();
  } finally {
    sampler?.stop();
    await gen.stop();
  }
  const { done: cycles, failures, firstError } = run;
  const el = run.elapsedMs / 1000;
  const serverCore = serverCpu === undefined ? null : (100 * serverCpu) / (windowMs * 1000);
  const settle = opts.quick ? QUICK_SETTLE_SECONDS : SETTLE_SECONDS;
  progress.start(`${server.name} settling ${settle} s`, settle);
  for (let i = 0; i < settle; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    progress.update(i + 1, "RSS after the churn");
  }
  progress.stop();
  const settled = pid ? rssBytes(pid) : undefined;
  const s = sampler?.samples ?? [];
  const mb = (b: number | undefined) => (b === undefined ? null : b / 2 ** 20);
  const notes = [
    `${workers} clients, each cycling new socket -> Allocate (401 challenge, then authenticated) -> Refresh(600) -> Refresh(0) for ${seconds} s, after ${warmed} warm-up cycles`,
    gen.note,
    limitNote(gen, run, serverCore),
  ];
  if (failures > 0) notes.push(`${failures} cycles failed; first: ${firstError}`);
  return {
    scenario: "churn",
    server: server.name,
    generator: gen.kind,
    metrics: [
      {
        key: "cyclesPerSec",
        label: "cycles (allocate, refresh, delete)",
        unit: "/s",
        value: cycles / el,
        better: "higher",
      },
      {
        key: "failedCycles",
        label: "failed cycles",
        unit: "",
        value: failures,
        better: "lower",
        digits: 0,
      },
      {
        key: "serverUsPerCycle",
        // A fresh socket has no nonce yet: its Allocate is answered 401 first (RFC 8489
        // §9.2.4), so a cycle is 4 requests. Failed cycles cost CPU too: divided by attempts.
        label: "server CPU per attempted cycle (4 requests: 401, Allocate, Refresh, Refresh(0))",
        unit: "µs",
        value:
          serverCpu !== undefined && cycles + failures > 0 ? serverCpu / (cycles + failures) : null,
        better: "lower",
        digits: 1,
      },
      {
        key: "serverCorePercent",
        label: "server CPU while churning (% of one core)",
        unit: "%",
        value: serverCore,
        digits: 0,
      },
      {
        key: "generatorCorePercent",
        // The generator is single-threaded: near 100 % of one core it, not the relay, is what
        // limits cycles/s (the notes say which it was).
        label: gen.cpuLabel,
        unit: "%",
        value: (100 * run.generatorCpuMicros) / (el * 1e6),
        digits: 0,
      },
      {
        key: "rssStartMB",
        label: "server RSS at start",
        unit: "MB",
        value: mb(s[0]?.rss),
        digits: 1,
      },
      {
        key: "rssEndMB",
        label: "server RSS at end",
        unit: "MB",
        value: mb(s[s.length - 1]?.rss),
        digits: 1,
      },
      {
        key: "rssPeakMB",
        label: "server RSS peak",
        unit: "MB",
        value: sampler ? mb(sampler.peak) : null,
        better: "lower",
        digits: 1,
      },
      {
        key: "rssDriftMB",
        label: "server RSS drift (end - start)",
        unit: "MB",
        value: s.length ? mb(s[s.length - 1]!.rss - s[0]!.rss) : null,
        better: "lower",
        digits: 2,
      },
      {
        key: "rssSettledMB",
        label: `server RSS ${settle} s after the churn`,
        unit: "MB",
        value: mb(settled),
        better: "lower",
        digits: 1,
      },
      {
        key: "rssSettledVsStartPct",
        // The goal: back within 10 % of the start once the burst is over.
        label: `server RSS ${settle} s after vs start`,
        unit: "%",
        value:
          settled !== undefined && s[0] !== undefined
            ? (100 * (settled - s[0].rss)) / s[0].rss
            : null,
        better: "lower",
        digits: 1,
      },
    ],
    notes,
  };
}
