// The load generator of the relay scenario: paced datagrams over the allocations, each stamped
// with (phase, sequence, send time), and the round trips of their echoes. Two of them behind
// one interface: the native one (native-generator.ts, bench/native/turnpike-loadgen.c) and this
// file's JavaScript one, which runs in the bench process and also speaks TCP and Send
// indications.
import * as hdr from "hdr-histogram-js";
import type { OpenedAllocation } from "../scenarios/setup.js";
import { type DataMode, TurnLoadClient } from "./turn-load-client.js";

export type GeneratorKind = "js" | "native";
export const GENERATOR_KINDS: readonly GeneratorKind[] = ["native", "js"];

/** u32 phase, u32 sequence, send time (f64 ms here; u64 ns in the native generator) */
export const PAYLOAD_HEADER = 16;

/** What one phase's sending did. */
export interface SendResult {
  /** packets offered (handed to the kernel) */
  sent: number;
  /** packets due at the asked rate; due - sent were not offered (full TCP queue, send error) */
  due: number;
  sendSeconds: number;
}

/** One phase of load: `rate` packets/s of `size`-byte payloads for `seconds`. */
export interface Phase {
  /** stamped in every payload; phases count from 1 */
  id: number;
  rate: number;
  seconds: number;
  size: number;
}

/** Called about every 250 ms while sending: packets due so far and echoes received. */
export type SendProgress = (slot: number, received: number) => void;

export interface LoadGenerator {
  readonly kind: GeneratorKind;
  /** the process whose CPU is the generator's (the bench itself for the JavaScript one) */
  readonly pid: number;
  /** that CPU so far, µs (exact for the bench process, in clock ticks from /proc otherwise) */
  cpuMicros(): number | undefined;
  /** Offers a phase's packets at its rate; resolves once all left. */
  send(phase: Phase, progress: SendProgress): Promise<SendResult>;
  /** Echoes of the phase received so far. */
  received(): Promise<number>;
  /** Ends the phase (later echoes do not count) and gives its round trips, µs. */
  finish(): Promise<hdr.Histogram>;
  close(): Promise<void>;
}

export function newHistogram(): hdr.Histogram {
  // The JS implementation: no WebAssembly to load, and fast enough at these rates.
  return hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 3,
    bitBucketSize: 32,
    useWebAssembly: false,
  });
}

/**
 * The JavaScript generator: the bench process sends through the TURN clients that did the
 * setup. Pacing: a 1 ms timer loop that sends the packets due since the start, in bursts
 * capped at rate/50.
 */
export class JsGenerator implements LoadGenerator {
  readonly kind = "js";
  readonly pid = process.pid;
  private phase = 0;
  private count = 0;
  private histogram = newHistogram();
  private readonly templates: Buffer[] = [];

  constructor(
    private readonly allocations: OpenedAllocation[],
    private readonly mode: DataMode,
    /** no relay: payloads go to the echo peer as they are */
    private readonly raw: boolean,
    size: number,
  ) {
    for (const a of allocations) {
      a.client.onData = (buf, off, len) => {
        if (len < PAYLOAD_HEADER || buf.readUInt32BE(off) !== this.phase) return;
        this.count++;
        const rttUs = (performance.now() - buf.readDoubleBE(off + 8)) * 1000;
        this.histogram.recordValue(rttUs < 1 ? 1 : Math.round(rttUs));
      };
      if (mode === "send" && !raw) {
        this.templates.push(a.client.sendIndicationTemplate(a.peer, size));
      }
    }
  }

  cpuMicros(): number {
    const u = process.cpuUsage();
    return u.user + u.system;
  }

  send({ id: phase, rate, seconds, size }: Phase, progress: SendProgress): Promise<SendResult> {
    this.phase = phase;
    this.count = 0;
    this.histogram = newHistogram();
    const n = this.allocations.length;
    const t0 = performance.now();
    const total = Math.round(rate * seconds);
    // `slot` paces (packets due so far); `sent` counts those actually offered: a TCP client
    // whose write queue is full skips its slot, so the offered rate stays honest.
    let slot = 0;
    let sent = 0;
    let rr = 0;
    // Cap a single catch-up burst so a stalled tick does not fire a second's worth at once.
    const maxBurst = Math.max(50, Math.ceil(rate / 50));
    let lastProgress = t0;
    return new Promise((resolve) => {
      const tick = () => {
        const now = performance.now();
        const due = Math.min(total, Math.floor(((now - t0) / 1000) * rate));
        let burst = Math.min(due - slot, maxBurst);
        while (burst-- > 0) {
          const a = this.allocations[rr]!;
          const { buf, off } = this.packet(rr, a, size);
          buf.writeUInt32BE(phase, off);
          buf.writeUInt32BE(slot, off + 4);
          buf.writeDoubleBE(performance.now(), off + 8);
          if (a.client.send(buf)) sent++;
          slot++;
          rr = rr + 1 === n ? 0 : rr + 1;
        }
        if (now - lastProgress >= 250) {
          progress(slot, this.count);
          lastProgress = now;
        }
        if (slot >= total)
          resolve({ sent, due: slot, sendSeconds: (performance.now() - t0) / 1000 });
        else if (due - slot > 0) setImmediate(tick);
        else setTimeout(tick, 1);
      };
      tick();
    });
  }

  received(): Promise<number> {
    return Promise.resolve(this.count);
  }

  finish(): Promise<hdr.Histogram> {
    this.phase = 0; // phases count from 1: late echoes match none
    return Promise.resolve(this.histogram);
  }

  async close(): Promise<void> {
    await Promise.all(this.allocations.map((a) => a.client.close()));
  }

  /** A fresh datagram for allocation `i` and where its payload starts. */
  private packet(i: number, a: OpenedAllocation, size: number): { buf: Buffer; off: number } {
    if (this.raw) return { buf: Buffer.allocUnsafe(size), off: 0 };
    if (this.mode === "channel")
      return { buf: a.client.channelDataPacket(a.channel, size), off: 4 };
    const t = this.templates[i]!;
    const buf = Buffer.allocUnsafe(t.length);
    t.copy(buf);
    a.client.stampTransaction(buf);
    return { buf, off: TurnLoadClient.sendPayloadOffset };
  }
}
