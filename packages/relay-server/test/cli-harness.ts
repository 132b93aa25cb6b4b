// The CLI's lifecycle in-process (cli.test.ts, cli-reload.test.ts): runCli with a fake relay
// (the lifecycle under test is the CLI's, not the relay's), process events from an
// EventEmitter, and what it writes captured.
import { EventEmitter } from "node:events";
import type { RelayConfig } from "../src/config/types.js";
import type { AllocationRow } from "../src/discovery.js";
import type { CliIo, RunningProcess } from "../src/main.js";
import type { RelayDeps, RunningRelay, StartRelay } from "../src/types.js";

export interface FakeRelay extends RunningRelay {
  calls: string[];
  /** Every applyReloadable call. */
  reloads: { config: RelayConfig; generation: number }[];
  releaseDrain(): void;
  rows: AllocationRow[];
}

// A stand-in for the socket driver: the lifecycle under test is the CLI's, not the relay's.
function fakeRelay(): FakeRelay {
  let draining = false;
  let release: () => void = () => {};
  const calls: string[] = [];
  return {
    calls,
    ready: true,
    udpIo: "dgram",
    kernelPath: "off",
    get draining() {
      return draining;
    },
    addresses: () => ({
      udp: [{ ip: "127.0.0.1", port: 3478, family: 4 }],
      tcp: [{ ip: "127.0.0.1", port: 3478, family: 4 }],
      tls: [],
    }),
    drain: (timeoutMs) => {
      calls.push(`drain ${timeoutMs}`);
      draining = true;
      return new Promise<void>((resolve) => {
        release = resolve;
      });
    },
    close: async () => {
      calls.push("close");
    },
    releaseDrain: () => release(),
    rows: [],
    allocations() {
      return this.rows;
    },
    reloads: [],
    endAllocations(which) {
      calls.push(`end ${JSON.stringify(which)}`);
      return 1;
    },
    applyReloadable(config, generation) {
      this.reloads.push({ config, generation });
      calls.push(`reload ${generation}`);
      return { allocationsEnded: 1, problems: [] };
    },
  };
}

export function harness(argv: string[], env: NodeJS.ProcessEnv, start?: StartRelay) {
  const out: string[] = [];
  const err: string[] = [];
  const exits: number[] = [];
  const events = new EventEmitter();
  let running: RunningProcess | undefined;
  const started: { config?: RelayConfig; deps?: RelayDeps } = {};
  const relay = fakeRelay();
  const io: CliIo = {
    argv,
    env,
    stdout: (t) => out.push(t),
    stderr: (l) => err.push(l),
    startRelay:
      start ??
      (async (config, deps) => {
        started.config = config;
        started.deps = deps;
        return relay;
      }),
    events: events as unknown as CliIo["events"],
    // The relay here is a stand-in: nothing of the host to check.
    preflight: async () => [],
    exit: (code) => exits.push(code),
    nowSeconds: () => 1_800_000_000,
    onRunning: (r) => {
      running = r;
    },
  };
  return { io, out, err, exits, events, relay, started, running: () => running };
}

export async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

export const RUN_ARGS = [
  "--listen",
  "127.0.0.1:3478",
  "--health-listen",
  "127.0.0.1:0",
  "--log-format",
  "json",
];
