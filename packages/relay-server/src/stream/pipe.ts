// Relayed bytes on streams: the counters TCP and TLS traffic counts under, and the RFC 6062
// §5.4 pipe that joins a client data connection to its peer connection after ConnectionBind.
//
// Each chunk is forwarded as it comes and charged to the allocation's and user's bandwidth
// buckets (--max-bps, --max-bps-per-user: relay-core's chargeConnectionBytes). A byte stream
// cannot drop bytes, so over the limit the pipe stops reading both sides until the buckets are
// out of debt (TCP's own flow control then slows the senders), never a disconnect. A source is
// also paused while its destination's buffer is full (ws-style backpressure). A socket reads
// again once nothing holds it: neither a full destination nor the bandwidth limit.

import type { PeerConnectionId } from "@turnpike/relay-core";
import type { EngineHost } from "../engine/host.js";
import type { ConnectionSocket } from "../shared/hand-over.js";
import { recordRelayed, relaySlot } from "../stats.js";

const SLOT_TCP_C2P = relaySlot("client_to_peer", "tcp");
const SLOT_TCP_P2C = relaySlot("peer_to_client", "tcp");
const SLOT_TLS_C2P = relaySlot("client_to_peer", "tls");
const SLOT_TLS_P2C = relaySlot("peer_to_client", "tls");

/** The counter of bytes a TCP/TLS client sends towards its peers. */
export function clientToPeerSlot(transport: "tcp" | "tls"): number {
  return transport === "tls" ? SLOT_TLS_C2P : SLOT_TCP_C2P;
}

/** The counter of bytes relayed to a TCP/TLS client. */
export function peerToClientSlot(transport: "tcp" | "tls"): number {
  return transport === "tls" ? SLOT_TLS_P2C : SLOT_TCP_P2C;
}

/**
 * What a client data connection's pipe does for stream/clients.ts and stream/peers.ts: this
 * file's RelayPipe, or a SplicedPipe (spliced-pipe.ts).
 */
export interface StreamPipe {
  /** Client bytes Node read (the rest of the ConnectionBind's chunk, and on). */
  fromClient(chunk: Buffer): void;
  /** close-connection: the client side ends gracefully, its buffered bytes still go out. */
  endClient(): void;
  /** close-peer-connection: the same for the peer side. */
  endPeer(): void;
}

/** One side of a pipe: its socket, and what keeps it from reading. */
interface Side {
  readonly socket: ConnectionSocket;
  /** Its destination's buffer is full: reading waits for that side's 'drain'. */
  waitingDrain: boolean;
}

/** RFC 6062 §5.4: a client data connection and a peer connection, joined. */
export class RelayPipe implements StreamPipe {
  private readonly client: Side;
  private readonly peer: Side;
  /** Both sides wait for the bandwidth buckets until this timer fires. */
  private throttle: NodeJS.Timeout | undefined;

  constructor(
    private readonly host: EngineHost,
    /** The peer connection relay-core charges the pipe's bytes to. */
    readonly id: PeerConnectionId,
    client: ConnectionSocket,
    peer: ConnectionSocket,
    private readonly transport: "tcp" | "tls",
  ) {
    this.client = { socket: client, waitingDrain: false };
    this.peer = { socket: peer, waitingDrain: false };
    const stop = () => clearTimeout(this.throttle);
    client.once("close", stop);
    peer.once("close", stop);
  }

  /** The client's bytes for the peer. */
  fromClient(chunk: Buffer): void {
    this.forward(this.client, this.peer, chunk, clientToPeerSlot(this.transport));
  }

  endClient(): void {
    this.client.socket.end();
  }

  endPeer(): void {
    this.peer.socket.end();
  }

  /** The peer's bytes for the client. */
  fromPeer(chunk: Buffer): void {
    this.forward(this.peer, this.client, chunk, peerToClientSlot(this.transport));
  }

  private forward(from: Side, to: Side, chunk: Buffer, slot: number): void {
    const host = this.host;
    recordRelayed(host.stats, slot, chunk.length);
    if (!to.socket.write(chunk) && !from.waitingDrain) {
      from.waitingDrain = true;
      from.socket.pause();
      to.socket.once("drain", () => {
        from.waitingDrain = false;
        this.release(from);
      });
    }
    const waitMs = host.core.chargeConnectionBytes(this.id, chunk.length, performance.now());
    if (waitMs > 0 && this.throttle === undefined) {
      this.client.socket.pause();
      this.peer.socket.pause();
      this.throttle = setTimeout(() => {
        this.throttle = undefined;
        this.release(this.client);
        this.release(this.peer);
      }, Math.ceil(waitMs));
    }
  }

  /** Read `side` again unless something still holds it. */
  private release(side: Side): void {
    if (side.waitingDrain || this.throttle !== undefined || side.socket.destroyed) return;
    side.socket.resume();
  }
}
