// What every scenario receives and returns.

import type { GeneratorKind } from "../load/generator.js";
import type { DataMode, Transport } from "../load/turn-load-client.js";
import type { Progress } from "../progress.js";
import type { KernelPath, RunningServer, UdpIo } from "../servers.js";

/** The relay table's extra columns: a userspace forwarder on a UDP path, or no relay at all. */
export type FloorKind = UdpIo | "no-relay";

export interface BenchOptions {
  quick: boolean;
  /** seconds of measured load per scenario (per ramp step for --ramp) */
  duration: number;
  /** allocations; undefined = the scenario's own default */
  allocations: number | undefined;
  /** offered packets per second (round trips: one client->peer packet each) */
  rate: number;
  /** payload bytes per packet */
  size: number;
  transport: Transport;
  mode: DataMode;
  ramp: boolean;
  /** Turnpike's UDP data paths, one column each (--udp-io); empty = its default, one column */
  udpIo: UdpIo[];
  /** Turnpike's worker threads, one column each (--workers); empty = its default */
  workers: number[];
  /** Turnpike's kernel data path, one column each (--kernel-path); empty = not passed */
  kernelPath: KernelPath[];
  /** floor columns in the relay table: forwarders and no relay, one column each (--floor) */
  floor: FloorKind[];
  /** the generator of the relay scenario (--generator, after a fallback) */
  generator: GeneratorKind;
  /** why the native generator was asked for and the JavaScript one runs */
  generatorFallback?: string;
}

export interface ScenarioContext {
  server: RunningServer;
  opts: BenchOptions;
  progress: Progress;
}

/** A figure with its label and unit; value null = not measurable here (e.g. external server). */
export interface Metric {
  key: string;
  label: string;
  unit: string;
  value: number | null;
  /** how to read a Turnpike/coturn ratio: lower is better for costs and latency */
  better?: "lower" | "higher";
  digits?: number;
}

export interface LatencyCurve {
  /** [percentile, microseconds] */
  points: [number, number][];
}

export interface RampPoint {
  offered: number;
  delivered: number;
  lossPct: number;
  p99Us: number;
  generatorCore: number;
}

export interface ScenarioResult {
  scenario: string;
  server: string;
  metrics: Metric[];
  notes: string[];
  latency?: LatencyCurve;
  ramp?: RampPoint[];
  error?: string;
  /** the row could not run here (a tool is missing): the reason; not a failure */
  skipped?: string;
  /** how the row's processes were started (HTML report and JSON only) */
  commands?: string[];
  /** the UDP data path the row ran on (Turnpike's, or a floor's I/O) */
  udpIo?: UdpIo;
  /** Turnpike's kernel data path as the relay reported it at start */
  kernelPath?: string;
  /** the relay scenario's generator on this row */
  generator?: GeneratorKind;
  /** the relay scenario's ceiling search */
  ceiling?: CeilingSummary;
}

export interface CeilingSummary {
  /** the offered rate of the highest step with < 0.1 % loss */
  ppsUnderLoss: number | null;
  passedRate: number | null;
  failedRate: number | null;
  converged: boolean;
  stoppedBy: string | null;
  limitedBy: string | null;
  steps: number;
  stepSeconds: number;
}

export type Scenario = (ctx: ScenarioContext) => Promise<ScenarioResult>;
