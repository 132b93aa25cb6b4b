// Process accounting from /proc: CPU time and resident memory of the relay under test
// and of the bench's own processes, plus a description of the machine.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";

let clockTicks: number | undefined;

/** Kernel clock ticks per second (USER_HZ), asked once from `getconf CLK_TCK`. */
export function clkTck(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of a process in microseconds, or undefined when it is gone. */
export function cpuMicros(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces: fields are counted after its ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return ((utime + stime) * 1e6) / clkTck();
  } catch {
    return undefined;
  }
}

/** Resident set size (VmRSS) in bytes, or undefined when the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Anonymous resident memory (RssAnon): the heaps (V8's and malloc's) and stacks, without code
 * and file-backed pages. The closest to "heap" that can be read from outside either relay:
 * Turnpike's V8 heap proper is only visible from inside (inspector or its own metrics).
 */
export function rssAnonBytes(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^RssAnon:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Resident memory of a process in bytes, split as the kernel counts it: `anon` is what the
 * process itself holds (heaps, stacks), `file` the pages of its executable and libraries that
 * it has mapped, shared with every other process of the same binary and dropped under memory
 * pressure. `file` moves with the page cache (how much of the binary was read in before the
 * process started), so it differs between runs and machines; `anon` does not.
 */
export interface ResidentMemory {
  rss: number;
  anon: number;
  file: number;
}

export function residentMemory(pid: number): ResidentMemory | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+)\\s+kB`, "m").exec(status)?.[1]);
    const rss = kb("VmRSS");
    if (!Number.isFinite(rss)) return undefined;
    return {
      rss: rss * 1024,
      anon: (kb("RssAnon") || 0) * 1024,
      file: (kb("RssFile") || 0) * 1024,
    };
  } catch {
    return undefined;
  }
}

/** Threads of a process (coturn runs several relay threads; Turnpike one event loop). */
export function threadCount(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^Threads:\s+(\d+)/m.exec(status);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Open file descriptors of a process (a relay holds one socket per relayed address). */
export function openFdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

export interface CpuSnapshot {
  /** monotonic wall clock, µs */
  wallUs: number;
  cpuUs: number;
}

export function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

export function snapshot(pid: number): CpuSnapshot {
  return { wallUs: nowUs(), cpuUs: cpuMicros(pid) ?? 0 };
}

/** CPU used between two snapshots as a fraction of one core (1.0 = one core busy). */
export function coreShare(a: CpuSnapshot, b: CpuSnapshot): number {
  const wall = b.wallUs - a.wallUs;
  return wall > 0 ? (b.cpuUs - a.cpuUs) / wall : 0;
}

/**
 * Samples RSS of a process periodically so a scenario can report its peak and drift,
 * not only the value at the end.
 */
export class RssSampler {
  readonly samples: { tMs: number; rss: number }[] = [];
  private timer: NodeJS.Timeout | undefined;
  private readonly t0 = Date.now();

  constructor(
    private readonly pid: number,
    private readonly everyMs = 250,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
    this.timer.unref();
    return this;
  }

  sample(): number | undefined {
    const rss = rssBytes(this.pid);
    if (rss !== undefined) this.samples.push({ tMs: Date.now() - this.t0, rss });
    return rss;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
  }

  get peak(): number {
    return this.samples.reduce((m, s) => Math.max(m, s.rss), 0);
  }
  get first(): number {
    return this.samples[0]?.rss ?? 0;
  }
  get last(): number {
    return this.samples[this.samples.length - 1]?.rss ?? 0;
  }
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memTotalBytes: number;
  kernel: string;
  node: string;
  coturn: string;
  turnpike: string;
  date: string;
  /** A bare node of the bench's own binary and the relay's V8 flags, idle (node-floor.ts). */
  nodeFloor?: ResidentMemory;
}

function coturnVersion(): string {
  try {
    const out = execFileSync("turnserver", ["--version"], {
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 5000,
    }).trim();
    let pkg = "";
    try {
      // "coturn\t4.6.1-1"
      pkg =
        execFileSync("dpkg-query", ["-W", "coturn"], {
          encoding: "utf8",
          stdio: ["ignore", "pipe", "ignore"],
          timeout: 5000,
        })
          .trim()
          .split("\t")[1] ?? "";
    } catch {
      // not a Debian system: the binary's own version is enough
    }
    return pkg ? `${out} (package ${pkg})` : out;
  } catch {
    return "not installed";
  }
}

function turnpikeVersion(repoRoot: string): string {
  try {
    const pkg = JSON.parse(
      readFileSync(`${repoRoot}/packages/relay-server/package.json`, "utf8"),
    ) as { version?: string };
    let commit = "";
    try {
      commit = execFileSync("git", ["-C", repoRoot, "rev-parse", "--short", "HEAD"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).trim();
    } catch {
      // not a git checkout
    }
    return `${pkg.version ?? "?"}${commit ? ` (${commit})` : ""}`;
  } catch {
    return "unknown";
  }
}

export function machineInfo(repoRoot: string): MachineInfo {
  let cpuModel = os.cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1]) cpuModel = m[1].trim();
  } catch {
    // os.cpus() is the fallback
  }
  return {
    cpuModel,
    cores: os.availableParallelism?.() ?? os.cpus().length,
    memTotalBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    coturn: coturnVersion(),
    turnpike: turnpikeVersion(repoRoot),
    date: new Date().toISOString(),
  };
}

/**
 * Machine-wide UDP drop counters from /proc/net/snmp: a datagram the kernel dropped because a
 * socket's receive buffer was full never shows up in any process's CPU, only here.
 */
export function udpDropCounters(): { rcvbufErrors: number; sndbufErrors: number } | undefined {
  try {
    const lines = readFileSync("/proc/net/snmp", "utf8")
      .split("\n")
      .filter((l) => l.startsWith("Udp:"));
    const names = lines[0]?.split(/\s+/) ?? [];
    const values = lines[1]?.split(/\s+/).map(Number) ?? [];
    const get = (k: string) => values[names.indexOf(k)] ?? 0;
    return { rcvbufErrors: get("RcvbufErrors"), sndbufErrors: get("SndbufErrors") };
  } catch {
    return undefined;
  }
}

/**
 * CPU the whole machine spent so far, µs: from the first line of /proc/stat (all CPUs), user +
 * nice + system + irq + softirq + steal, without idle and iowait (guest time is already in
 * user). Every process counts, and so does the kernel's work in interrupt context. Undefined
 * without /proc.
 */
export function machineBusyMicros(): number | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0);
    return Number.isFinite(busy) ? (busy * 1e6) / clkTck() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The kernel's softirq threads (ksoftirqd/N): softirq work the kernel defers under load (such
 * as loopback delivery) runs there instead of in the sending process.
 */
export function softirqThreadPids(): number[] {
  const pids: number[] = [];
  try {
    for (const name of readdirSync("/proc")) {
      if (!/^\d+$/.test(name)) continue;
      try {
        if (readFileSync(`/proc/${name}/comm`, "utf8").startsWith("ksoftirqd/"))
          pids.push(Number(name));
      } catch {
        // exited while we looked
      }
    }
  } catch {
    // no /proc
  }
  return pids;
}
