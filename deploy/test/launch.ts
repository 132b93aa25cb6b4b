// Starting turnpike-relay / turnpike-tunnel the ways operators do (a launcher command, not
// `node file.js`), signalling the PID that was started, and checking what is left afterwards:
// the exit status, the relay's own log lines and whether its ports are free again.
import { createSocket } from "node:dgram";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import {
  type ExitInfo,
  type ManagedProcess,
  sleep,
  spawnManaged,
} from "@turnpike/test-support/process";
import { httpGet } from "@turnpike/test-support/turnpike";

export const REPO = fileURLToPath(new URL("../../", import.meta.url));

/** process.env without TURNPIKE_ and OTel variables of the test runner, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("TURNPIKE_") && !k.startsWith("OTEL_") && k !== "OTLP_GRPC_ENDPOINT") {
      env[k] = v;
    }
  }
  // TURNPIKE_NODE_LINE picks the workspace's node (tools/node-lines): keep the runner's line.
  if (process.env.TURNPIKE_NODE_LINE !== undefined) {
    env.TURNPIKE_NODE_LINE = process.env.TURNPIKE_NODE_LINE;
  }
  return Object.assign(env, extra);
}

export interface Started {
  readonly proc: ManagedProcess;
  /** Every process below the started one when it became ready (pnpm's children, say). */
  readonly descendants: number[];
}

/**
 * Spawns `command args` and waits (bounded) until GET /readyz on `healthPort` answers 200 or,
 * without a health port, until `ready()` resolves true.
 */
export async function startUntilReady(
  command: string,
  args: readonly string[],
  opts: {
    env: NodeJS.ProcessEnv;
    cwd?: string;
    healthPort?: number;
    ready?: () => Promise<boolean>;
    detached?: boolean;
    timeoutMs?: number;
    /** Run as this user and group (a service manager's unprivileged user). */
    uid?: number;
    gid?: number;
  },
): Promise<Started> {
  const proc = spawnManaged(command, args, {
    env: opts.env,
    cwd: opts.cwd ?? REPO,
    detached: opts.detached ?? false,
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const ready =
    opts.ready ??
    (async () => {
      const r = await httpGet(opts.healthPort ?? 0, "/readyz", 500).catch(() => undefined);
      return r?.status === 200;
    });
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  for (;;) {
    if (proc.exited) {
      throw new Error(`${command} ${args.join(" ")} exited before ready:\n${proc.stderr}`);
    }
    if (await ready()) break;
    if (Date.now() > deadline) {
      await proc.stop("SIGKILL");
      throw new Error(`${command} ${args.join(" ")} not ready in time:\n${proc.stderr}`);
    }
    await sleep(100);
  }
  return { proc, descendants: descendantsOf(proc.pid) };
}

/** PIDs of every live process whose parent chain leads to `pid` (from /proc). */
export function descendantsOf(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      // Field 4 is the ppid; the command name (field 2) may hold spaces, so split after ")".
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(entry), ppid);
    } catch {
      // exited while we looked
    }
  }
  const out: number[] = [];
  const wanted = new Set([pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [p, pp] of parent) {
      if (wanted.has(pp) && !wanted.has(p)) {
        wanted.add(p);
        out.push(p);
        grew = true;
      }
    }
  }
  return out;
}

/** True while `pid` runs; an exited process that its (new) parent has not reaped yet is not. */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Last-resort cleanup after a failed test: SIGKILL whatever of `started` is still alive. */
export function killLeftovers(started: Started | undefined): void {
  if (started === undefined) return;
  for (const pid of [started.proc.pid, ...started.descendants]) {
    if (alive(pid)) process.kill(pid, "SIGKILL");
  }
}

export interface Stopped {
  /** How the started process itself ended. */
  readonly exit: ExitInfo;
  /** Everything it (and anything that inherited its stdout/stderr) printed. */
  readonly output: string;
  /** Descendants still alive after the started process's output closed (should be none). */
  readonly survivors: number[];
}

/**
 * Sends `signal` to the started PID, or to its process group with `group` (a terminal's
 * Ctrl-C), and waits until its stdout and stderr close: that is when the started process AND
 * every descendant that inherited them (a relay under `pnpm exec`) have exited. Bounded.
 */
export async function signalAndWait(
  started: Started,
  signal: NodeJS.Signals,
  opts: { group?: boolean; timeoutMs?: number } = {},
): Promise<Stopped> {
  const { proc } = started;
  process.kill(opts.group ? -proc.pid : proc.pid, signal);
  const timeoutMs = opts.timeoutMs ?? 20_000;
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    proc.waitExit(),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (exit === undefined) {
    killLeftovers(started);
    throw new Error(
      `still running ${timeoutMs} ms after ${signal}:\n${proc.stdout}\n${proc.stderr}`,
    );
  }
  // A process closes its pipes while exiting, a moment before it is gone: allow that moment.
  let survivors = started.descendants.filter(alive);
  for (let i = 0; i < 40 && survivors.length > 0; i++) {
    await sleep(50);
    survivors = survivors.filter(alive);
  }
  return { exit, output: `${proc.stdout}${proc.stderr}`, survivors };
}

/** Ports among `tcp`/`udp` that cannot be bound on 127.0.0.1 right now (someone holds them). */
export async function busyPorts(ports: { tcp?: number[]; udp?: number[] }): Promise<string[]> {
  const busy: string[] = [];
  for (const port of ports.tcp ?? []) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen({ host: "127.0.0.1", port, exclusive: true }, () => s.close(() => resolve(true)));
    });
    if (!ok) busy.push(`tcp/${port}`);
  }
  for (const port of ports.udp ?? []) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = createSocket("udp4");
      s.once("error", () => {
        s.close();
        resolve(false);
      });
      s.bind({ address: "127.0.0.1", port, exclusive: true }, () => s.close(() => resolve(true)));
    });
    if (!ok) busy.push(`udp/${port}`);
  }
  return busy;
}

/**
 * The environment of a machine without this workspace, for code installed elsewhere: no
 * NODE_PATH (pnpm's shims point it into the workspace, which would hide a dependency missing
 * from a tarball), no npm_/pnpm_ variables of the runner, PATH without the workspace's
 * node_modules/.bin but with the directory of the node running this test first (the one
 * `#!/usr/bin/env node` should find), plus `extra`.
 */
export function outsideEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = cleanEnv();
  delete env.NODE_PATH;
  delete env.TURNPIKE_NODE_LINE;
  for (const k of Object.keys(env)) {
    if (/^(npm|pnpm)_/i.test(k)) delete env[k];
  }
  const nodeDir = process.execPath.slice(0, process.execPath.lastIndexOf("/"));
  const path = (process.env.PATH ?? "").split(":").filter((d) => d !== "" && !d.startsWith(REPO));
  env.PATH = [nodeDir, ...path].join(":");
  return Object.assign(env, extra);
}
