// A TCP service's data path (RFC 6062 §4.3): on each ConnectionAttempt a NEW data connection to
// the relay, ConnectionBind on it, then the target is dialled and both sockets are piped
// (pause/resume backpressure, one write per read, no copy; plain TCP reads into reused buffers,
// runtime-kit reused-read-buffer.ts). A target that refuses gets the data connection ended
// cleanly, which makes the relay close the peer's connection.
//
// Its own timers, per connection: a ConnectionBind deadline, a target-connect deadline and a
// half-close deadline. It calls the current TurnClient directly (ConnectionBind and its answer
// never pass through the lifecycle); closeAll() ends every pipe of an allocation that is gone.
//
// With --tcp-splice auto and a plain-TCP relay, a connected pair is joined in the kernel instead
// (spliced-pipe.ts); the JavaScript pipe below stays for TLS, --tcp-splice off, and where the
// native pipe is unavailable or over its descriptor budget.

import { connect as netConnect, type Socket } from "node:net";
import type { ConnectionOptions } from "node:tls";
import {
  formatTransportAddress,
  type PeerConnectionId,
  StreamFramer,
  type TransportAddress,
  type TurnClient,
} from "@turnpike/relay-core/client";
import { forwardChunk, type Logger, nodeTls, ReusedReadBuffer } from "@turnpike/runtime-kit";
import { SplicedSockets } from "@turnpike/udp-batch";
import type { HostPort } from "../config/index.js";
import type { TargetDialer } from "../targets.js";
import type { PeerFilter } from "./peer-filter.js";
import { spliceAvailable, splicePipeBudget, spliceTcpPipe } from "./spliced-pipe.js";
import type { Traffic } from "./traffic.js";

/** RFC 6062 §5.4: the server drops unbound connections after 30 s; we give up a bit earlier. */
const CONNECTION_BIND_TIMEOUT_MS = 25_000;
/** A target that drops SYNs would hold the peer for the kernel's ~2 min; give up sooner. */
const TARGET_CONNECT_TIMEOUT_MS = 10_000;
/** A relay that never sends its FIN must not keep a half-closed data connection forever. */
const HALF_CLOSE_TIMEOUT_MS = 5_000;

export interface TcpPipesOptions {
  /** Where the control connection went (a draining relay's alternate, if it sent us there). */
  readonly relay: () => { readonly ip: string; readonly port: number };
  /** Data connections run like the control connection: plain TCP, or TLS (turns:). */
  readonly tls: (() => ConnectionOptions) | undefined;
  readonly target: HostPort;
  /** Dials the target, checking the address it dials (targets.ts). */
  readonly dialer: TargetDialer;
  readonly log: Logger;
  readonly traffic: Traffic;
  readonly peers: PeerFilter;
  /** The TurnClient of the current allocation, undefined between allocations. */
  readonly client: () => TurnClient | undefined;
  /** --tcp-splice: join plain-TCP pairs in the kernel where possible (default auto). */
  readonly splice?: "auto" | "off";
}

export class TcpPipes {
  /** Bound data connections (from ConnectionBind success to close): GET /list's openConnections. */
  open = 0;
  private readonly sockets = new Set<Socket>();
  /** Bumped by closeAll(): a connection of an earlier allocation may not bind or count. */
  private generation = 0;
  /** Pipes running in the kernel (their counters are read at collection and at their end). */
  private readonly spliced = new Set<SplicedSockets>();
  /** How many may run at once: 0 where none may (off, TLS, no native module). */
  private readonly spliceLimit: number;

  constructor(private readonly o: TcpPipesOptions) {
    this.spliceLimit =
      o.splice === "off" || o.tls !== undefined || !spliceAvailable() ? 0 : splicePipeBudget();
  }

  /** Bring the traffic counters up to what the spliced pipes moved (GET /list, metrics). */
  syncCounters(): void {
    for (const p of this.spliced) p.sync();
  }

  /** The relay's ConnectionAttempt: a peer connected to the relayed address. */
  accept(peer: TransportAddress, connectionId: PeerConnectionId): void {
    if (this.o.client() === undefined) return;
    if (!this.o.peers.allows(peer)) return;
    const gen = this.generation;
    const peerText = formatTransportAddress(peer);
    const tls = this.o.tls;
    // Plain TCP reads into one reused buffer (runtime-kit reused-read-buffer.ts: no 64 KiB
    // allocation per read); Node's TLS sockets cannot, they keep 'data' events.
    const reads = tls !== undefined ? undefined : new ReusedReadBuffer();
    // allowHalfOpen: the peer's FIN (its request is complete) must not close our side before
    // the target's reply has gone back (TCP half-close, RFC 9293 §3.6).
    const data =
      reads === undefined
        ? // Node's tls.connect honours allowHalfOpen; its ConnectionOptions type omits it.
          nodeTls().connect({ ...tls!(), allowHalfOpen: true } as ConnectionOptions)
        : netConnect({
            host: this.o.relay().ip,
            port: this.o.relay().port,
            allowHalfOpen: true,
            onread: reads.onread,
          });
    data.setNoDelay(true);
    this.track(data);
    data.on("error", (err) =>
      this.o.log.debug("data connection error", { peer: peerText, err: err.message }),
    );
    const bindTimer = setTimeout(() => data.destroy(), CONNECTION_BIND_TIMEOUT_MS);
    data.once("close", () => clearTimeout(bindTimer));
    data.once(tls !== undefined ? "secureConnect" : "connect", () => {
      const client = this.o.client();
      if (gen !== this.generation || client === undefined) return data.destroy();
      data.write(client.connectionBindRequest(connectionId));
    });
    // Read exactly one frame (the ConnectionBind answer); RFC 6062 §5.4: what follows is the
    // peer's data. The framer gets a copy (a reused read buffer is overwritten by the next
    // read; this is one small read per connection). Returns whether to keep reading.
    let framer = new StreamFramer();
    const onBindBytes = (chunk: Buffer): boolean => {
      framer.push(reads === undefined ? chunk : Buffer.from(chunk));
      const answer = framer.next();
      if (answer === undefined) {
        if (framer.error === undefined) return true;
        data.destroy(); // neither STUN nor ChannelData
        return false;
      }
      const rest = framer.takeRemaining();
      const c = this.o.client();
      if (gen !== this.generation || c === undefined) {
        data.destroy();
        return false;
      }
      const result = c.handleConnectionBindResponse(answer);
      if (!result.ok) {
        if (result.retry !== undefined) {
          // 401/438: a fresh framer for the retried bind's answer.
          framer = new StreamFramer();
          data.write(result.retry);
          return true;
        }
        this.o.log.warn("connection bind refused", {
          peer: peerText,
          code: result.code,
          reason: result.reason,
        });
        this.o.traffic.connectionFailed();
        data.destroy();
        return false;
      }
      clearTimeout(bindTimer);
      // Paused until the target answers; the peer's first bytes wait in `rest`.
      this.dialTarget(data, rest, peerText, reads);
      return false;
    };
    if (reads !== undefined) {
      reads.sink = onBindBytes;
      return;
    }
    const onData = (chunk: Buffer) => {
      if (onBindBytes(chunk)) return;
      data.off("data", onData);
      data.pause();
    };
    data.on("data", onData);
  }

  /** The allocation is gone: every data connection and target connection with it. */
  closeAll(): void {
    this.generation++;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.open = 0;
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.once("close", () => this.sockets.delete(s));
  }

  /**
   * The bound data connection meets the target: bytes both ways with backpressure (a full
   * destination pauses the source until 'drain'), each side's FIN forwarded as end() on the
   * other (half-open both ways: a socket closes once both directions ended, or on an error,
   * which destroys both). One write per read, no copy.
   */
  private dialTarget(
    data: Socket,
    early: Uint8Array,
    peerText: string,
    dataReads: ReusedReadBuffer | undefined,
  ): void {
    const { host, port } = this.o.target;
    const traffic = this.o.traffic;
    const targetReads = new ReusedReadBuffer();
    // The address dialled is checked on every connection (a name's answers included): a
    // refused one fails like a target that refuses.
    const target = this.o.dialer.connect(host, port, {
      allowHalfOpen: true,
      onread: targetReads.onread,
    });
    target.setNoDelay(true);
    this.track(target);
    traffic.connectionOpened();
    // One open connection = one bound data connection, from ConnectionBind success to close.
    const gen = this.generation;
    this.open++;
    data.once("close", (hadError) => {
      if (gen === this.generation) this.open--;
      this.o.log.debug("tcp connection closed", {
        peer: peerText,
        hadError,
        fromPeer: data.bytesRead,
        toPeer: data.bytesWritten,
      });
    });
    let connected = false;
    // The error handler below then ends the peer's side cleanly, as for a refusal.
    const connectTimer = setTimeout(
      () => target.destroy(new Error(`connect timed out after ${TARGET_CONNECT_TIMEOUT_MS} ms`)),
      TARGET_CONNECT_TIMEOUT_MS,
    );
    target.once("close", () => clearTimeout(connectTimer));
    target.on("error", (err) => {
      if (!connected) {
        // The target refused or is unreachable: end the peer's side cleanly (FIN, not RST), so
        // the platform sees a closed connection instead of a hang.
        traffic.connectionFailed();
        this.o.log.info("target refused the connection", { peer: peerText, err: err.message });
        if (dataReads !== undefined) dataReads.sink = () => true; // discard until the FIN
        data.end();
        data.resume(); // read the relay's FIN so the socket closes
        setTimeout(() => data.destroy(), HALF_CLOSE_TIMEOUT_MS).unref();
        return;
      }
      this.o.log.debug("target connection error", { peer: peerText, err: err.message });
      data.destroy();
    });
    data.on("error", () => target.destroy());
    data.once("close", () => target.destroy());
    target.once("close", () => {
      if (!data.destroyed && connected) data.end();
    });
    // target -> peer: the target speaks only once connected, by which time data is bound.
    targetReads.sink = (chunk) => {
      traffic.out(chunk.length);
      return forwardChunk(chunk, target, data, targetReads);
    };
    target.once("connect", () => {
      clearTimeout(connectTimer);
      connected = true;
      this.o.log.debug("tcp connection piped", { peer: peerText });
      if (dataReads !== undefined && this.trySplice(data, target, early)) return;
      if (early.length > 0) {
        traffic.in(early.length);
        target.write(early);
      }
      // peer -> target
      const toTarget = (chunk: Buffer) => {
        traffic.in(chunk.length);
        return forwardChunk(chunk, data, target, dataReads);
      };
      if (dataReads !== undefined) {
        dataReads.sink = toTarget;
      } else {
        data.on("data", (chunk: Buffer) => {
          if (!toTarget(chunk)) data.pause();
        });
      }
      data.on("end", () => target.end());
      target.on("end", () => data.end());
      data.resume();
    });
  }

  /**
   * Join `data` and `target` in the kernel (spliced-pipe.ts) if this pipe may: false leaves
   * both untouched for the JavaScript pipe (not allowed here, over the budget, or the native
   * pipe could not be made).
   */
  private trySplice(data: Socket, target: Socket, early: Uint8Array): boolean {
    if (this.spliced.size >= this.spliceLimit) return false;
    if (!SplicedSockets.canJoin(data, target)) return false;
    let pipe: SplicedSockets;
    try {
      pipe = spliceTcpPipe(data, target, early, this.o.traffic, this.o.log, () =>
        this.spliced.delete(pipe),
      );
    } catch (err) {
      this.o.log.debug("tcp connection not spliced", { err: (err as Error).message });
      return false;
    }
    this.spliced.add(pipe);
    return true;
  }
}
