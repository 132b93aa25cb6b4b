// Child processes for interop tests: bounded output buffers, a bounded stop (SIGTERM, then
// SIGKILL), and a last-resort kill of every child still alive when the test worker exits, so a
// failed suite never leaves a relay or a browser behind. A suite may run every process it
// starts inside a network namespace of its own (spawnInNamespace; netns.ts makes them).
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readlinkSync } from "node:fs";

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ManagedProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Everything the process printed on stdout so far (last `maxBufferBytes` characters). */
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves once the process has exited (never rejects). */
  waitExit(): Promise<ExitInfo>;
  /** Sends `signal` (default SIGTERM), then SIGKILL after `graceMs` (default 3000). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitInfo>;
  readonly exited: boolean;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  maxBufferBytes?: number;
  onStdout?: (chunk: string) => void;
  /** Own process group (pid == pgid), so a test can signal the group as a terminal's Ctrl-C does. */
  detached?: boolean;
  /** Run as this user and group (a root test runner starting a daemon that refuses root). */
  uid?: number;
  gid?: number;
}

const live = new Set<ChildProcess>();
let namespace: string | undefined;

/**
 * From now on, every process spawnManaged starts runs inside network namespace `ns` (through
 * `ip netns exec`, which execs the command: the pid is the command's); undefined: the test
 * process's own namespace again. Module state, so it holds for one test file (vitest isolates
 * files).
 */
export function spawnInNamespace(ns: string | undefined): void {
  namespace = ns;
}

/** The namespace spawnManaged starts processes in, if any. */
export function spawnNamespace(): string | undefined {
  return namespace;
}
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on("exit", () => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  });
}

class TailBuffer {
  private text = "";
  constructor(private readonly max: number) {}
  push(chunk: string): void {
    this.text += chunk;
    if (this.text.length > this.max) this.text = this.text.slice(this.text.length - this.max);
  }
  toString(): string {
    return this.text;
  }
}

export function spawnManaged(
  command: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ManagedProcess {
  installExitHook();
  const max = opts.maxBufferBytes ?? 1 << 20;
  const out = new TailBuffer(max);
  const err = new TailBuffer(max);
  const [cmd, argv] =
    namespace === undefined
      ? [command, args]
      : ["ip", ["netns", "exec", namespace, command, ...args]];
  const child = spawn(cmd, argv, {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    detached: opts.detached ?? false,
    stdio: ["ignore", "pipe", "pipe"],
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  live.add(child);
  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", (c: string) => {
    out.push(c);
    opts.onStdout?.(c);
  });
  child.stderr?.on("data", (c: string) => err.push(c));
  let exitInfo: ExitInfo | undefined;
  const exitPromise = new Promise<ExitInfo>((resolve) => {
    child.once("error", (e) => {
      err.push(`spawn error: ${e.message}\n`);
      live.delete(child);
      exitInfo ??= { code: -1, signal: null };
      resolve(exitInfo);
    });
    child.once("close", (code, signal) => {
      live.delete(child);
      exitInfo ??= { code, signal };
      resolve(exitInfo);
    });
  });

  return {
    get pid() {
      return child.pid ?? -1;
    },
    child,
    get stdout() {
      return out.toString();
    },
    get stderr() {
      return err.toString();
    },
    get exited() {
      return exitInfo !== undefined;
    },
    waitExit: () => exitPromise,
    async stop(signal: NodeJS.Signals = "SIGTERM", graceMs = 3000): Promise<ExitInfo> {
      if (exitInfo) return exitInfo;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      try {
        return await exitPromise;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** Rejects with `message` after `ms` unless `promise` settles first. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} (after ${ms} ms)`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds, checking every `stepMs`; throws naming `what` after `ms`. */
export async function waitUntil(
  what: string,
  cond: () => boolean,
  ms: number,
  stepMs = 50,
): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(stepMs);
  }
}

/** A process's open descriptors, as /proc/PID/fd lists them. */
export interface Descriptors {
  readonly all: number;
  /** Kernel pipe ends ("pipe:[...]"). */
  readonly pipes: number;
  /**
   * Fds beyond the first that name a socket another fd already names: duplicates (a SplicePipe
   * works on duplicates of its two sockets, udp-batch native/splice_pipe.c).
   */
  readonly duplicatedSockets: number;
}

/** Process `pid`'s descriptors now (Linux). */
export function descriptorsOf(pid: number): Descriptors {
  let all = 0;
  let pipes = 0;
  const sockets = new Map<string, number>();
  for (const name of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${name}`);
    } catch {
      continue; // closed while listing
    }
    all++;
    if (target.startsWith("pipe:")) pipes++;
    if (target.startsWith("socket:")) sockets.set(target, (sockets.get(target) ?? 0) + 1);
  }
  let duplicatedSockets = 0;
  for (const count of sockets.values()) duplicatedSockets += count - 1;
  return { all, pipes, duplicatedSockets };
}
