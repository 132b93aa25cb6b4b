// One measured phase of the relay scenario: a generator offers a rate for some seconds, the
// echoes are drained, and the CPU of the server, the generator, the echo peer and the whole
// machine is taken over exactly the same window (bench/README.md, "How it measures").
import type * as hdr from "hdr-histogram-js";
import type { FloorStats } from "../floor/floor.js";
import type { LoadGenerator } from "../load/generator.js";
import type { EchoPeer } from "../load/peer.js";
import {
  cpuMicros,
  machineBusyMicros,
  nowUs,
  rssBytes,
  softirqThreadPids,
  udpDropCounters,
} from "../proc.js";
import type { ScenarioContext } from "./types.js";

export interface PhaseResult {
  targetRate: number;
  offeredRate: number;
  deliveredRate: number;
  sent: number;
  /** packets due but not offered: a full TCP write queue, or the kernel refused the send */
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
  generatorUsPerRoundTrip: number | null;
  peerCore: number;
  peerUsPerRoundTrip: number | null;
  /** the whole machine (/proc/stat, all CPUs) per round trip received, same window */
  machineUsPerRoundTrip: number | null;
  /**
   * the run's own processes per round trip, same window: server, generator, echo peer, the
   * bench process (when it is not the generator) and the kernel's softirq threads; what the
   * machine figure would be without other work on the machine
   */
  runUsPerRoundTrip: number | null;
  /** the whole machine while sending, in cores */
  machineCores: number | null;
  /** the machine before the load (RelayLoad.measureBackground), in cores */
  backgroundCores: number | null;
  relayedPackets: number;
  rss: number | null;
  seconds: number;
  /** UDP receive-buffer drops during the phase (/proc/net/snmp of the bench's namespace) */
  udpRcvbufDrops: number | null;
  /** a floor on batch I/O: its module's counters over the phase (drain included) */
  floorBatch: (NonNullable<FloorStats["batch"]> & { received: number }) | null;
}

/** CPU counters at one instant (µs; undefined where there is no such process or no /proc). */
interface CpuMark {
  wallUs: number;
  server: number | undefined;
  generator: number | undefined;
  peer: number | undefined;
  machine: number | undefined;
  /** the bench process when it is not the generator, plus the ksoftirqd threads */
  rest: number | undefined;
}

/** What each counter grew between two marks; undefined when either end is missing. */
function cpuDelta(a: CpuMark, b: CpuMark) {
  const d = (x: number | undefined, y: number | undefined) =>
    x !== undefined && y !== undefined ? y - x : undefined;
  return {
    wallUs: Math.max(1, b.wallUs - a.wallUs),
    server: d(a.server, b.server),
    generator: d(a.generator, b.generator),
    peer: d(a.peer, b.peer),
    machine: d(a.machine, b.machine),
    rest: d(a.rest, b.rest),
  };
}

const sum = (...xs: (number | undefined)[]) => xs.reduce<number>((s, x) => s + (x ?? 0), 0);

const per = (us: number | undefined, n: number) => (us !== undefined && n > 0 ? us / n : null);

export class RelayLoad {
  private phase = 0;
  private backgroundCores: number | null = null;
  private readonly softirqThreads = softirqThreadPids();

  constructor(
    private readonly ctx: ScenarioContext,
    private readonly generator: LoadGenerator,
    private readonly peer: EchoPeer,
  ) {}

  /**
   * The machine's CPU over `seconds` of no load (the relay idle, the generator waiting): on a
   * shared machine, other work. Phases after it report machine CPU with this subtracted too.
   */
  async measureBackground(seconds: number): Promise<void> {
    const m0 = machineBusyMicros();
    const t0 = nowUs();
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const m1 = machineBusyMicros();
    this.backgroundCores =
      m0 !== undefined && m1 !== undefined ? (m1 - m0) / Math.max(1, nowUs() - t0) : null;
  }

  private mark(): CpuMark {
    const pid = this.ctx.server.pid;
    return {
      wallUs: nowUs(),
      server: pid ? cpuMicros(pid) : undefined,
      generator: this.generator.cpuMicros(),
      peer: cpuMicros(this.peer.pid),
      machine: machineBusyMicros(),
      rest: this.restMicros(),
    };
  }

  private restMicros(): number {
    let us = sum(...this.softirqThreads.map(cpuMicros));
    if (this.generator.pid !== process.pid) {
      const own = process.cpuUsage();
      us += own.user + own.system;
    }
    return us;
  }

  /** Offers `rate` packets/s for `seconds`, then waits briefly for the echoes. */
  async run(rate: number, seconds: number, label: string): Promise<PhaseResult> {
    const { opts, server, progress } = this.ctx;
    const size = opts.size;
    const phase = ++this.phase;
    const pid = server.pid;
    const peerStart = await this.peer.stats();
    const floorStart = await server.floor?.stats();
    const drops0 = udpDropCounters();
    const total = Math.round(rate * seconds);
    progress.start(label, total);
    let last = { t: performance.now(), received: 0 };
    const start = this.mark();
    const sending = await this.generator.send(
      { id: phase, rate, seconds, size },
      (slot, received) => {
        const now = performance.now();
        const pps = ((received - last.received) * 1000) / Math.max(1, now - last.t);
        progress.update(slot, `${Math.round(pps)} pkt/s`);
        last = { t: now, received };
      },
    );
    // Core shares are taken over the sending time only: the drain below idles for >= 500 ms
    // whenever a packet is lost, and counting that wait would dilute a saturated process
    // (0.5 s of sending + 0.5 s of drain = half the share) exactly at the point of loss.
    const sendEnd = this.mark();
    // Drain: wait until every echo is back or 500 ms pass without progress. CPU per packet
    // counts up to the last poll that saw echoes arrive (`relayEnd`): the backlog relayed
    // during the drain is in the packet count, the idle wait after it is not.
    let relayEnd = sendEnd;
    let waited = 0;
    let received = await this.generator.received();
    let before = received;
    while (received < sending.sent && waited < 2000) {
      await new Promise((r) => setTimeout(r, 50));
      waited += 50;
      received = await this.generator.received();
      if (received !== before) {
        relayEnd = this.mark();
        before = received;
      } else if (waited >= 500) break;
    }
    const histogram = await this.generator.finish(); // late echoes from now on do not count
    received = histogram.totalCount;
    progress.update(sending.due, "", "draining done");
    progress.stop();
    const peerEnd = await this.peer.stats();
    const floorEnd = await server.floor?.stats();
    const drops1 = udpDropCounters();
    // Both directions: client->peer datagrams the peer got, and peer->client ones we got.
    const relayedPackets = peerEnd.received - peerStart.received + received;
    const sendWindow = cpuDelta(start, sendEnd);
    const relayWindow = cpuDelta(start, relayEnd);
    const { sent, sendSeconds } = sending;
    const share = (us: number | undefined) => (us === undefined ? null : us / sendWindow.wallUs);
    const run = sum(relayWindow.server, relayWindow.generator, relayWindow.peer, relayWindow.rest);
    return {
      targetRate: rate,
      offeredRate: sent / sendSeconds,
      deliveredRate: received / sendSeconds,
      sent,
      notOffered: sending.due - sent,
      received,
      lossPct: sent > 0 ? ((sent - Math.min(sent, received)) * 100) / sent : 0,
      histogram,
      serverUsPerPacket: per(relayWindow.server, relayedPackets),
      serverCore: share(sendWindow.server),
      generatorCore: share(sendWindow.generator) ?? 0,
      generatorUsPerRoundTrip: per(relayWindow.generator, received),
      peerCore: share(sendWindow.peer) ?? 0,
      peerUsPerRoundTrip: per(relayWindow.peer, received),
      machineUsPerRoundTrip: per(relayWindow.machine, received),
      runUsPerRoundTrip: per(run, received),
      machineCores: share(sendWindow.machine),
      backgroundCores: this.backgroundCores,
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
