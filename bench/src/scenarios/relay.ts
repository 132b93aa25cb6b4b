// `relay`: N allocations relay paced traffic to an echo peer and back. Every packet carries
// (phase, sequence, send time) so the generator measures the round trip and counts loss. The
// same load runs with no relay at all (generator <-> echo peer), the floor of the round trip.
import { isIPv4 } from "node:net";
import { type GeneratorKind, JsGenerator, type LoadGenerator } from "../load/generator.js";
import { NativeGenerator } from "../load/native-generator.js";
import { startEchoPeer } from "../load/peer.js";
import { findCeiling } from "./ceiling.js";
import type { PhaseResult } from "./relay-load.js";
import { RelayLoad } from "./relay-load.js";
import {
  latencyCurve,
  limitedBy,
  phaseMetrics,
  saturationNotes,
  stepPasses,
} from "./relay-metrics.js";
import { closeAll, type OpenedAllocation, openAllocations } from "./setup.js";
import type { Metric, RampPoint, ScenarioContext, ScenarioResult } from "./types.js";

/** The ceiling search's bounds: with --ramp (steps of --duration) and as a sweep after a run. */
const CEILING = {
  tolerance: 0.05,
  minRate: 500,
  maxRate: 5_000_000,
  // Under the 300 s a TURN permission lives (RFC 8656 §9): the generator does not refresh.
  ramp: { maxSteps: 14, budgetMs: 240_000, quick: { maxSteps: 6, budgetMs: 20_000 } },
  sweep: {
    seconds: 2,
    maxSteps: 10,
    budgetMs: 60_000,
    quick: { seconds: 0.5, maxSteps: 4, budgetMs: 8_000 },
  },
};

/** Which generator a column runs: native where asked and where it can (UDP ChannelData). */
function generatorFor(ctx: ScenarioContext): { kind: GeneratorKind; note: string } {
  const { opts } = ctx;
  // The native generator takes IPv4 5-tuples (a relay --external names may be a host name).
  const nativeFits = opts.transport === "udp" && opts.mode === "channel" && isIPv4(ctx.server.host);
  if (opts.generator === "native" && nativeFits)
    return {
      kind: "native",
      note: "generator: native (turnpike-loadgen: one send per packet, echoes by recvmmsg; echo peer turnpike-echo: recvmmsg/sendmmsg)",
    };
  return {
    kind: "js",
    note: `generator: JavaScript (the bench process; echo peer: a node:dgram child)${opts.generator === "native" ? "; the native generator sends UDP ChannelData to an IPv4 address only" : ""}`,
  };
}

function setupNote(ctx: ScenarioContext, n: number, peers: number): string {
  const { opts, server } = ctx;
  if (server.kind === "no-relay")
    return `${n} client sockets straight to ${peers} echo peer sockets (no relay, no TURN, ${opts.size}-byte payloads): the floor of the round trip`;
  if (server.floor)
    return `${n} client sockets without TURN setup (one socket B each in the floor), ChannelData, ${opts.size}-byte payload, ${peers} echo peer sockets`;
  return `${n} allocations over ${opts.transport.toUpperCase()}, ${opts.mode === "channel" ? "ChannelData" : "Send/Data indications"}, ${opts.size}-byte payload, ${peers} echo peer sockets`;
}

/** Searches the ceiling with steps of `seconds`; its figures, notes and chart points. */
async function ceiling(
  ctx: ScenarioContext,
  load: RelayLoad,
  seconds: number,
  bounds: { maxSteps: number; budgetMs: number },
  seed?: PhaseResult,
) {
  const { opts, server } = ctx;
  const search = await findCeiling<PhaseResult>({
    start: opts.rate,
    ...(seed ? { seed: { rate: seed.targetRate, result: seed } } : {}),
    tolerance: CEILING.tolerance,
    minRate: CEILING.minRate,
    maxRate: CEILING.maxRate,
    ...bounds,
    measure: (rate) => load.run(rate, seconds, `${server.name} ceiling ${rate}/s`),
    passes: stepPasses,
  });
  const ramp: RampPoint[] = search.steps
    .map(({ result: r }) => ({
      offered: r.offeredRate,
      delivered: r.deliveredRate,
      lossPct: r.lossPct,
      p99Us: r.histogram.getValueAtPercentile(99),
      generatorCore: r.generatorCore,
    }))
    .sort((a, b) => a.offered - b.offered);
  const { best, limit } = search;
  const metrics: Metric[] = [
    {
      key: "maxPpsUnderLoss",
      label: "highest offered rate with < 0.1 % loss",
      unit: "pkt/s",
      value: best ? best.result.offeredRate : null,
      better: "higher",
    },
    {
      key: "ceilingFailedPps",
      label: "lowest rate that failed (>= 0.1 % loss or not offered)",
      unit: "pkt/s",
      value: limit ? limit.rate : null,
    },
  ];
  const how = `${search.steps.length} steps of ${seed ? `${seconds} s after the run at` : `${seconds} s from`} ${opts.rate} pkt/s (doubling, then bisection to ±${CEILING.tolerance * 100} %)`;
  const notes = [
    search.converged
      ? `ceiling: ${best!.rate} pkt/s passed, ${limit!.rate} failed: ${how}`
      : `ceiling not bracketed to ±${CEILING.tolerance * 100} %: stopped by ${search.stoppedBy ?? "?"} after ${how}; highest pass ${best?.rate ?? "none"}, lowest failure ${limit?.rate ?? "none"}`,
  ];
  if (limit) notes.push(`limited by ${limitedBy(limit.result, server.kind !== "no-relay")}`);
  return {
    search,
    ramp,
    metrics,
    notes,
    summary: {
      ppsUnderLoss: best?.result.offeredRate ?? null,
      passedRate: best?.rate ?? null,
      failedRate: limit?.rate ?? null,
      converged: search.converged,
      stoppedBy: search.stoppedBy ?? null,
      limitedBy: limit ? limitedBy(limit.result, server.kind !== "no-relay") : null,
      steps: search.steps.length,
      stepSeconds: seconds,
    },
  };
}

export async function relayScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts, server } = ctx;
  const count = opts.allocations ?? 100;
  const noRelay = server.kind === "no-relay";
  const gen = generatorFor(ctx);
  const peer = await startEchoPeer(gen.kind, 4);
  let allocations: OpenedAllocation[] = [];
  let generator: LoadGenerator | undefined;
  try {
    await server.floor?.setPeers(peer.addresses);
    ctx.progress.start(
      `${server.name} relay: ${server.kind === "turnpike" || server.kind === "coturn" || server.kind === "external" ? "allocating" : "connecting"}`,
      count,
    );
    const open = await openAllocations({
      server,
      transport: opts.transport,
      count,
      peers: peer.addresses,
      bind: true,
      concurrency: 32,
      onProgress: (d) => ctx.progress.update(d, "", "allocations"),
    });
    ctx.progress.stop();
    allocations = open.opened;
    if (allocations.length === 0) throw new Error(`no allocation succeeded: ${open.firstError}`);
    generator =
      gen.kind === "native"
        ? await NativeGenerator.start(allocations, server, noRelay)
        : new JsGenerator(allocations, opts.mode, noRelay, opts.size);
    const load = new RelayLoad(ctx, generator, peer);
    const notes = [setupNote(ctx, allocations.length, peer.addresses.length), gen.note];
    if (open.failures > 0) notes.push(`${open.failures} allocations failed: ${open.firstError}`);
    // Warm-up: JIT, socket buffers, coturn's thread pools.
    await load.run(
      Math.min(opts.rate, 5000),
      opts.quick ? 0.3 : 1,
      `${server.name} relay: warm-up`,
    );
    // What the machine does without our load: other work, on a shared machine.
    await load.measureBackground(opts.quick ? 0.5 : 1);
    const base = { scenario: "relay", server: server.name, generator: gen.kind };
    if (!opts.ramp) {
      // A fixed-rate run, then a short ceiling search for the delivered-against-offered chart
      // and the highest loss-free rate.
      const r = await load.run(opts.rate, opts.duration, `${server.name} relay ${opts.rate}/s`);
      const bounds = opts.quick ? CEILING.sweep.quick : CEILING.sweep;
      const c = await ceiling(ctx, load, bounds.seconds, bounds, r);
      return {
        ...base,
        metrics: [...phaseMetrics(r, opts.size), ...c.metrics],
        notes: [...notes, ...saturationNotes(r), ...c.notes],
        latency: { points: latencyCurve(r.histogram) },
        ramp: c.ramp,
        ceiling: c.summary,
      };
    }
    const c = await ceiling(
      ctx,
      load,
      opts.duration,
      opts.quick ? CEILING.ramp.quick : CEILING.ramp,
    );
    const shown = c.search.best?.result ?? c.search.steps[c.search.steps.length - 1]!.result;
    return {
      ...base,
      metrics: [...c.metrics, ...phaseMetrics(shown, opts.size)],
      notes: [
        ...notes,
        ...c.notes,
        `figures below the ceiling are from the highest step under 0.1 % loss (${Math.round(shown.targetRate)} pkt/s)`,
        ...saturationNotes(shown),
      ],
      latency: { points: latencyCurve(shown.histogram) },
      ramp: c.ramp,
      ceiling: c.summary,
    };
  } finally {
    ctx.progress.stop();
    await generator?.close();
    await closeAll(allocations);
    await peer.stop();
  }
}
