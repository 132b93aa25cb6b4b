// The native generator (bench/native/turnpike-loadgen.c) behind the LoadGenerator interface.
// The bench does the TURN setup with its own clients (Allocate with the 401 round trip,
// CreatePermission, ChannelBind), closes their sockets and hands the 5-tuples over: the native
// process binds the same local ports and connects to the same relay address, so the relay sees
// the allocations it set up. Nothing else binds in between (the bench's ports are below the
// kernel's ephemeral range, and under root the run has a network namespace to itself).
import type * as hdr from "hdr-histogram-js";
import { cpuMicros } from "../proc.js";
import type { OpenedAllocation } from "../scenarios/setup.js";
import type { RunningServer } from "../servers.js";
import {
  type LoadGenerator,
  newHistogram,
  type Phase,
  type SendProgress,
  type SendResult,
} from "./generator.js";
import { LineProcess } from "./native.js";

const ANSWER_MS = 5000;

export class NativeGenerator implements LoadGenerator {
  readonly kind = "native";
  readonly pid: number;

  private constructor(private readonly helper: LineProcess) {
    this.pid = helper.pid;
  }

  /**
   * Takes over the allocations' sockets (their JavaScript clients are closed). `raw`: no relay,
   * the allocations' clients talk to the echo peer directly and payloads carry no header.
   */
  static async start(
    allocations: OpenedAllocation[],
    server: RunningServer,
    raw: boolean,
  ): Promise<NativeGenerator> {
    const tuples = allocations.map((a) => {
      const local = a.client.localAddress;
      if (!local) throw new Error("the native generator takes UDP allocations only");
      const remote = raw ? a.peer : { address: server.host, port: server.port };
      return `tuple ${local.address} ${local.port} ${remote.address} ${remote.port} ${raw ? 0 : a.channel}`;
    });
    await Promise.all(allocations.map((a) => a.client.close()));
    const p = new LineProcess("native generator", "turnpike-loadgen", [raw ? "raw" : "channel"]);
    try {
      for (const t of tuples) p.send(t);
      await p.request("open", "ready", 30_000);
      return new NativeGenerator(p);
    } catch (e) {
      await p.stop();
      throw e;
    }
  }

  cpuMicros(): number | undefined {
    return cpuMicros(this.pid);
  }

  async send({ id, rate, seconds, size }: Phase, progress: SendProgress): Promise<SendResult> {
    this.helper.onLine = (f) => {
      if (f[0] === "progress") progress(Number(f[1]), Number(f[2]));
    };
    try {
      // A generator that cannot keep up takes longer than `seconds`: allow for it, bounded.
      const [sent, due, , sendSeconds] = await this.helper.request(
        `run ${id} ${rate} ${seconds} ${size}`,
        "sent",
        (seconds * 4 + 30) * 1000,
      );
      return { sent: Number(sent), due: Number(due), sendSeconds: Number(sendSeconds) };
    } finally {
      this.helper.onLine = undefined;
    }
  }

  async received(): Promise<number> {
    const [count] = await this.helper.request("count", "count", ANSWER_MS);
    return Number(count);
  }

  /**
   * The phase's round trips: the native histogram's buckets (µs, < 0.8 % wide) recorded at
   * their middle value, and its exact maximum.
   */
  async finish(): Promise<hdr.Histogram> {
    const [, max, ...buckets] = await this.helper.request("finish", "hist", ANSWER_MS);
    const h = newHistogram();
    const maxUs = Number(max);
    buckets.forEach((pair, i) => {
      const [value, count] = pair.split(":").map(Number) as [number, number];
      if (i === buckets.length - 1 && maxUs > 0) {
        // The last bucket holds the maximum: keep it exact.
        if (count > 1) h.recordValueWithCount(Math.min(value, maxUs), count - 1);
        h.recordValue(maxUs);
      } else {
        h.recordValueWithCount(value, count);
      }
    });
    return h;
  }

  async close(): Promise<void> {
    await this.helper.stop();
  }
}
