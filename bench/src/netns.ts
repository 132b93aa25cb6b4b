// The bench's private network namespace. Run as root, the bench creates one per run
// (`turnpike-bench-<pid>`, its loopback up), runs itself again inside it (`ip netns exec`), so
// relays, coturn, the generator, the echo peer and everything else the run starts live on a
// loopback of their own: a program the relay attaches to `lo` (its kernel path) never touches
// the host's interfaces. The outer process only waits, passes Ctrl-C on, stops what is left in
// the namespace by PID and deletes it, on success, failure and signals alike. Not root (or
// `--netns off`): the bench runs on the host's loopback, and the report says so.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { findExecutable } from "./children.js";

/** Set in the inner process's environment: the namespace it runs in. */
export const NETNS_ENV = "TURNPIKE_BENCH_NETNS";
const PREFIX = "turnpike-bench-";

export interface NetworkInfo {
  /** the private namespace of this run, or null on the host's loopback */
  namespace: string | null;
  note: string;
}

let hostReason = "";

/** Where this bench process runs, for the report's header and JSON. */
export function networkInfo(): NetworkInfo {
  const ns = process.env[NETNS_ENV];
  if (ns)
    return {
      namespace: ns,
      note: `private network namespace ${ns}: every process of the run on its own loopback, deleted at the end`,
    };
  return { namespace: null, note: `host loopback (${hostReason || "no namespace"})` };
}

/** Why this run stays on the host's loopback, or undefined when it gets a namespace. */
export function namespaceUnavailable(flag: "auto" | "off"): string | undefined {
  if (process.env[NETNS_ENV]) return "already inside the bench's namespace";
  if (flag === "off") return "--netns off";
  if (process.getuid?.() !== 0) return "not root: no private network namespace";
  if (!findExecutable("ip")) return "no ip command (iproute2): no private network namespace";
  return undefined;
}

/** Whether a run outside a namespace of the bench could attach to the host's own `lo` (root). */
export function hostLoopbackAttachable(): boolean {
  return !process.env[NETNS_ENV] && process.getuid?.() === 0;
}

/** Records why the run is on the host's loopback (for `networkInfo`). */
export function runOnHost(reason: string): void {
  hostReason = reason;
}

function ip(args: string[]): string {
  return execFileSync(findExecutable("ip") ?? "ip", args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 10_000,
  });
}

function namespaces(): string[] {
  try {
    return ip(["netns", "list"])
      .split("\n")
      .map((l) => l.split(" ")[0] ?? "")
      .filter((n) => n !== "");
  } catch {
    return [];
  }
}

function pidsIn(name: string): number[] {
  try {
    return ip(["netns", "pids", name])
      .split("\n")
      .map(Number)
      .filter((p) => p > 0);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Stops whatever still runs in the namespace (by PID: only this run's processes live there)
 * and deletes it. Synchronous, so it also runs from an exit handler.
 */
export function deleteNamespace(name: string): void {
  for (const pid of pidsIn(name)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  try {
    ip(["netns", "delete", name]);
  } catch {
    // already gone
  }
}

/** Namespaces of earlier runs whose bench process died without deleting them (SIGKILL). */
function deleteStale(): void {
  for (const name of namespaces()) {
    const pid = Number(name.slice(PREFIX.length));
    if (!name.startsWith(PREFIX) || !(pid > 0) || alive(pid)) continue;
    if (pidsIn(name).length === 0) deleteNamespace(name);
  }
}

/**
 * Creates this run's namespace and runs the bench again inside it, with the same arguments;
 * resolves with its exit code once the namespace is gone again. Throws when the namespace
 * cannot be created (before `created` is called), or the inner run cannot start.
 */
export async function runInNamespace(created: () => void): Promise<number> {
  deleteStale();
  const name = `${PREFIX}${process.pid}`;
  ip(["netns", "add", name]);
  created();
  const cleanup = () => deleteNamespace(name);
  process.once("exit", cleanup);
  let child: ChildProcess | undefined;
  try {
    ip(["-n", name, "link", "set", "lo", "up"]);
    const inner = spawn(
      findExecutable("ip") ?? "ip",
      ["netns", "exec", name, process.execPath, ...process.execArgv, ...process.argv.slice(1)],
      { stdio: "inherit", env: { ...process.env, [NETNS_ENV]: name } },
    );
    child = inner;
    // Ctrl-C reaches both processes; a SIGTERM to this one is passed on. The inner bench stops
    // its children within its own bound; past ours it is killed with the rest of the namespace.
    const forward = (sig: NodeJS.Signals) => {
      inner.kill(sig);
      setTimeout(() => inner.kill("SIGKILL"), 20_000).unref();
    };
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    return await new Promise<number>((resolve) => {
      inner.once("error", (e) => {
        process.stderr.write(`turnpike-bench: ip netns exec: ${e.message}\n`);
        resolve(2);
      });
      inner.once("exit", (code, sig) => resolve(code ?? (sig === "SIGINT" ? 130 : 1)));
    });
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    cleanup();
    process.off("exit", cleanup);
  }
}
