// Child processes the bench starts (relays, iperf3, turnpike-tunnel, sshd, ssh): spawned with
// their output tailed for error messages, registered so Ctrl-C and errors stop them, and always
// stopped by PID (SIGTERM, then SIGKILL), never by name.
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { accessSync, constants, readdirSync, readFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { cpuMicros } from "./proc.js";

/** Anything the bench must stop on exit. */
export interface Stoppable {
  stop(): Promise<void>;
}

/** Everything still running; `stopAll` in servers.ts stops these. */
export const live = new Set<Stoppable>();

/** PIDs of every child process still running, for the last-resort kill in `killTrackedNow`. */
const livePids = new Set<number>();

/** Registers a child's PID until it exits, so `killTrackedNow` can reach it on any exit path. */
export function trackPid(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  livePids.add(pid);
  child.once("exit", () => livePids.delete(pid));
}

/**
 * SIGKILLs every tracked child and its descendants (sshd's session children), synchronously:
 * meant for `process.on("exit")`, where nothing asynchronous runs any more. By PID only.
 */
export function killTrackedNow(): void {
  const pids = new Set<number>();
  for (const root of livePids) {
    try {
      for (const pid of processTree(root)) pids.add(pid);
    } catch {
      pids.add(root); // no /proc: the child itself at least
    }
  }
  livePids.clear();
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the child has exited. */
export function killByPid(child: ChildProcess, graceMs = 5000): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve();
  }
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(hard);
      resolve();
    };
    child.once("exit", done);
    const hard = setTimeout(() => {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
      setTimeout(resolve, 200);
    }, graceMs);
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      done();
    }
  });
}

/** Keeps the last lines of a child's output for error messages, without buffering it all. */
export function tail(child: ChildProcess, lines: string[], max = 30): void {
  const onData = (d: Buffer) => {
    for (const l of d.toString("utf8").split("\n")) {
      if (l.trim() === "") continue;
      lines.push(l);
      if (lines.length > max) lines.shift();
    }
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
}

export interface Child extends Stoppable {
  name: string;
  child: ChildProcess;
  pid: number | undefined;
  /** the last lines of stdout + stderr */
  out: string[];
  /** rejects when the child exits (or fails to spawn) before `stop` was called */
  exited: Promise<never>;
}

/** Spawns a tracked child: registered in `live`, output tailed, stopped by PID. */
export function startChild(
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions = {},
  tailLines = 30,
): Child {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
  trackPid(child);
  const out: string[] = [];
  tail(child, out, tailLines);
  let stopping = false;
  const exited = new Promise<never>((_, reject) => {
    child.once("exit", (code, sig) => {
      if (!stopping)
        reject(
          new Error(
            `${name} exited (code ${code}, signal ${sig}): ${out.slice(-5).join(" / ") || "no output"}`,
          ),
        );
    });
    child.once("error", (e) => reject(new Error(`${name}: ${e.message}`)));
  });
  exited.catch(() => {});
  const c: Child = {
    name,
    child,
    pid: child.pid,
    out,
    exited,
    stop: async () => {
      stopping = true;
      live.delete(c);
      await killByPid(child);
    },
  };
  live.add(c);
  return c;
}

/** Absolute path of an executable (PATH, then /usr/sbin and /sbin for daemons like sshd). */
export function findExecutable(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"];
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Resolves when a line of the child's output matches, rejects if it exits or times out. */
export function waitForOutput(c: Child, re: RegExp, timeoutMs: number): Promise<string> {
  return Promise.race([
    c.exited,
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        c.child.stdout?.off("data", onData);
        c.child.stderr?.off("data", onData);
        reject(
          new Error(`${c.name}: no ${re} within ${timeoutMs} ms: ${c.out.slice(-5).join(" / ")}`),
        );
      }, timeoutMs);
      let buf = "";
      const onData = (d: Buffer) => {
        buf += d.toString("utf8");
        const m = re.exec(buf);
        if (m) {
          clearTimeout(timer);
          c.child.stdout?.off("data", onData);
          c.child.stderr?.off("data", onData);
          resolve(m[0]);
        }
        if (buf.length > 65536) buf = buf.slice(-4096);
      };
      c.child.stdout?.on("data", onData);
      c.child.stderr?.on("data", onData);
    }),
  ]);
}

/** PIDs of a process and all its descendants (sshd forks a child per session). */
export function processTree(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      parent.set(Number(name), ppid);
    } catch {
      // exited while we looked
    }
  }
  const tree = [root];
  for (let i = 0; i < tree.length; i++) {
    for (const [pid, ppid] of parent) if (ppid === tree[i]) tree.push(pid);
  }
  return tree;
}

/** CPU µs of each listed process (a process gone since then counts 0). */
export function cpuOf(pids: number[]): Map<number, number> {
  return new Map(pids.map((p) => [p, cpuMicros(p) ?? 0]));
}
