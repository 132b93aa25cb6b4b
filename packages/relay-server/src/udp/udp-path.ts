// The relay's UDP data path, behind one interface with two implementations:
//
//   batch-path.ts  @turnpike/udp-batch: the sockets live in a native module that receives with
//                  recvmmsg and hands JavaScript a whole batch per call, and sends with sendmmsg
//                  once per batch. The default where the module builds and loads (Linux).
//   dgram-path.ts  node:dgram, one callback and one send per datagram: the portable fallback.
//
// Both feed relay-core the same way (handleClientDatagram / handlePeerDatagram with a reused
// DatagramSource) and follow its call order: act on the route at once, drain outputs after a
// control message, arm the timer after each input (a batch counts as one input here).
// TCP/TLS stay on node:net and node:tls in relay.ts; this module only calls back into it
// for peer data bound for a stream client.

import type { ClientEndpoint, ListenerId, RelayId, TurnServer } from "@turnpike/relay-core";
import type { SocketAddress } from "../config/types.js";
import { type RelayStats, type RelayTelemetry, relaySlot } from "../stats.js";

/** What a UDP path needs from the driver. */
export interface UdpHost {
  readonly core: TurnServer;
  readonly stats: RelayStats;
  readonly telemetry: RelayTelemetry;
  /** Drain relay-core's outputs (after an input that returned RouteKind.None). */
  drainOutputs(): void;
  /** Re-arm the one timer from relay-core's pollTimeout(). */
  armTimer(): void;
  /**
   * Peer data for a TCP/TLS client: `core.route` is RouteKind.ToClient. `copy`: the route's
   * bytes live in a buffer that is reused after this call, so a queued write must copy them.
   */
  sendStreamToClient(client: ClientEndpoint, copy: boolean): void;
  /** Debug-level detail for unusual events (bind failures and the like). */
  debug(message: string, fields: Record<string, unknown>): void;
}

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
   * Bind relay socket `relay` (an "open-relay" output) and answer relay-core with
   * handleRelayBound or handleRelayBindFailed, now or later. `onBindFailed` may take a failure
   * over (return true): then the caller answers relay-core itself (or binds again).
   */
  openRelay(
    relay: RelayId,
    family: 4 | 6,
    address: string,
    port: number,
    onBindFailed?: (err: Error) => boolean,
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
