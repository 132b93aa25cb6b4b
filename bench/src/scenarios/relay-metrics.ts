// The relay table's figures for one phase, and the notes that say what limited it.
import os from "node:os";
import type * as hdr from "hdr-histogram-js";
import { MAX_TCP_WRITE_QUEUE } from "../load/turn-load-client.js";
import type { PhaseResult } from "./relay-load.js";
import type { Metric } from "./types.js";

/** A generator process above this share of one core is the bottleneck, not the server. */
export const SATURATION = 0.9;
const PERCENTILES = [50, 75, 90, 95, 99, 99.9, 99.99, 100];

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

export function phaseMetrics(r: PhaseResult, size: number): Metric[] {
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
      key: "machineUsPerRoundTrip",
      label: "machine CPU per round trip (every process + kernel, /proc/stat)",
      unit: "µs",
      value: r.machineUsPerRoundTrip,
      better: "lower",
      digits: 2,
    },
    {
      key: "runUsPerRoundTrip",
      label:
        "CPU per round trip of the run's processes (relay, generator, echo peer, bench, ksoftirqd)",
      unit: "µs",
      value: r.runUsPerRoundTrip,
      better: "lower",
      digits: 2,
    },
    {
      key: "machineCorePct",
      label: "machine CPU while sending (all cores)",
      unit: "% core",
      value: r.machineCores === null ? null : r.machineCores * 100,
      digits: 0,
    },
    {
      key: "machineBackgroundCorePct",
      label: "machine CPU before the load (background)",
      unit: "% core",
      value: r.backgroundCores === null ? null : r.backgroundCores * 100,
      digits: 0,
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
      label: "generator CPU",
      unit: "% core",
      value: r.generatorCore * 100,
      digits: 1,
    },
    {
      key: "peerCorePct",
      label: "echo peer CPU",
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
      key: "peerUsPerRoundTrip",
      label: "echo peer CPU per round trip",
      unit: "µs",
      value: r.peerUsPerRoundTrip,
      digits: 2,
    },
    {
      key: "udpRcvbufDrops",
      label: "kernel UDP receive-buffer drops (the bench's network namespace)",
      unit: "",
      value: r.udpRcvbufDrops,
      digits: 0,
    },
    ...(r.floorBatch ? floorBatchMetrics(r.floorBatch) : []),
  ];
}

export function saturationNotes(r: PhaseResult): string[] {
  const notes: string[] = [];
  // Server, generator and echo peer share this machine's cores (with whatever else runs on
  // it): when the machine is nearly all busy, the limit is the machine, not any one process.
  const cores = os.availableParallelism();
  const ours = (r.serverCore ?? 0) + r.generatorCore + r.peerCore;
  const used = r.machineCores ?? ours;
  if (used > cores * 0.8)
    notes.push(
      `machine busy: ${used.toFixed(2)} of ${cores} cores while sending (server + generator + echo peer: ${ours.toFixed(2)})`,
    );
  if (r.generatorCore > SATURATION)
    notes.push(
      `generator saturated at ${(r.generatorCore * 100).toFixed(0)} % of a core; figures are a lower bound for the server`,
    );
  if (r.peerCore > SATURATION)
    notes.push(`echo peer saturated at ${(r.peerCore * 100).toFixed(0)} % of a core`);
  if (r.notOffered > 0)
    notes.push(
      `${r.notOffered} packets not offered: a TCP connection with over ${MAX_TCP_WRITE_QUEUE >> 20} MiB queued (backpressure from the relay), or a send the kernel refused`,
    );
  if (r.offeredRate < r.targetRate * 0.95)
    notes.push(`generator offered ${Math.round(r.offeredRate)} of ${r.targetRate} pkt/s asked`);
  return notes;
}

/** A step of the ceiling search passes when it lost < 0.1 % and the generator kept up. */
export function stepPasses(r: PhaseResult): boolean {
  return r.lossPct < 0.1 && r.offeredRate >= r.targetRate * 0.95;
}

/**
 * What stopped a column at the first step that failed: the generator when it could not offer
 * the rate or was saturated, else the echo peer when saturated, else the relay (or, with no
 * relay, the kernel and the machine), with the CPU of each.
 */
export function limitedBy(r: PhaseResult, relay: boolean): string {
  const pct = (x: number | null) => (x === null ? "n/a" : `${(x * 100).toFixed(0)} %`);
  const who =
    r.offeredRate < r.targetRate * 0.95
      ? `the generator (offered ${Math.round(r.offeredRate)} of ${r.targetRate} pkt/s)`
      : r.generatorCore > SATURATION
        ? "the generator (saturated)"
        : r.peerCore > SATURATION
          ? "the echo peer (saturated)"
          : relay
            ? "the relay"
            : "the kernel and the machine (no process saturated)";
  const machine = r.machineCores === null ? "" : `, machine ${r.machineCores.toFixed(2)} cores`;
  // A machine near full while the run's own processes use little of it: other work took the
  // cores, and the step says more about that than about the relay.
  const cores = os.availableParallelism();
  const ours = (r.serverCore ?? 0) + r.generatorCore + r.peerCore;
  const crowded =
    r.machineCores !== null && r.machineCores > cores * 0.9 && ours < r.machineCores * 0.6
      ? `; the machine was busy with other work (relay + generator + echo peer used ${ours.toFixed(2)} of the ${r.machineCores.toFixed(2)} cores busy)`
      : "";
  return `${who}: at ${r.targetRate} pkt/s ${r.lossPct.toFixed(2)} % loss; CPU of a core: relay ${pct(r.serverCore)}, generator ${pct(r.generatorCore)}, echo peer ${pct(r.peerCore)}${machine}${crowded}`;
}
