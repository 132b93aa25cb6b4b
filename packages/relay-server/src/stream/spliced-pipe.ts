// The RFC 6062 §5.4 pipe in the kernel: a plain-TCP client data connection and its peer
// connection joined by udp-batch's SplicePipe (splice(2) through a kernel pipe each way, on the
// event loop). The bytes never enter the relay's memory and no JavaScript runs per chunk: the
// JavaScript pipe (pipe.ts) costs the relay a core at a few Gbit/s in copies and callbacks.
//
// Where: TCP (not TLS: the bytes on the socket are TLS records) when the native module loads,
// --tcp-splice is auto (the default), no --max-bps/--max-bps-per-user applies (those charge every chunk
// before the next is read, pipe.ts), both sockets are local (not a connection another worker
// holds, shared/hand-over.ts), and under the descriptor budget (config/fd-budget.ts). Anywhere
// else, and when the native pipe cannot be made (EMFILE), the JavaScript pipe.
//
// The lifecycle is udp-batch's SplicedSockets (shared with turnpike-tunnel's TCP pipes): Node
// keeps both sockets (and their fds; relay-core learns of their close through them, as for any
// pipe) but reads neither from the bind on; the native pipe works on duplicates. What this
// file adds:
//
// Before the start: bytes Node already read are written first, the rest of the
// ConnectionBind's chunk (fromClient) and anything either socket buffered; the native pipe
// starts once Node's writes are out, so the byte order holds.
//
// How it ends: the native pipe passes each side's FIN on (§5.5) and ends when both went, or on
// an error; then both sockets are destroyed, and relay-core hears of it from their 'close'. A
// socket closed by the relay (engine shutdown, a connection destroyed) closes the pipe and the
// other socket. A graceful close from relay-core (close-connection, close-peer-connection:
// allocation gone, permission gone, revoked) writes out what the kernel pipes hold, then shuts
// both down (SplicedSockets.end).
//
// Counting: the relayed-bytes counters (turn.relayed.*) and relay-core's charge are brought up
// to date from the native counters when metrics are collected (PeerConnections.syncCounters)
// and when the pipe ends; a chunk is a splice call (no per-chunk size histogram).

import type net from "node:net";
import type { PeerConnectionId } from "@turnpike/relay-core";
import {
  batchIoAvailability,
  SplicedSockets,
  type SplicePipeCounters,
  splicePipePoolCounters,
} from "@turnpike/udp-batch";
import type { RelayConfig } from "../config/types.js";
import type { EngineHost } from "../engine/host.js";
import type { RelayStats } from "../stats.js";
import { clientToPeerSlot, peerToClientSlot, type StreamPipe } from "./pipe.js";

/**
 * How many pipes one engine may splice at once: 0 where none may (--tcp-splice off, a
 * bandwidth limit, no native module), else its share of the process's descriptor budget.
 */
export function splicedPipeLimit(
  config: Pick<
    RelayConfig,
    "tcpSplice" | "tcpSplicePipes" | "maxBytesPerSecond" | "maxBytesPerSecondPerUser"
  >,
  engines: number,
): number {
  if (
    config.tcpSplice === "off" ||
    config.maxBytesPerSecond !== undefined ||
    config.maxBytesPerSecondPerUser !== undefined ||
    !batchIoAvailability().available
  ) {
    return 0;
  }
  return Math.floor(config.tcpSplicePipes / engines);
}

/**
 * This thread's kernel pipes (udp-batch's pool: made, lent to a direction with bytes in flight,
 * idle) into `stats`, when metrics are collected. The pool is per thread, and an engine's pipes
 * run on its thread: each engine reports its own, the workers' supervisor sums them.
 */
export function readSplicePipePool(stats: RelayStats): void {
  const pool = splicePipePoolCounters();
  stats.splicePipesMade = pool.made;
  stats.splicePipesLent = pool.lent;
  stats.splicePipesIdle = pool.idle;
}

export class SplicedPipe implements StreamPipe {
  /** Client (a) and peer (b), joined. */
  private readonly pipe: SplicedSockets;

  /**
   * Join `client` and `peer` (SplicedSockets.canJoin). Throws when the native pipe cannot be
   * made (EMFILE, ...): nothing has changed then, the caller pipes in JavaScript.
   */
  constructor(
    private readonly host: EngineHost,
    readonly id: PeerConnectionId,
    client: net.Socket,
    private readonly peer: net.Socket,
    /** Called once when the pipe is over (ended or closed), after its last count. */
    onDone: () => void,
  ) {
    this.pipe = new SplicedSockets(client, peer, {
      moved: (d) => this.count(d),
      // Bytes Node buffered before it stopped: read() hands the client's to its 'data'
      // listener (stream/clients.ts), which brings them to fromClient; the peer's go to the
      // client here.
      beforeStart: () => {
        while (client.read() !== null) {}
        for (let chunk = peer.read(); chunk !== null; chunk = peer.read()) {
          client.write(chunk as Buffer);
        }
      },
      done: (errno) => {
        if (errno !== undefined && errno !== 0) {
          host.log.debug("spliced pipe ended by a socket error", { errno });
        }
        onDone();
      },
    });
    // After the code that bound it has forwarded the rest of the ConnectionBind's chunk.
    process.nextTick(() => this.pipe.start());
  }

  /**
   * Client bytes Node read before the pipe started (the rest of the chunk that carried the
   * ConnectionBind, what its buffer held): written to the peer ahead of the native pipe's.
   */
  fromClient(chunk: Buffer): void {
    if (this.pipe.closed) return;
    if (this.pipe.started) {
      // Node reads nothing once the native pipe runs; a byte from it now would be out of order.
      this.host.log.warn("client bytes after the spliced pipe started; pipe closed", {
        connection: this.id,
      });
      this.close();
      return;
    }
    this.host.stats.relayedBytes[clientToPeerSlot("tcp")]! += chunk.length;
    this.host.stats.relayedPackets[clientToPeerSlot("tcp")]! += 1;
    this.host.core.chargeConnectionBytes(this.id, chunk.length, performance.now());
    this.peer.write(chunk);
  }

  /** close-connection: the client side ends gracefully; a spliced pipe ends both. */
  endClient(): void {
    this.pipe.end();
  }

  /** close-peer-connection: the peer side ends gracefully; a spliced pipe ends both. */
  endPeer(): void {
    this.pipe.end();
  }

  /** Bring the relay's counters up to the native ones. */
  sync(): void {
    this.pipe.sync();
  }

  /**
   * Close now (the engine closes; a socket closed under it): what the kernel pipes hold is
   * lost, both sockets are destroyed.
   */
  close(): void {
    this.pipe.close();
  }

  /** What the native pipe moved since the last count, into the relay's counters. */
  private count(d: SplicePipeCounters): void {
    const stats = this.host.stats;
    const up = clientToPeerSlot("tcp");
    const down = peerToClientSlot("tcp");
    stats.relayedBytes[up]! += d.aToBBytes;
    stats.relayedBytes[down]! += d.bToABytes;
    stats.relayedPackets[up]! += d.aToBChunks;
    stats.relayedPackets[down]! += d.bToAChunks;
    // No bandwidth bucket applies to a spliced pipe (see the top): relay-core counts it anyway.
    const bytes = d.aToBBytes + d.bToABytes;
    if (bytes > 0) this.host.core.chargeConnectionBytes(this.id, bytes, performance.now());
  }
}
