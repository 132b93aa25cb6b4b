// `relay`: N allocations relay paced traffic to an echo peer and back. Every packet carries
// (phase, sequence, send time) so the client measures the round trip and counts loss.
import os from "node:os";
import * as hdr from "hdr-histogram-js";
import type { FloorStats } from "../floor/floor.js";
import { type EchoPeer, startEchoPeer } from "../load/peer.js";
import { MAX_TCP_WRITE_QUEUE, TurnLoadClient } from "../load/turn-load-client.js";
import { cpuMicros, nowUs, rssBytes, udpDropCounters } from "../proc.js";
import { closeAll, type OpenedAllocation, openAllocations } from "./setup.js";
import type { Metric, RampPoint, ScenarioContext, ScenarioResult } from "./types.js";

const PAYLOAD_HEADER = 16; // u32 phase, u32 sequence, f64 send time (ms)
/** A generator process above this share of one core is the bottleneck, not the server. */
export const SATURATION = 0.9;
const PERCENTILES = [50, 75, 90, 95, 99, 99.9, 99.99, 100];

export interface PhaseResult {
  targetRate: number;
  offeredRate: number;
  deliveredRate: number;
  sent: number;
  /** packets due but not offered: their TCP connection's write queue was full */
  notOffered: number;
  received: number;
  lossPct: number;
  histogram: hdr.Histogram;
  /**
   * server CPU µs per relayed packet, each direction counting one packet: CPU from the start
   * of sending to the last echo that came back (the drain's idle wait excluded)
   */
  serverUsPerPacket: number | null;
  /** shares of one core while sending (the drain excluded) */
  serverCore: number | null;
  generatorCore: number;
  /** generator CPU µs per round trip (send + receive + latency bookkeeping), same window */
  generatorUsPerRoundTrip: number;
  peerCore: number;
  relayedPackets: number;
  rss: number | null;
  seconds: number;
  /** machine-wide UDP receive-buffer drops during the phase (/proc/net/snmp) */
  udpRcvbufDrops: number | null;
  /** a floor on batch I/O: its module's counters over the phase (drain included) */
  floorBatch: (NonNullable<FloorStats["batch"]> & { received: number }) | null;
}

/** CPU counters of the three processes at one instant (µs; server undefined without a PID). */
interface CpuMark {
  wallUs: number;
  server: number | undefined;
  generator: number;
  peer: number | undefined;
}

function cpuMark(serverPid: number | undefined, peerPid: number): CpuMark {
  const gen = process.cpuUsage();
  return {
    wallUs: nowUs(),
    server: serverPid ? cpuMicros(serverPid) : undefined,
    generator: gen.user + gen.system,
    peer: cpuMicros(peerPid),
  };
}

/** CPU each process used between two marks; a process gone in between counts 0. */
function cpuDelta(a: CpuMark, b: CpuMark) {
  return {
    wallUs: Math.max(1, b.wallUs - a.wallUs),
    server: a.server !== undefined && b.server !== undefined ? b.server - a.server : undefined,
    generator: b.generator - a.generator,
    peer: a.peer !== undefined && b.peer !== undefined ? b.peer - a.peer : 0,
  };
}

function newHistogram(): hdr.Histogram {
  // The JS implementation: no WebAssembly to load, and fast enough at these rates.
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    useWebAssembly: false,
  });
}

export class RelayLoad {
  private phase = 0;
  private received = 0;
  private histogram = newHistogram();
  private templates: Buffer[] = [];

  constructor(
    private readonly ctx: ScenarioContext,
    private readonly allocations: OpenedAllocation[],
    private readonly peer: EchoPeer,
  ) {
    const size = Math.max(PAYLOAD_HEADER, ctx.opts.size);
    for (const a of allocations) {
      a.client.onData = (buf, off, len) => {
        if (len < PAYLOAD_HEADER || buf.readUInt32BE(off) !== this.phase) return;
        this.received++;
        const rttUs = (performance.now() - buf.readDoubleBE(off + 8)) * 1000;
        this.histogram.recordValue(rttUs < 1 ? 1 : Math.round(rttUs));
      };
      if (ctx.opts.mode === "send") {
        this.templates.push(a.client.sendIndicationTemplate(a.peer, size));
      }
    }
  }

  /** Offers `rate` packets/s for `seconds`, then waits briefly for the echoes. */
  async run(rate: number, seconds: number, label: string): Promise<PhaseResult> {
    const { opts, server, progress } = this.ctx;
    const size = Math.max(PAYLOAD_HEADER, opts.size);
    const n = this.allocations.length;
    const phase = ++this.phase;
    this.received = 0;
    this.histogram = newHistogram();
    const pid = server.pid;
    const peerStart = await this.peer.stats();
    const floorStart = await server.floor?.stats();
    const drops0 = udpDropCounters();
    const mark = (): CpuMark => cpuMark(pid, this.peer.pid);
    const start = mark();
    const t0 = performance.now();
    const total = Math.round(rate * seconds);
    // `slot` paces (packets due so far); `sent` counts those actually offered: a TCP client
    // whose write queue is full skips its slot, so the offered rate stays honest.
    let slot = 0;
    let sent = 0;
    let rr = 0;
    // Cap a single catch-up burst so a stalled tick does not fire a second's worth at once.
    const maxBurst = Math.max(50, Math.ceil(rate / 50));
    progress.start(label, total);
    let lastUpdate = t0;
    let lastReceived = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        const due = Math.min(total, Math.floor(((now - t0) / 1000) * rate));
        let burst = Math.min(due - slot, maxBurst);
        while (burst-- > 0) {
          const a = this.allocations[rr]!;
          let buf: Buffer;
          let off: number;
          if (opts.mode === "channel") {
            buf = a.client.channelDataPacket(a.channel, size);
            off = 4;
          } else {
            const t = this.templates[rr]!;
            buf = Buffer.allocUnsafe(t.length);
            t.copy(buf);
            a.client.stampTransaction(buf);
            off = TurnLoadClient.sendPayloadOffset;
          }
          buf.writeUInt32BE(phase, off);
          buf.writeUInt32BE(slot, off + 4);
          buf.writeDoubleBE(performance.now(), off + 8);
          if (a.client.send(buf)) sent++;
          slot++;
          rr = rr + 1 === n ? 0 : rr + 1;
        }
        if (now - lastUpdate >= 250) {
          const pps = ((this.received - lastReceived) * 1000) / (now - lastUpdate);
          progress.update(slot, `${Math.round(pps)} pkt/s`, `sent ${sent}`);
          lastUpdate = now;
          lastReceived = this.received;
        }
        if (slot >= total) resolve();
        else if (due - slot > 0) setImmediate(tick);
        else setTimeout(tick, 1);
      };
      tick();
    });
    const sendSeconds = (performance.now() - t0) / 1000;
    // Core shares are taken over the sending time only: the drain below idles for >= 500 ms
    // whenever a packet is lost, and counting that wait would dilute a saturated process
    // (0.5 s of sending + 0.5 s of drain = half the share) exactly at the point of loss.
    const sendEnd = mark();
    // Drain: wait until every echo is back or 500 ms pass without progress. CPU per packet
    // counts up to the last poll that saw echoes arrive (`relayEnd`): the backlog relayed
    // during the drain is in the packet count, the idle wait after it is not.
    let relayEnd = sendEnd;
    let waited = 0;
    let before = this.received;
    while (this.received < sent && waited < 2000) {
      await new Promise((r) => setTimeout(r, 50));
      waited += 50;
      if (this.received !== before) {
        relayEnd = mark();
        before = this.received;
      } else if (waited >= 500) break;
    }
    progress.update(slot, "", "draining done");
    progress.stop();
    const peerEnd = await this.peer.stats();
    const floorEnd = await server.floor?.stats();
    const drops1 = udpDropCounters();
    const received = this.received;
    this.phase++; // late echoes from now on are not counted
    // Both directions: client->peer datagrams the peer got, and peer->client ones we got.
    const relayedPackets = peerEnd.received - peerStart.received + received;
    const sending = cpuDelta(start, sendEnd);
    const relaying = cpuDelta(start, relayEnd);
    return {
      targetRate: rate,
      offeredRate: sent / sendSeconds,
      deliveredRate: received / sendSeconds,
      sent,
      notOffered: slot - sent,
      received,
      lossPct: sent > 0 ? ((sent - Math.min(sent, received)) * 100) / sent : 0,
      histogram: this.histogram,
      serverUsPerPacket:
        relaying.server !== undefined && relayedPackets > 0
          ? relaying.server / relayedPackets
          : null,
      serverCore: sending.server !== undefined ? sending.server / sending.wallUs : null,
      generatorCore: sending.generator / sending.wallUs,
      generatorUsPerRoundTrip: sent > 0 ? relaying.generator / sent : 0,
      peerCore: sending.peer / sending.wallUs,
      relayedPackets,
      rss: pid ? (rssBytes(pid) ?? null) : null,
      seconds: sendSeconds,
      udpRcvbufDrops: drops0 && drops1 ? drops1.rcvbufErrors - drops0.rcvbufErrors : null,
      floorBatch: floorDelta(floorStart, floorEnd),
    };
  }
}

/** Counter differences of a batch floor over one phase; null for anything else. */
function floorDelta(
  a: FloorStats | undefined,
  b: FloorStats | undefined,
): PhaseResult["floorBatch"] {
  if (!a?.batch || !b?.batch) return null;
  return {
    received: b.received - a.received,
    recvCalls: b.batch.recvCalls - a.batch.recvCalls,
    sendCalls: b.batch.sendCalls - a.batch.sendCalls,
    batches: b.batch.batches - a.batch.batches,
    wakeups: b.batch.wakeups - a.batch.wakeups,
    eagain: b.batch.eagain - a.batch.eagain,
    sent: b.batch.sent - a.batch.sent,
  };
}

/**
 * How the batch module batched the floor's traffic: what the relay's batch path gets at best
 * from the same load (the relay's own counters are not readable from outside its process).
 */
function floorBatchMetrics(f: NonNullable<PhaseResult["floorBatch"]>): Metric[] {
  const per = (a: number, b: number) => (b > 0 ? a / b : null);
  return [
    {
      key: "floorPacketsPerRecvmmsg",
      label: "batch I/O: datagrams per recvmmsg call",
      unit: "",
      value: per(f.received, f.recvCalls),
      digits: 2,
    },
    {
      key: "floorPacketsPerSendmmsg",
      label: "batch I/O: datagrams per sendmmsg call",
      unit: "",
      value: per(f.sent, f.sendCalls),
      digits: 2,
    },
    {
      key: "floorPacketsPerCallback",
      label: "batch I/O: datagrams per JS callback",
      unit: "",
      value: per(f.received, f.batches),
      digits: 2,
    },
    {
      key: "floorCallbacksPerWakeup",
      label: "batch I/O: JS callbacks per event-loop wake-up",
      unit: "",
      value: per(f.batches, f.wakeups),
      digits: 2,
    },
    {
      key: "floorSyscallsPerPacket",
      label: "batch I/O: recvmmsg + sendmmsg calls per relayed packet",
      unit: "",
      value: per(f.recvCalls + f.sendCalls, f.received),
      digits: 2,
    },
    {
      key: "floorEagain",
      label: "batch I/O: sends that met a full socket buffer (EAGAIN)",
      unit: "",
      value: f.eagain,
      digits: 0,
    },
  ];
}

export function latencyCurve(h: hdr.Histogram): [number, number][] {
  return PERCENTILES.map((p) => [p, p === 100 ? h.maxValue : h.getValueAtPercentile(p)]);
}

function phaseMetrics(r: PhaseResult, size: number): Metric[] {
  const mbit = (pps: number) => (pps * size * 8) / 1e6;
  const h = r.histogram;
  const us = (p: number) => (h.totalCount > 0 ? h.getValueAtPercentile(p) : null);
  return [
    { key: "offeredPps", label: "offered", unit: "pkt/s", value: r.offeredRate, better: "higher" },
    {
      key: "deliveredPps",
      label: "delivered (round trips)",
      unit: "pkt/s",
      value: r.deliveredRate,
      better: "higher",
    },
    {
      key: "deliveredMbps",
      label: "delivered payload, one direction",
      unit: "Mbit/s",
      value: mbit(r.deliveredRate),
      better: "higher",
      digits: 1,
    },
    { key: "lossPct", label: "loss", unit: "%", value: r.lossPct, better: "lower", digits: 3 },
    { key: "rttP50Us", label: "RTT p50", unit: "µs", value: us(50), better: "lower" },
    { key: "rttP90Us", label: "RTT p90", unit: "µs", value: us(90), better: "lower" },
    { key: "rttP99Us", label: "RTT p99", unit: "µs", value: us(99), better: "lower" },
    { key: "rttP999Us", label: "RTT p99.9", unit: "µs", value: us(99.9), better: "lower" },
    {
      key: "rttMaxUs",
      label: "RTT max",
      unit: "µs",
      value: h.totalCount > 0 ? h.maxValue : null,
      better: "lower",
    },
    {
      key: "serverUsPerPacket",
      label: "server CPU per relayed packet (each direction = 1)",
      unit: "µs",
      value: r.serverUsPerPacket,
      better: "lower",
      digits: 2,
    },
    {
      key: "serverCorePct",
      label: "server CPU",
      unit: "% core",
      value: r.serverCore === null ? null : r.serverCore * 100,
      better: "lower",
      digits: 1,
    },
    {
      key: "serverRssMB",
      label: "server RSS",
      unit: "MB",
      value: r.rss === null ? null : r.rss / 2 ** 20,
      better: "lower",
      digits: 1,
    },
    {
      key: "generatorCorePct",
      label: "generator CPU (bench process)",
      unit: "% core",
      value: r.generatorCore * 100,
      digits: 1,
    },
    {
      key: "peerCorePct",
      label: "echo peer CPU (child process)",
      unit: "% core",
      value: r.peerCore * 100,
      digits: 1,
    },
    {
      key: "generatorUsPerRoundTrip",
      label: "generator CPU per round trip",
      unit: "µs",
      value: r.generatorUsPerRoundTrip,
      digits: 2,
    },
    {
      key: "udpRcvbufDrops",
      label: "kernel UDP receive-buffer drops (machine-wide)",
      unit: "",
      value: r.udpRcvbufDrops,
      digits: 0,
    },
    ...(r.floorBatch ? floorBatchMetrics(r.floorBatch) : []),
  ];
}

function saturationNotes(r: PhaseResult): string[] {
  const notes: string[] = [];
  // Server, generator and echo peer share this machine's cores: when together they use
  // nearly all of them, the limit is the machine, not any one process.
  const cores = os.availableParallelism();
  const used = (r.serverCore ?? 0) + r.generatorCore + r.peerCore;
  if (used > cores * 0.8)
    notes.push(
      `machine busy: server + generator + echo peer used ${used.toFixed(2)} of ${cores} cores`,
    );
  if (r.generatorCore > SATURATION)
    notes.push(
      `generator saturated: bench process at ${(r.generatorCore * 100).toFixed(0)} % of a core; figures are a lower bound for the server`,
    );
  if (r.peerCore > SATURATION)
    notes.push(`echo peer saturated at ${(r.peerCore * 100).toFixed(0)} % of a core`);
  if (r.notOffered > 0)
    notes.push(
      `${r.notOffered} packets not offered: their TCP connection already had over ${MAX_TCP_WRITE_QUEUE >> 20} MiB queued (backpressure from the relay)`,
    );
  if (r.offeredRate < r.targetRate * 0.95)
    notes.push(`generator offered ${Math.round(r.offeredRate)} of ${r.targetRate} pkt/s asked`);
  return notes;
}

export async function relayScenario(ctx: ScenarioContext): Promise<ScenarioResult> {
  const { opts, server } = ctx;
  const count = opts.allocations ?? 100;
  const peer = await startEchoPeer(4);
  let allocations: OpenedAllocation[] = [];
  try {
    await server.floor?.setPeers(peer.addresses);
    ctx.progress.start(
      `${server.name} relay: ${server.floor ? "connecting" : "allocating"}`,
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
    const load = new RelayLoad(ctx, allocations, peer);
    const notes = [
      server.floor
        ? `${allocations.length} client sockets without TURN setup (one socket B each in the floor), ChannelData, ${opts.size}-byte payload, ${peer.addresses.length} echo peer sockets`
        : `${allocations.length} allocations over ${opts.transport.toUpperCase()}, ${opts.mode === "channel" ? "ChannelData" : "Send/Data indications"}, ${opts.size}-byte payload, ${peer.addresses.length} echo peer sockets`,
    ];
    if (open.failures > 0) notes.push(`${open.failures} allocations failed: ${open.firstError}`);
    // Warm-up: JIT, socket buffers, coturn's thread pools.
    await load.run(
      Math.min(opts.rate, 5000),
      opts.quick ? 0.3 : 1,
      `${server.name} relay: warm-up`,
    );
    // Ramp: raise the offered rate until loss reaches 0.1 % or the generator saturates. With
    // --ramp it is the measurement; otherwise a short sweep after the fixed-rate run gives the
    // report its delivered-against-offered curve and the highest loss-free rate.
    const sweep = async (stepSeconds: number, steps: number) => {
      const ramp: RampPoint[] = [];
      let best: PhaseResult | undefined;
      let last: PhaseResult | undefined;
      let rate = Math.max(1000, Math.round(opts.rate / 4));
      for (let i = 0; i < steps; i++) {
        const r = await load.run(rate, stepSeconds, `${server.name} ramp ${rate}/s`);
        last = r;
        ramp.push({
          offered: r.offeredRate,
          delivered: r.deliveredRate,
          lossPct: r.lossPct,
          p99Us: r.histogram.getValueAtPercentile(99),
          generatorCore: r.generatorCore,
        });
        if (r.lossPct >= 0.1) break;
        best = r;
        if (r.generatorCore > SATURATION || r.offeredRate < rate * 0.95) break;
        rate = Math.round(rate * 1.5);
      }
      return { ramp, best, last: last! };
    };
    const maxMetric = (best: PhaseResult | undefined) => ({
      key: "maxPpsUnderLoss",
      label: "highest offered rate with < 0.1 % loss",
      unit: "pkt/s",
      value: best ? best.offeredRate : null,
      better: "higher" as const,
    });
    if (!opts.ramp) {
      const r = await load.run(opts.rate, opts.duration, `${server.name} relay ${opts.rate}/s`);
      const metrics = phaseMetrics(r, opts.size);
      const sweepSeconds = opts.quick ? 0.5 : 2;
      const { ramp, best, last } = await sweep(sweepSeconds, opts.quick ? 3 : 8);
      metrics.push(maxMetric(best));
      return {
        scenario: "relay",
        server: server.name,
        metrics,
        notes: [
          ...notes,
          ...saturationNotes(r),
          `then a sweep of ${ramp.length} steps of ${sweepSeconds} s (x1.5 from ${ramp[0]?.offered.toFixed(0)} pkt/s) for the delivered-against-offered chart${best === last ? "" : `; it stopped at ${last.lossPct.toFixed(2)} % loss`}`,
        ],
        latency: { points: latencyCurve(r.histogram) },
        ramp,
      };
    }
    const { ramp, best, last } = await sweep(opts.duration, opts.quick ? 5 : 12);
    const shown = best ?? last;
    const metrics = phaseMetrics(shown, opts.size);
    metrics.unshift(maxMetric(best));
    return {
      scenario: "relay",
      server: server.name,
      metrics,
      notes: [
        ...notes,
        `ramp: ${ramp.length} steps of ${opts.duration} s; figures below are from the highest step under 0.1 % loss`,
        ...saturationNotes(last),
      ],
      latency: { points: latencyCurve(shown.histogram) },
      ramp,
    };
  } finally {
    ctx.progress.stop();
    await closeAll(allocations);
    await peer.stop();
  }
}
