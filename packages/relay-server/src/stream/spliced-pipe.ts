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
// How it takes over: Node keeps both sockets (and their fds; relay-core learns of their close
// through them, as for any pipe) but reads neither from the bind on; the native pipe works on
// duplicates. Bytes Node already read are written first: the rest of the ConnectionBind's chunk
// and anything buffered. The native pipe starts once Node's writes are out, so the byte order
// holds.
//
// How it ends: the native pipe passes each side's FIN on (§5.5) and ends when both went, or on
// an error; then both sockets are destroyed, and relay-core hears of it from their 'close'. A
// socket closed by the relay (engine shutdown, a connection destroyed) closes the pipe and the
// other socket. A graceful close from relay-core (close-connection, close-peer-connection:
// allocation gone, permission gone, revoked) writes out what the kernel pipes hold, then shuts
// both down (SplicePipe.end).
//
// Counting: the relayed-bytes counters (turn.relayed.*) and relay-core's charge are brought up
// to date from the native counters when metrics are collected (PeerConnections.syncCounters)
// and when the pipe ends; a chunk is a splice call (no per-chunk size histogram).

import type net from "node:net";
import type { PeerConnectionId } from "@turnpike/relay-core";
import { batchIoAvailability, SplicePipe, stopNodeReading } from "@turnpike/udp-batch";
import type { RelayConfig } from "../config/types.js";
import type { EngineHost } from "../engine/host.js";
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

export class SplicedPipe implements StreamPipe {
  private readonly native: SplicePipe;
  private started = false;
  private ending = false;
  private closed = false;
  /** Native counters already added to the relay's: bytes and chunks, client->peer, peer->client. */
  private readonly counted = new Float64Array(4);

  /**
   * Join `client` and `peer` (both sockets with a `tcpSocketFd`). Throws when the native pipe cannot
   * be made (EMFILE, ...): nothing has changed then, the caller pipes in JavaScript.
   */
  constructor(
    private readonly host: EngineHost,
    readonly id: PeerConnectionId,
    private readonly client: net.Socket,
    private readonly peer: net.Socket,
    clientFd: number,
    peerFd: number,
    /** Called once when the pipe is over (ended or closed), after its last count. */
    private readonly onDone: () => void,
  ) {
    this.native = new SplicePipe(clientFd, peerFd, (errno) => this.onNativeEnd(errno));
    stopNodeReading(client);
    stopNodeReading(peer);
    const onClose = () => this.close();
    client.once("close", onClose);
    peer.once("close", onClose);
    // After the code that bound it has forwarded the rest of the ConnectionBind's chunk.
    process.nextTick(() => this.start());
  }

  /**
   * Client bytes Node read before the pipe started (the rest of the chunk that carried the
   * ConnectionBind, what its buffer held): written to the peer ahead of the native pipe's.
   */
  fromClient(chunk: Buffer): void {
    if (this.closed) return;
    if (this.started) {
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
    this.end();
  }

  /** close-peer-connection: the peer side ends gracefully; a spliced pipe ends both. */
  endPeer(): void {
    this.end();
  }

  /** Bring the relay's counters up to the native ones. */
  sync(): void {
    const c = this.native.counters();
    const stats = this.host.stats;
    const up = clientToPeerSlot("tcp");
    const down = peerToClientSlot("tcp");
    const n = this.counted;
    const upBytes = c.aToBBytes - n[0]!;
    const downBytes = c.bToABytes - n[1]!;
    stats.relayedBytes[up]! += upBytes;
    stats.relayedBytes[down]! += downBytes;
    stats.relayedPackets[up]! += c.aToBChunks - n[2]!;
    stats.relayedPackets[down]! += c.bToAChunks - n[3]!;
    n[0] = c.aToBBytes;
    n[1] = c.bToABytes;
    n[2] = c.aToBChunks;
    n[3] = c.bToAChunks;
    // No bandwidth bucket applies to a spliced pipe (see the top): relay-core counts it anyway.
    if (upBytes + downBytes > 0) {
      this.host.core.chargeConnectionBytes(this.id, upBytes + downBytes, performance.now());
    }
  }

  /** Start the native pipe once what Node read is written and both sockets' writes are out. */
  private start(): void {
    if (this.closed || this.started) return;
    // Bytes Node buffered before it stopped: read() hands them to the client's 'data'
    // listener (stream/clients.ts), which brings them to fromClient.
    while (this.client.read() !== null) {}
    for (let chunk = this.peer.read(); chunk !== null; chunk = this.peer.read()) {
      this.client.write(chunk as Buffer);
    }
    if (this.closed) return;
    const busy = [this.client, this.peer].find((s) => s.writableLength > 0);
    if (busy !== undefined) {
      busy.once("drain", () => this.start());
      return;
    }
    this.started = true;
    this.native.start();
    if (this.ending) this.native.end();
  }

  private end(): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    if (this.started) this.native.end();
  }

  /** The native pipe ended by itself (both FINs passed on: errno 0) or failed. */
  private onNativeEnd(errno: number): void {
    if (errno !== 0) {
      this.host.log.debug("spliced pipe ended by a socket error", { errno });
    }
    this.finish();
  }

  /**
   * Close now (the engine closes; a socket closed under it): what the kernel pipes hold is
   * lost, both sockets are destroyed.
   */
  close(): void {
    if (this.closed) return;
    this.native.close();
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.sync();
    this.client.destroy();
    this.peer.destroy();
    this.onDone();
  }
}
