// What every scenario receives and returns.

import type { DataMode, Transport } from "../load/turn-load-client.js";
import type { Progress } from "../progress.js";
import type { RunningServer, UdpIo } from "../servers.js";

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
  /** floor forwarders in the relay table, one column each (--floor) */
  floor: UdpIo[];
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
}

export type Scenario = (ctx: ScenarioContext) => Promise<ScenarioResult>;
