// Two Node TCP sockets joined by a SplicePipe, from the hand-over to the end: the lifecycle the
// relay's RFC 6062 pipes (relay-server stream/spliced-pipe.ts) and turnpike-tunnel's TCP pipes
// (tunnel-client tunnel/spliced-pipe.ts) share. What differs between them is a hook: what the
// bytes are counted against, and the relay's writing of what Node read before the pipe starts.
//
// Takes over: the native pipe is made first (when it cannot be, EMFILE and the like, nothing
// has changed and the caller pipes in JavaScript), then Node stops reading both sockets for
// good (node-socket.ts). Node keeps the sockets and their fds (the native pipe works on
// duplicates), so their 'close' still reaches the caller's listeners.
//
// Starts when the caller says so (start()), once what Node read is written (beforeStart) and
// both sockets' writes are out: the native pipe's bytes come after Node's, so the order holds.
//
// Ends in one of three ways, each ending with a last count, both sockets destroyed and `done`:
// the native pipe passes each side's FIN on and ends when both went, or on a socket's error
// (a reset); a socket closed under it (its owner destroyed it) closes the pipe at once, what
// the kernel pipes hold lost; end() writes out what the kernel pipes hold, then shuts both
// sockets down (SplicePipe.end), as soon as the pipe runs.

import type net from "node:net";
// A cycle with index.ts, which re-exports this module: SplicePipe is only used once a caller
// constructs, long after both modules ran.
import { SplicePipe, type SplicePipeCounters } from "./index.js";
import { stopNodeReading, tcpSocketFd } from "./node-socket.js";

/** What a caller of SplicedSockets does at its points. */
export interface SplicedSocketsHooks {
  /**
   * What the pipe moved since the last call (bytes and splice calls, a to b and b to a):
   * at each sync(), and once more at the end. Not called with nothing moved.
   */
  moved(delta: SplicePipeCounters): void;
  /**
   * Before the native pipe starts, at each try: write what Node read before it stopped (it
   * must reach the other side first). Writes it makes are waited for.
   */
  beforeStart?(): void;
  /**
   * Once, when the pipe is over, after the last `moved`, both sockets destroyed. `errno`: 0
   * when the native pipe ended by itself (both FINs passed on), a socket's error, or
   * undefined when the pipe was closed.
   */
  done(errno: number | undefined): void;
}

/** The counters moved() reports: one object, rewritten each time. */
interface Delta {
  aToBBytes: number;
  bToABytes: number;
  aToBChunks: number;
  bToAChunks: number;
}

export class SplicedSockets {
  private readonly native: SplicePipe;
  private running = false;
  private ending = false;
  private over = false;
  /** The native counters already reported: bytes and chunks, a->b, b->a. */
  private readonly counted = new Float64Array(4);
  private readonly delta: Delta = { aToBBytes: 0, bToABytes: 0, aToBChunks: 0, bToAChunks: 0 };

  /** Whether `a` and `b` each have a plain-TCP fd to give (node-socket.ts's tcpSocketFd). */
  static canJoin(a: unknown, b: unknown): boolean {
    return tcpSocketFd(a) !== undefined && tcpSocketFd(b) !== undefined;
  }

  /**
   * Join `a` and `b` (both connected plain-TCP sockets: canJoin). Moves nothing until start().
   * Throws when the native pipe cannot be made (EMFILE, ...): nothing has changed then.
   */
  constructor(
    private readonly a: net.Socket,
    private readonly b: net.Socket,
    private readonly hooks: SplicedSocketsHooks,
  ) {
    const aFd = tcpSocketFd(a);
    const bFd = tcpSocketFd(b);
    if (aFd === undefined || bFd === undefined) {
      throw new TypeError("a spliced pipe joins two connected plain-TCP sockets");
    }
    this.native = new SplicePipe(aFd, bFd, (errno) => this.finish(errno));
    stopNodeReading(a);
    stopNodeReading(b);
    const onClose = () => this.close();
    a.once("close", onClose);
    b.once("close", onClose);
  }

  /** The native pipe runs (moves bytes): what Node reads from now on would be out of order. */
  get started(): boolean {
    return this.running;
  }

  /** The pipe is over (ended or closed): both sockets are destroyed. */
  get closed(): boolean {
    return this.over;
  }

  /** Start the native pipe once what Node read is written and both sockets' writes are out. */
  start(): void {
    if (this.over || this.running) return;
    this.hooks.beforeStart?.();
    if (this.over) return;
    const busy = [this.a, this.b].find((s) => s.writableLength > 0);
    if (busy !== undefined) {
      busy.once("drain", () => this.start());
      return;
    }
    this.running = true;
    this.native.start();
    if (this.ending) this.native.end();
  }

  /** End gracefully: what the kernel pipes hold still goes out (once started), then both end. */
  end(): void {
    if (this.over || this.ending) return;
    this.ending = true;
    if (this.running) this.native.end();
  }

  /** Report what the native pipe moved since the last report (hooks.moved). */
  sync(): void {
    const c = this.native.counters();
    const n = this.counted;
    const d = this.delta;
    d.aToBBytes = c.aToBBytes - n[0]!;
    d.bToABytes = c.bToABytes - n[1]!;
    d.aToBChunks = c.aToBChunks - n[2]!;
    d.bToAChunks = c.bToAChunks - n[3]!;
    n[0] = c.aToBBytes;
    n[1] = c.bToABytes;
    n[2] = c.aToBChunks;
    n[3] = c.bToAChunks;
    if (d.aToBBytes + d.bToABytes + d.aToBChunks + d.bToAChunks > 0) this.hooks.moved(d);
  }

  /** Close now: what the kernel pipes hold is lost, both sockets are destroyed. */
  close(): void {
    if (this.over) return;
    this.native.close();
    this.finish(undefined);
  }

  private finish(errno: number | undefined): void {
    if (this.over) return;
    this.over = true;
    this.sync();
    this.a.destroy();
    this.b.destroy();
    this.hooks.done(errno);
  }
}
