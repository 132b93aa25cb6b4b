// The bench's native helpers (bench/native/*.c: turnpike-loadgen, turnpike-setupgen and
// turnpike-echo): where
// they are, whether they are built (and building them when a source is newer than its binary),
// and a child process that answers one line per command on stdin/stdout.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { killByPid, live, type Stoppable, trackPid } from "../children.js";
import { repoRoot } from "../servers.js";

const nativeDir = path.join(repoRoot, "bench/native");
const buildScript = path.join(repoRoot, "bench/scripts/build-native.mjs");
export const NATIVE_PROGRAMS = ["turnpike-loadgen", "turnpike-setupgen", "turnpike-echo"] as const;
export type NativeProgram = (typeof NATIVE_PROGRAMS)[number];

export function nativeBinary(name: NativeProgram): string {
  return path.join(nativeDir, "build", name);
}

function upToDate(name: NativeProgram): boolean {
  const binary = nativeBinary(name);
  if (!existsSync(binary)) return false;
  const built = statSync(binary).mtimeMs;
  // Every program includes common.h (and maybe other headers): a header changed rebuilds all.
  const headers = readdirSync(nativeDir).filter((f) => f.endsWith(".h"));
  return [`${name}.c`, ...headers].every((f) => statSync(path.join(nativeDir, f)).mtimeMs <= built);
}

let availability: { reason: string | undefined } | undefined;

/**
 * Why the native generator cannot run here, or undefined when it can. Built at install
 * (bench/scripts/build-native.mjs); rebuilt here, once per bench run, when a source is newer.
 */
export function nativeUnavailable(): string | undefined {
  availability ??= { reason: checkNative() };
  return availability.reason;
}

function checkNative(): string | undefined {
  if (process.platform !== "linux") return `${process.platform} is not Linux`;
  if (NATIVE_PROGRAMS.every(upToDate)) return undefined;
  const run = spawnSync(process.execPath, [buildScript, "--strict"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 60_000,
  });
  if (run.status === 0) return undefined;
  const line = (run.stderr || run.stdout || "").trim().split("\n").pop() ?? "";
  // The script's own line: "...: native generator not built (REASON); the bench will use ...".
  const why = /not built \((.*)\);/.exec(line)?.[1] ?? line;
  return `not built: ${why || `build-native.mjs exited with ${run.status ?? run.signal}`}`;
}

interface Waiter {
  prefix: string;
  resolve: (fields: string[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * A native helper: commands in on stdin, one answer line each on stdout. Lines other than the
 * one awaited go to `onLine` (the generator's progress lines); an `error ...` line fails what
 * waits. Registered like every child of the bench: stopped by PID, on errors and Ctrl-C too.
 */
export class LineProcess implements Stoppable {
  readonly child: ChildProcess;
  readonly pid: number;
  onLine: ((fields: string[]) => void) | undefined;
  private readonly out: string[] = [];
  private readonly waiters: Waiter[] = [];
  private buffered = "";
  private exitReason: string | undefined;

  constructor(
    readonly name: string,
    program: NativeProgram,
    args: string[],
  ) {
    this.child = spawn(nativeBinary(program), args, { stdio: ["pipe", "pipe", "pipe"] });
    trackPid(this.child);
    if (this.child.pid === undefined) throw new Error(`${name} did not start`);
    this.pid = this.child.pid;
    this.child.stdin?.on("error", () => {}); // a helper that died: its exit says why
    // stdout is the protocol; stderr is kept for error messages.
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (d: string) => {
      for (const l of d.split("\n")) if (l.trim() !== "") this.out.push(l);
      this.out.splice(0, Math.max(0, this.out.length - 10));
    });
    this.child.stdout?.setEncoding("utf8");
    this.child.stdout?.on("data", (d: string) => this.onData(d));
    this.child.once("exit", (code, sig) => {
      this.exitReason = `${name} exited (code ${code}, signal ${sig})${this.out.length ? `: ${this.out.slice(-3).join(" / ")}` : ""}`;
      live.delete(this);
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new Error(this.exitReason));
      }
    });
    this.child.once("error", (e) => {
      this.exitReason = `${name}: ${e.message}`;
    });
    live.add(this);
  }

  /** Sends a command without waiting for an answer. */
  send(command: string): void {
    if (this.exitReason) throw new Error(this.exitReason);
    this.child.stdin?.write(`${command}\n`);
  }

  /** The fields after `prefix` of the next line that starts with it. */
  expect(prefix: string, timeoutMs: number): Promise<string[]> {
    if (this.exitReason) return Promise.reject(new Error(this.exitReason));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        prefix,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          reject(new Error(`${this.name}: no "${prefix}" line within ${timeoutMs} ms`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** A command and its answer. */
  request(command: string, answer: string, timeoutMs = 5000): Promise<string[]> {
    const reply = this.expect(answer, timeoutMs);
    this.send(command);
    return reply;
  }

  async stop(): Promise<void> {
    live.delete(this);
    if (this.exitReason) return;
    this.child.stdin?.end(); // stdin closed: the helper exits by itself
    await killByPid(this.child, 2000);
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let nl = this.buffered.indexOf("\n");
    while (nl >= 0) {
      const fields = this.buffered.slice(0, nl).split(" ");
      this.buffered = this.buffered.slice(nl + 1);
      nl = this.buffered.indexOf("\n");
      const head = fields[0] ?? "";
      const w = this.waiters.find((x) => x.prefix === head);
      if (head === "error" && this.waiters.length > 0) {
        const first = this.waiters.shift()!;
        clearTimeout(first.timer);
        first.reject(new Error(`${this.name}: ${fields.slice(1).join(" ")}`));
      } else if (w) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(fields.slice(1));
      } else {
        this.onLine?.(fields);
      }
    }
  }
}
