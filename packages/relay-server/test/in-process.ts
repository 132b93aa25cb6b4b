// What the in-process engine suites share (engine.test.ts, engine-workers.test.ts): an engine
// started in this process with a real configuration and a captured log, bounded waits, and a
// census of what is open (handles of the kinds an engine makes, file descriptors) to show
// that a closed engine left nothing behind.
import { readdirSync } from "node:fs";
import { createLogger } from "@turnpike/runtime-kit";
import {
  batchIoAvailability,
  socketPoolCounters,
  splicePipePoolCounters,
} from "@turnpike/udp-batch";
import { parseRelayArgs } from "../src/config/parse.js";
import type { RelayConfig } from "../src/config/types.js";
import { startRelay } from "../src/engine/driver.js";
import type { WorkerContext } from "../src/shared/context.js";
import { createRelayStats, createRelayTelemetry, type RelayStats } from "../src/stats.js";
import type { RunningRelay } from "../src/types.js";

export const TOKEN = "in-process-token";
export const USER = { username: "alice", password: "in-process" };

/** The UDP data paths this host runs: dgram everywhere, batch where its module loads. */
export const UDP_PATHS = (["batch", "dgram"] as const).filter(
  (p) => p === "dgram" || batchIoAvailability().available,
);

export interface InProcessEngine {
  readonly relay: RunningRelay;
  /** What it was started with. */
  readonly config: RelayConfig;
  readonly stats: RelayStats;
  /** Every log line so far. */
  readonly lines: string[];
}

/**
 * Starts an engine listening on 127.0.0.1 port 0 with loopback peers allowed, static user
 * USER and the REST token TOKEN, relaying on `range`; `args` add to the command line, and
 * `overrides` to the configuration they make (for settings no option sets yet).
 */
export async function startEngine(
  udpIo: "batch" | "dgram",
  range: { readonly min: number; readonly max: number },
  args: readonly string[] = [],
  worker?: WorkerContext,
  overrides: Partial<RelayConfig> = {},
): Promise<InProcessEngine> {
  const parsed = parseRelayArgs(
    [
      "--listen",
      "127.0.0.1:0",
      "--allow-loopback-peers",
      "--user",
      `${USER.username}:${USER.password}`,
      "--udp-io",
      udpIo,
      // The host's loopback: never a BPF program there (the kernel path's suites make their
      // own namespaces).
      "--kernel-path",
      "off",
      "--min-port",
      String(range.min),
      "--max-port",
      String(range.max),
      ...args,
    ],
    { TURNPIKE_TOKEN: TOKEN },
    { networkInterfaces: () => ({}) },
  );
  if (parsed.command !== "relay") throw new Error(`not a relay configuration: ${parsed.command}`);
  const config: RelayConfig = { ...parsed, ...overrides };
  const lines: string[] = [];
  const logger = createLogger({ level: "debug", write: (l) => lines.push(l) });
  const stats = createRelayStats();
  const relay = await startRelay(config, {
    logger,
    metrics: { stats, telemetry: createRelayTelemetry(stats) },
    ...(worker && { worker }),
  });
  return { relay, config, stats, lines };
}

/** Waits (bounded) until `check` holds. */
export async function eventually(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within 3 s: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** What an engine may leave open: nothing, once closed. */
const HANDLE_KINDS = ["UDPWrap", "TCPSocketWrap", "TCPServerWrap", "Timeout"];

/**
 * This process's file descriptors, less what udp-batch's pools hold for whoever needs it next:
 * the unbound sockets of its socket pool (native/socket_pool.c: up to 64 per family, refilled
 * by its thread whenever an open took it below half) and this thread's idle kernel pipes for
 * spliced pipes (native/splice_pipe.c: up to 8, two fds each). Neither number is an engine's
 * doing. Read while the socket pool holds still.
 */
function fdsBesidesPools(): number {
  const native = batchIoAvailability().available;
  const held = () => (native ? socketPoolCounters().held : 0);
  const idlePipeFds = native ? 2 * splicePipePoolCounters().idle : 0;
  for (let attempt = 0; ; attempt++) {
    const before = held();
    const fds = readdirSync("/proc/self/fd").length;
    if (held() === before || attempt === 20) return fds - before - idlePipeFds;
  }
}

/** Open handles of the kinds an engine makes, and this process's file descriptors. */
export function openResources(): Record<string, number> {
  const counts: Record<string, number> = { fds: fdsBesidesPools() };
  for (const kind of HANDLE_KINDS) counts[kind] = 0;
  for (const r of process.getActiveResourcesInfo()) {
    if (r in counts) counts[r]! += 1;
  }
  return counts;
}

/**
 * What is open beyond `before`, once it settled (sockets close on the next turns of the event
 * loop; bounded): {} when nothing is. Fewer than before is fine (vitest's own timers come and
 * go), more is a leak.
 */
export async function leftOver(
  before: Record<string, number>,
  settleMs = 3000,
): Promise<Record<string, number>> {
  const deadline = Date.now() + settleMs;
  for (;;) {
    const now = openResources();
    const more = Object.fromEntries(
      Object.entries(now).filter(([kind, n]) => n > (before[kind] ?? 0)),
    );
    if (Object.keys(more).length === 0 || Date.now() > deadline) return more;
    await new Promise((r) => setTimeout(r, 20));
  }
}
