// A TCP service's pipe in the kernel (RFC 6062 §5.4 data connection <-> the private target):
// both plain-TCP sockets joined by udp-batch's SplicePipe (splice(2) through a kernel pipe each
// way, on the event loop). The bytes never enter the tunnel's memory and no JavaScript runs per
// chunk; the JavaScript pipe (tcp-pipes.ts) was the tunnel's busiest cost under load.
//
// Where: --tcp-splice auto (the default), the relay reached over plain TCP (a turns: data
// connection carries TLS records), the native module loads, and under the descriptor budget
// below. Anywhere else, and when the native pipe cannot be made (EMFILE), the JavaScript pipe.
//
// How it takes over (the same steps as relay-server's stream/spliced-pipe.ts, with the same
// udp-batch helpers, tcpSocketFd and stopNodeReading): Node keeps both sockets and their fds but reads neither from here on; the native
// pipe works on duplicates. The peer's bytes that came with the ConnectionBind answer are
// written to the target first; the native pipe starts once that write is out, so the byte
// order holds.
//
// How it ends: the native pipe passes each side's FIN on (half-close, RFC 9293 §3.6) and ends
// when both went, or on an error (a reset); then both sockets are destroyed. Either socket
// closed by the tunnel (tunnel stopped, allocation gone, relay connection lost: closeAll)
// closes the pipe and the other socket.
//
// Counting: the tunnel's traffic (bytes in/out, tunnel.bytes) is brought up to the native
// counters when GET /list or the metrics read it, and when the pipe ends.

import { readFileSync } from "node:fs";
import type net from "node:net";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, SplicePipe, stopNodeReading } from "@turnpike/udp-batch";
import type { Traffic } from "./traffic.js";

/** Descriptors a spliced pipe holds beyond its two sockets (udp-batch SplicePipe). */
const SPLICE_PIPE_FDS = 6;

/** Whether SplicePipe can be used in this process (Linux, native module built and loaded). */
export function spliceAvailable(): boolean {
  return batchIoAvailability().available;
}

/**
 * Spliced pipes this process may hold at once: a quarter of RLIMIT_NOFILE (the rest stays for
 * sockets, which a JavaScript pipe needs anyway). Unknown limit: no practical bound.
 */
export function splicePipeBudget(
  read: () => string = () => readFileSync("/proc/self/limits", "utf8"),
): number {
  let text: string;
  try {
    text = read();
  } catch {
    return 1_000_000;
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (m === null || m[1] === "unlimited") return 1_000_000;
  return Math.floor(Number(m[1]) / 4 / SPLICE_PIPE_FDS);
}

export class SplicedTcpPipe {
  private readonly native: SplicePipe;
  private started = false;
  private closed = false;
  /** Native bytes already added to the traffic: data->target (in), target->data (out). */
  private countedIn = 0;
  private countedOut = 0;

  /**
   * Join the relay's data connection and the target (both sockets with a `tcpSocketFd`, connected, and
   * read by `onread` only, so Node buffered nothing). `early`: the peer's bytes that came with
   * the ConnectionBind answer. Throws when the native pipe cannot be made (EMFILE, ...):
   * nothing has changed then, the caller pipes in JavaScript.
   */
  constructor(
    private readonly data: net.Socket,
    private readonly target: net.Socket,
    dataFd: number,
    targetFd: number,
    early: Uint8Array,
    private readonly traffic: Traffic,
    private readonly log: Logger,
    /** Called once when the pipe is over (ended or closed), after its last count. */
    private readonly onDone: () => void,
  ) {
    this.native = new SplicePipe(dataFd, targetFd, (errno) => this.onNativeEnd(errno));
    stopNodeReading(data);
    stopNodeReading(target);
    const onClose = () => this.close();
    data.once("close", onClose);
    target.once("close", onClose);
    if (early.length > 0) {
      traffic.in(early.length);
      target.write(early);
    }
    this.start();
  }

  /** Bring the tunnel's traffic counters up to the native ones. */
  sync(): void {
    const c = this.native.counters();
    const dIn = c.aToBBytes - this.countedIn;
    const dOut = c.bToABytes - this.countedOut;
    this.countedIn = c.aToBBytes;
    this.countedOut = c.bToABytes;
    if (dIn > 0) this.traffic.in(dIn);
    if (dOut > 0) this.traffic.out(dOut);
  }

  /** Start the native pipe once Node's own writes (the early bytes) are out. */
  private start(): void {
    if (this.closed || this.started) return;
    const busy = [this.data, this.target].find((s) => s.writableLength > 0);
    if (busy !== undefined) {
      busy.once("drain", () => this.start());
      return;
    }
    this.started = true;
    this.native.start();
  }

  /** The native pipe ended by itself (both FINs passed on: errno 0) or failed (a reset). */
  private onNativeEnd(errno: number): void {
    if (errno !== 0) this.log.debug("spliced pipe ended by a socket error", { errno });
    this.finish();
  }

  /** Close now (a socket closed under it): what the kernel pipes hold is lost. */
  close(): void {
    if (this.closed) return;
    this.native.close();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.sync();
    this.data.destroy();
    this.target.destroy();
    this.onDone();
  }
}
