// Starts the relays under test on loopback with equal settings and stops them by PID.
//
// Equal settings: the same relay port range, the same TURN REST shared secret and realm, no
// verbose logging, allocation quotas out of the way, one process each. coturn runs its relay
// threads inside that one process; `coturnThreads` picks how many (see README: "fairness").
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startCoturn as launchCoturn } from "@turnpike/test-support/coturn";
import { waitForStun } from "@turnpike/test-support/stun";
import { launcherNodeFlags } from "@turnpike/test-support/turnpike";
import { killByPid, live, tail, trackPid } from "./children.js";
import type { FloorStats } from "./floor/floor.js";
import type { Address } from "./load/stun-lite.js";
import { freePort } from "./ports.js";

export type ServerKind = "turnpike" | "coturn" | "external" | "floor" | "no-relay";

/** Turnpike's two UDP data paths (`--udp-io`), and the I/O a floor forwarder runs on. */
export type UdpIo = "batch" | "dgram";
export const UDP_IO: readonly UdpIo[] = ["batch", "dgram"];

/** Turnpike's kernel data path (`--kernel-path`): bound ChannelData relayed by a TC program. */
export type KernelPath = "off" | "tc";
export const KERNEL_PATHS: readonly KernelPath[] = ["off", "tc"];

/**
 * The relay would not start with an option the bench passed (today: `--kernel-path`, until the
 * relay knows it): the column is SKIPPED with the relay's own one-line error, not a result.
 */
export class RelayRefused extends Error {}

/** A floor forwarder's controls (src/floor/): it learns the echo peers and reports counters. */
export interface FloorControl {
  /** the echo peer sockets; the first packet's channel number picks one per client */
  setPeers(peers: Address[]): Promise<void>;
  stats(): Promise<FloorStats>;
}

export interface ServerSettings {
  port: number;
  minPort: number;
  maxPort: number;
  token: string;
  realm: string;
  maxAllocations: number;
  /** coturn relay threads: undefined = coturn's default (one per CPU), 0 = single-threaded */
  coturnThreads?: number;
}

export interface RunningServer {
  kind: ServerKind;
  /**
   * label for tables: "turnpike" (its default UDP path), "turnpike (batch)" / "turnpike (dgram)"
   * (a path forced with --udp-io), "coturn", "floor (batch)" / "floor (dgram)", or the external
   * address
   */
  name: string;
  host: string;
  port: number;
  /** undefined for --external (no CPU / RSS figures then) */
  pid: number | undefined;
  token: string;
  realm: string;
  /** how it was started, for the report */
  command: string;
  notes: string[];
  /** the UDP data path Turnpike reported at start, or the floor's I/O */
  udpIo?: UdpIo;
  /** the kernel data path Turnpike reported at start (`kernelPath=` in its ready line) */
  kernelPath?: string;
  /** RSS right after it was ready, before any load (cli.ts takes it) */
  idleRss?: number;
  /** the private part of it (RssAnon), without the executable's file pages */
  idleAnon?: number;
  /** only for kind "floor" */
  floor?: FloorControl;
  stop(): Promise<void>;
}

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const turnpikeBin = path.join(repoRoot, "packages/relay-server/bin/turnpike-relay.js");
const turnpikeDist = path.join(repoRoot, "packages/relay-server/dist/cli.js");

/** Stops every server and child still running (used on error and on SIGINT/SIGTERM). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((s) => s.stop()));
}

export function defaultSettings(): ServerSettings {
  return {
    port: 0,
    minPort: 49152,
    maxPort: 65535,
    token: randomBytes(18).toString("base64url"),
    realm: "bench.turnpike.test",
    maxAllocations: 20000,
  };
}

function track(
  kind: ServerKind,
  child: ChildProcess,
  host: string,
  s: ServerSettings,
  command: string,
  notes: string[],
  cleanup: () => void,
): RunningServer {
  trackPid(child);
  const server: RunningServer = {
    kind,
    name: kind,
    host,
    port: s.port,
    pid: child.pid,
    token: s.token,
    realm: s.realm,
    command,
    notes,
    stop: async () => {
      live.delete(server);
      await killByPid(child);
      cleanup();
    },
  };
  live.add(server);
  return server;
}

async function readyOrFail(
  server: RunningServer,
  child: ChildProcess,
  out: string[],
  timeoutMs: number,
): Promise<RunningServer> {
  const exited = new Promise<never>((_, reject) => {
    child.once("exit", (code, sig) =>
      reject(
        new Error(
          `${server.kind} exited during start (code ${code}, signal ${sig}): ${out[out.length - 1] ?? ""}\n${out.join("\n")}`,
        ),
      ),
    );
    child.once("error", (e) => reject(e));
  });
  exited.catch(() => {});
  try {
    await Promise.race([
      waitForStun({ host: server.host, port: server.port, totalMs: timeoutMs }),
      exited,
    ]);
    return server;
  } catch (e) {
    await server.stop();
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(msg.includes(out.join("\n")) ? msg : `${msg}\n${out.join("\n")}`);
  }
}

/** True when the relay's CLI has been built (its launcher imports dist/cli.js). */
export function turnpikeAvailable(): boolean {
  return existsSync(turnpikeBin) && existsSync(turnpikeDist);
}

/** The relay's "ready" log line names its UDP data path (`udpIo=`) and why auto fell back. */
const READY_LINE = /\bINFO ready\b.*\budpIo=(batch|dgram)\b(?:.*\budpIoFallback=(.*))?/;
/** ... and, once it has one, its kernel data path (`kernelPath=tc|off`). */
const KERNEL_PATH = /\bkernelPath=(\w+)/;

/** The ready line, once the relay's stderr has reached us (it may trail the STUN answer). */
async function readyLine(out: string[], timeoutMs = 2000): Promise<RegExpExecArray | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const line of out) {
      const m = READY_LINE.exec(line);
      if (m) return m;
    }
    if (Date.now() > deadline) return undefined;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What a Turnpike column asks of the relay; each field undefined = the relay's default. */
export interface TurnpikeVariant {
  udpIo?: UdpIo;
  workers?: number;
  kernelPath?: KernelPath;
}

/**
 * A Turnpike column's name: "turnpike", or with the path, worker count and kernel path it was
 * asked for: "turnpike (batch, 1 worker, kernel-path tc)".
 */
export function turnpikeName(v: TurnpikeVariant): string {
  const parts: string[] = [];
  if (v.udpIo) parts.push(v.udpIo);
  if (v.workers !== undefined) parts.push(v.workers === 1 ? "1 worker" : `${v.workers} workers`);
  if (v.kernelPath) parts.push(`kernel-path ${v.kernelPath}`);
  return parts.length > 0 ? `turnpike (${parts.join(", ")})` : "turnpike";
}

/**
 * Starts turnpike-relay. `udpIo` forces a UDP data path (`--udp-io`), `workers` a worker count,
 * `kernelPath` the kernel data path (`--kernel-path`); the column's name says which were asked.
 * What the relay reports at start (udpIo=, kernelPath=) is in the server and its notes. A relay
 * that will not start with `--kernel-path` throws RelayRefused with its one-line error.
 */
export async function startTurnpike(
  s: ServerSettings,
  v: TurnpikeVariant = {},
): Promise<RunningServer> {
  const { udpIo, workers, kernelPath } = v;
  if (!turnpikeAvailable()) {
    throw new Error(
      `turnpike-relay is not built (${path.relative(process.cwd(), turnpikeDist)} missing): run pnpm exec tsc -b`,
    );
  }
  const port = s.port || (await freePort(["udp", "tcp"]));
  const settings = { ...s, port };
  const args = [
    ...launcherNodeFlags(turnpikeBin),
    turnpikeBin,
    "--listen",
    `127.0.0.1:${port}`,
    "--min-port",
    String(s.minPort),
    "--max-port",
    String(s.maxPort),
    "--realm",
    s.realm,
    "--allow-loopback-peers",
    // info: a handful of lines at start and stop, nothing per packet or per allocation; the
    // "ready" line says which UDP data path runs.
    "--log-level",
    "info",
    "--health-listen",
    "off",
    "--max-allocations",
    String(s.maxAllocations),
    "--max-allocations-per-user",
    String(s.maxAllocations),
    // Every load client sends from 127.0.0.1: the per-source amplification guard would throttle
    // the generator's 401 round trips. coturn has no such limit, so equal settings = off.
    "--max-unauthenticated-rate",
    "0",
    ...(udpIo ? ["--udp-io", udpIo] : []),
    ...(workers !== undefined ? ["--workers", String(workers)] : []),
    // Not asked: off, never the relay's default (auto attaches where it can).
    "--kernel-path",
    kernelPath ?? "off",
  ];
  // The defaults are the relay's own, not whatever TURNPIKE_UDP_IO or _WORKERS this shell has.
  const { TURNPIKE_UDP_IO: _ignored, TURNPIKE_WORKERS: _ignoredToo, ...env } = process.env;
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { ...env, TURNPIKE_TOKEN: s.token },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const out: string[] = [];
  tail(child, out);
  const server = track(
    "turnpike",
    child,
    "127.0.0.1",
    settings,
    `node ${args.map((a) => path.relative(repoRoot, a) || a).join(" ")}`,
    [
      workers === 1
        ? "one Node process, one event loop"
        : workers === undefined
          ? "one Node process, --workers auto (one engine up to two cores, else one engine per core beyond the first)"
          : `one Node process, ${workers} engines, each its own event loop: engine 0 on the main thread, ${workers - 1} in worker threads`,
    ],
    () => {},
  );
  server.name = turnpikeName(v);
  try {
    await readyOrFail(server, child, out, 15000);
  } catch (e) {
    const refusal = kernelPath ? out.findLast((l) => /kernel.?path/i.test(l)) : undefined;
    throw refusal ? new RelayRefused(refusal.trim()) : e;
  }
  const ready = await readyLine(out);
  if (ready) {
    server.udpIo = ready[1] as UdpIo;
    server.notes.push(
      `UDP data path: ${ready[1]} (${udpIo ? `--udp-io ${udpIo}` : "its default, --udp-io auto"})${ready[2] ? `; auto fell back: ${ready[2]}` : ""}`,
    );
  } else {
    server.notes.push("UDP data path: not reported (no ready line in the relay's log)");
  }
  if (kernelPath) {
    const line = out.find((l) => READY_LINE.test(l));
    server.kernelPath = (line && KERNEL_PATH.exec(line)?.[1]) || undefined;
    server.notes.push(
      server.kernelPath === undefined
        ? `kernel path: not reported (asked --kernel-path ${kernelPath}; no kernelPath= in the ready line)`
        : server.kernelPath === kernelPath
          ? `kernel path: ${server.kernelPath} (--kernel-path ${kernelPath})`
          : `kernel path NOT as asked: the relay runs kernelPath=${server.kernelPath} (--kernel-path ${kernelPath})`,
    );
  }
  return server;
}

/**
 * The "no relay" column: nothing to start. The generator's sockets talk to the echo peer
 * directly, so the column measures the round trip's floor on this machine (bench/README.md).
 */
export function noRelay(): RunningServer {
  return {
    kind: "no-relay",
    name: "no relay",
    host: "127.0.0.1",
    port: 0,
    pid: undefined,
    token: "",
    realm: "",
    command: "none: the generator's sockets connect to the echo peer directly",
    notes: ["the floor of the round trip: generator <-> echo peer, same load, no relay"],
    stop: async () => {},
  };
}

/**
 * coturn with the same settings (test-support's coturn.ts knows its flags), plus what makes
 * the comparison fair: quotas and bandwidth caps off, no log (coturn logs every session).
 */
export async function startCoturn(s: ServerSettings): Promise<RunningServer> {
  const port = s.port || (await freePort(["udp", "tcp"]));
  const extraArgs = [
    "--user-quota=0", // 0 = unlimited, like Turnpike's quotas raised to the allocation bound
    "--total-quota=0",
    "--max-bps=0",
    "--no-multicast-peers",
  ];
  const notes: string[] = [];
  if (s.coturnThreads !== undefined) {
    extraArgs.push(`--relay-threads=${s.coturnThreads}`);
    notes.push(
      s.coturnThreads === 0
        ? "single-threaded (--relay-threads=0), like Turnpike's one event loop"
        : `--relay-threads=${s.coturnThreads}`,
    );
  } else {
    notes.push("coturn default threading: one relay thread per CPU plus listener/auth threads");
  }
  const coturn = await launchCoturn({
    port,
    mode: "rest",
    secret: s.token,
    realm: s.realm,
    minPort: s.minPort,
    maxPort: s.maxPort,
    log: "off",
    extraArgs,
    readyTimeoutMs: 15_000,
  });
  trackPid(coturn.process.child);
  const server: RunningServer = {
    kind: "coturn",
    name: "coturn",
    host: "127.0.0.1",
    port,
    pid: coturn.pid,
    token: s.token,
    realm: s.realm,
    command: `turnserver ${coturn.args.map((a) => a.replace(/static-auth-secret=.*/, "static-auth-secret=***")).join(" ")}`,
    notes,
    stop: async () => {
      live.delete(server);
      await coturn.stop();
    },
  };
  live.add(server);
  return server;
}

/** A relay that is already running: no PID, so no CPU or memory figures. */
export async function useExternal(hostPort: string, token: string, realm: string) {
  const m = /^(.+):(\d+)$/.exec(hostPort);
  if (!m) throw new Error(`--external wants HOST:PORT, got ${hostPort}`);
  const host = m[1]!.replace(/^\[|\]$/g, "");
  const port = Number(m[2]);
  await waitForStun({ host, port, totalMs: 5000 });
  const server: RunningServer = {
    kind: "external",
    name: `external ${hostPort}`,
    host,
    port,
    pid: undefined,
    token,
    realm,
    command: `external relay at ${hostPort}`,
    notes: ["not started by the bench: no CPU or RSS figures"],
    stop: async () => {},
  };
  return server;
}
