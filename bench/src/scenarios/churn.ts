// `churn`: allocate, refresh and delete in a steady cycle; what matters is that the relay's
// memory comes back (RSS drift) and how many cycles per second it sustains.

import { TurnLoadClient } from "../load/turn-load-client.js";
import { cpuMicros, RssSampler, rssBytes } from "../proc.js";
import type { ScenarioContext, ScenarioResult } from "./types.js";

/**
 * How long after the churn the relay's RSS is read again: memory a burst took should come back
 * (an idle relay must not keep its peak). `--quick`: a few seconds, a smoke test only.
 */
export const SETTLE_SECONDS = 30;
const QUICK_SETTLE_SECONDS = 3;

export async function churnScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts, server, progress } = ctx;
  const workers = opts.allocations ?? (opts.quick ? 16 : 64);
  const seconds = opts.duration;
  const pid = server.pid;
  const connect = (i: number) =>
    TurnLoadClient.connect({
      server: { address: server.host, port: server.port },
      transport: opts.transport,
      token: server.token,
      user: `churn${i}`,
    });
  // Each cycle uses a fresh client socket (a new 5-tuple), as a reconnecting client does:
  // coturn answers 437 (allocation mismatch) to a new Allocate on a 5-tuple whose
  // allocation was just deleted.
  const clients = await Promise.all(Array.from({ length: workers }, (_, i) => connect(i)));
  let cycles = 0;
  let failures = 0;
  let firstError: string | undefined;
  // One cycle first so nonces, code paths and pools are warm before the baseline.
  await Promise.all(
    clients.map(async (c) => {
      await c.allocate(600);
      await c.refresh(0);
    }),
  );
  await new Promise((r) => setTimeout(r, 200));
  const sampler = pid ? new RssSampler(pid, 200).start() : undefined;
  const cpu0 = pid ? cpuMicros(pid) : undefined;
  const gen0 = cpuMicros(process.pid) ?? 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  progress.start(`${server.name} churn`, Math.round(seconds * 10));
  const ticker = setInterval(() => {
    const el = performance.now() - t0;
    progress.update(Math.round(el / 100), `${Math.round((cycles * 1000) / el)} cycles/s`);
  }, 250);
  try {
    await Promise.all(
      clients.map(async (first, i) => {
        let c = first;
        while (performance.now() < deadline) {
          await c.close();
          try {
            c = await connect(i);
            clients[i] = c;
            await c.allocate(600);
            await c.refresh(600);
            await c.refresh(0); // RFC 8656 §7.3: lifetime 0 deletes
            cycles++;
          } catch (e) {
            failures++;
            firstError ??= e instanceof Error ? e.message : String(e);
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }),
    );
  } finally {
    clearInterval(ticker);
    progress.stop();
  }
  const el = (performance.now() - t0) / 1000;
  const cpu1 = pid ? cpuMicros(pid) : undefined;
  const gen1 = cpuMicros(process.pid) ?? 0;
  await new Promise((r) => setTimeout(r, 300));
  sampler?.stop();
  await Promise.all(clients.map((c) => c.close()));
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
    `${workers} clients, each cycling new socket -> Allocate (401 challenge, then authenticated) -> Refresh(600) -> Refresh(0) for ${seconds} s`,
  ];
  if (failures > 0) notes.push(`${failures} cycles failed; first: ${firstError}`);
  return {
    scenario: "churn",
    server: server.name,
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
          cpu0 !== undefined && cpu1 !== undefined && cycles + failures > 0
            ? (cpu1 - cpu0) / (cycles + failures)
            : null,
        better: "lower",
        digits: 1,
      },
      {
        key: "generatorCorePercent",
        // The load client runs in this (single-threaded) process: near 100 % of one core,
        // it, not the relay, is what limits cycles/s.
        label: "generator CPU (the bench process, % of one core)",
        unit: "%",
        value: (100 * (gen1 - gen0)) / (el * 1e6),
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
