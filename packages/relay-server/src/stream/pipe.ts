// Relayed bytes on streams: the counters TCP and TLS traffic counts under, and the RFC 6062
// §5.4 pipe that joins a client data connection to its peer connection after ConnectionBind
// (each chunk forwarded as it comes, the source paused while the destination's buffer is full).

import type { ConnectionSocket } from "../shared/hand-over.js";
import { type RelayStats, recordRelayed, relaySlot } from "../stats.js";

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

/** Forward one chunk, pausing the source while the destination's buffer is full (ws-style). */
export function pipeChunk(
  stats: RelayStats,
  from: ConnectionSocket,
  to: ConnectionSocket,
  chunk: Buffer,
  slot: number,
): void {
  recordRelayed(stats, slot, chunk.length);
  if (!to.write(chunk) && !from.isPaused()) {
    from.pause();
    to.once("drain", () => from.resume());
  }
}
