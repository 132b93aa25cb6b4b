// The relay's UDP data path, behind one interface with two implementations:
//
//   batch-path.ts  @turnpike/udp-batch: the sockets live in a native module that receives with
//                  recvmmsg and hands JavaScript a whole batch per call, and sends with sendmmsg
//                  once per batch. The default where the module builds and loads (Linux).
//   dgram-path.ts  node:dgram, one callback and one send per datagram: the portable fallback.
//
// Both feed relay-core the same way (handleClientDatagram / handlePeerDatagram with a reused
// DatagramSource) and follow its call order: act on the route at once, and after any input
// that returned no route, run the engine's loop (EngineHost.afterInput: outputs, timer,
// sends). They know the engine only through EngineHost (engine/host.ts): peer data for a
// TCP/TLS client goes to host.deliverToStreamClient, and a relay socket's bind is reported
// back (RelayBind) for the engine to answer relay-core (engine/relay-sockets.ts).

import type { ClientEndpoint, ListenerId, RelayId } from "@turnpike/relay-core";
import type { SocketAddress } from "../config/types.js";
import type { RelayBindDone } from "../engine/host.js";
import { relaySlot } from "../stats.js";

export interface ListenOptions {
  /** A socket bound elsewhere (the workers' supervisor): use a duplicate of it. */
  readonly fd?: number;
  /** SO_REUSEPORT, so several workers can share the address. */
  readonly reusePort?: boolean;
  /** SO_RCVBUF and SO_SNDBUF (best effort: the kernel caps them at [rw]mem_max). */
  readonly bufferBytes?: number;
}

export interface UdpPath {
  readonly kind: "batch" | "dgram";
  /** Bind client listener `listener` (the id relay-core sees); resolves with its address. */
  listen(listener: ListenerId, at: SocketAddress, options: ListenOptions): Promise<SocketAddress>;
  /**
   * Bind relay socket `relay` (an "open-relay" output) and report how it went through `done`,
   * at once or later, with the handle relay-core will put in the routes of its packets. Not
   * reported when the relay is closed while binding.
   */
  openRelay(
    relay: RelayId,
    family: 4 | 6,
    address: string,
    port: number,
    done: RelayBindDone,
  ): void;
  /** Close relay socket `relay` if this path holds it (bound or binding); false otherwise. */
  closeRelay(relay: RelayId): boolean;
  /** relay-core just returned RouteKind.ToPeer: send `core.route`, counting it under `slot`. */
  sendToPeer(slot: number): void;
  /** A STUN message for a UDP client (a response, a ConnectionAttempt, ...). */
  sendControl(client: ClientEndpoint, data: Uint8Array): void;
  /** Send what was queued outside a receive batch (timers, TCP input). */
  flush(): void;
  /** Fold the path's own counters (kernel-accepted sends, drops by reason) into the stats. */
  collect(): void;
  close(): Promise<void>;
}

/** Tag for control messages on the batch path: sent, but not relayed data. */
export const CONTROL_TAG = 15;

/** The relay counters the UDP paths count under (stats.ts). */
export const SLOT_UDP_C2P = relaySlot("client_to_peer", "udp");
export const SLOT_UDP_P2C = relaySlot("peer_to_client", "udp");
/** Bytes of a ChannelData header (RFC 8656 §12.4): sent, but not payload. */
export const CHANNEL_HEADER = 4;
