// The native setup generator (bench/native/turnpike-setupgen.c) for the allocations and churn
// scenarios: it speaks TURN over UDP itself (Allocate with its 401 round trip, CreatePermission,
// ChannelBind; or Allocate, Refresh, Refresh(0) per churn cycle), the same requests the bench's
// JavaScript client sends, so what limits setups/s is the relay and not the bench process.
import { isIPv4 } from "node:net";
import { LineProcess } from "./native.js";
import type { Address } from "./stun-lite.js";

export interface NativeRun {
  /** setups opened (open) or cycles completed (churn) */
  done: number;
  failures: number;
  firstError: string | undefined;
  elapsedMs: number;
  /** the generator's own CPU over the run (getrusage: user + system), µs */
  cpuMicros: number;
}

export interface NativeOpenOptions {
  count: number;
  concurrency: number;
  userPrefix: string;
  /** also CreatePermission + ChannelBind towards the peer */
  bind: boolean;
  peer: Address;
  /** no new setup starts after this many seconds; those in flight get their retransmissions */
  boundSeconds: number;
  /** each setup then deletes its allocation (Refresh 0) and closes its socket: none stays open */
  deleteEach?: boolean;
  onProgress?: (done: number, failures: number) => void;
}

export interface NativeChurnOptions {
  workers: number;
  seconds: number;
  /** cycles per worker at most (0: as many as fit in `seconds`) */
  cyclesPerWorker: number;
  userPrefix: string;
  onProgress?: (cycles: number, failures: number) => void;
}

/** What the line answers of `opened` and `churned` carry. */
function parseRun(fields: string[], extra: number): NativeRun {
  const [done, failures, seconds, cpu] = fields;
  const error = fields
    .slice(4 + extra)
    .join(" ")
    .trim();
  return {
    done: Number(done),
    failures: Number(failures),
    firstError: error === "" ? undefined : error,
    elapsedMs: Number(seconds) * 1000,
    cpuMicros: Number(cpu),
  };
}

/** A user prefix is one word of the line protocol. */
function checkPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_.-]{1,40}$/.test(prefix)) throw new Error(`bad user prefix "${prefix}"`);
  return prefix;
}

export class NativeSetupGenerator {
  readonly pid: number;

  private constructor(private readonly helper: LineProcess) {
    this.pid = helper.pid;
  }

  /** Why it cannot drive this relay (it speaks UDP to an IPv4 address), or undefined. */
  static unfit(transport: string, host: string): string | undefined {
    if (transport !== "udp") return "the native setup generator speaks UDP only";
    if (!isIPv4(host)) return "the native setup generator takes an IPv4 relay address only";
    return undefined;
  }

  /** `rtoMs`: the first retransmission timeout (RFC 8489 §6.2.1: 500 ms, the default). */
  static start(
    server: { host: string; port: number; token: string },
    rtoMs?: number,
  ): NativeSetupGenerator {
    const p = new LineProcess("native setup generator", "turnpike-setupgen", []);
    p.send(`server ${server.host} ${server.port}`);
    if (rtoMs !== undefined) p.send(`rto ${Math.max(1, Math.round(rtoMs))}`);
    // On stdin, not in argv: the secret must not show up in `ps`.
    p.send(`secret ${server.token}`);
    return new NativeSetupGenerator(p);
  }

  /**
   * Sets `count` allocations up, `concurrency` at a time; the successful ones stay open (in the
   * generator) until close(), or with `deleteEach` are deleted at once (a setup counts once its
   * delete succeeded).
   */
  async open(o: NativeOpenOptions): Promise<NativeRun & { live: number }> {
    this.helper.onLine = (f) => {
      if (f[0] === "progress") o.onProgress?.(Number(f[1]), Number(f[2]));
    };
    try {
      const fields = await this.helper.request(
        `open ${o.count} ${o.concurrency} ${checkPrefix(o.userPrefix)} ${o.bind ? 1 : 0} ${o.peer.address} ${o.peer.port} ${o.boundSeconds} ${o.deleteEach ? 1 : 0}`,
        "opened",
        // The generator ends a run by itself: its bound plus the last requests' retransmissions.
        (o.boundSeconds + 60) * 1000,
      );
      return { ...parseRun(fields, 1), live: Number(fields[4]) };
    } finally {
      this.helper.onLine = undefined;
    }
  }

  /**
   * Deletes (Refresh 0, RFC 8656 §7.3) every allocation the last open() kept, `concurrency` at
   * a time, each from its own socket with the user it was set up with, and closes the sockets:
   * `done` counts the deletes that succeeded.
   */
  async deleteAll(o: { concurrency: number; boundSeconds: number }): Promise<NativeRun> {
    const fields = await this.helper.request(
      `delete ${o.concurrency} ${o.boundSeconds}`,
      "deleted",
      (o.boundSeconds + 60) * 1000,
    );
    return parseRun(fields, 0);
  }

  /** Each of `workers` cycles new socket -> Allocate (401, authenticated) -> Refresh(600) -> Refresh(0). */
  async churn(o: NativeChurnOptions): Promise<NativeRun> {
    this.helper.onLine = (f) => {
      if (f[0] === "progress") o.onProgress?.(Number(f[1]), Number(f[2]));
    };
    try {
      const fields = await this.helper.request(
        `churn ${o.workers} ${o.seconds} ${o.cyclesPerWorker} ${checkPrefix(o.userPrefix)}`,
        "churned",
        (o.seconds + 60) * 1000,
      );
      return parseRun(fields, 0);
    } finally {
      this.helper.onLine = undefined;
    }
  }

  /** Closes the sockets of every allocation opened so far (the relay lets them expire). */
  async closeAll(): Promise<number> {
    const [n] = await this.helper.request("close", "closed", 10_000);
    return Number(n);
  }

  async stop(): Promise<void> {
    await this.helper.stop();
  }
}
