// The batched UDP data path (@turnpike/udp-batch). Per wake-up of the event loop the native
// module reads every ready socket with recvmmsg and calls onBatch() once; this file walks the
// batch through relay-core and queues each route as a send; the module flushes the queue with
// sendmmsg when onBatch returns. Per relayed packet that is no JavaScript object, no Buffer,
// no string, no system call of its own on the receive side and no crossing into native code:
//
//   client -> peer  the route is a byte range of the receive arena (the ChannelData payload):
//                   queued as is, from the allocation's relay socket.
//   peer -> client  the payload sits at offset 4 of its arena slot (the module leaves 4 bytes
//                   of headroom), so the ChannelData header is written in place in front of
//                   it and header + payload go out as one datagram (RFC 8656 §12.4). Firezone's
//                   relay does the same with its buffer[4..] reads.
//
// Anything that is not a byte range of the arena (a Data indication relay-core built, a frame
// from a TCP client, a STUN response) is copied into the module's tx arena.

import {
  type ClientEndpoint,
  DatagramSource,
  type ListenerId,
  type RelayId,
  RouteKind,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import {
  BATCH_DROP_REASONS,
  BatchIo,
  HEADROOM,
  MAX_TAGS,
  RX_ADDR,
  RX_FAMILY,
  RX_HANDLE,
  RX_LENGTH,
  RX_PORT,
  RX_SCOPED,
  RX_STRIDE,
  SLOT_SIZE,
} from "@turnpike/udp-batch";
import type { SocketAddress } from "../config/types.js";
import type { EngineHost, RelayBindDone } from "../engine/host.js";
import { PACKET_SIZE_BOUNDS, RELAY_SLOTS } from "../stats.js";
import {
  CHANNEL_HEADER,
  CONTROL_TAG,
  type ListenOptions,
  SLOT_UDP_C2P,
  SLOT_UDP_P2C,
  type UdpPath,
} from "./udp-path.js";

const LISTENER = 0;
const RELAY = 1;

/** A socket of the module, with the id relay-core knows it by. */
type SocketEntry =
  | { readonly handle: number; readonly kind: typeof LISTENER; readonly id: ListenerId }
  | { readonly handle: number; readonly kind: typeof RELAY; readonly id: RelayId };

export class BatchUdpPath implements UdpPath {
  readonly kind = "batch" as const;
  private readonly io: BatchIo;
  /** By handle & 0xffff (the module's socket index); the full handle is checked per packet. */
  private readonly sockets: (SocketEntry | undefined)[] = [];
  /** Listener id -> handle. */
  private readonly listeners: number[] = [];
  /** Relay id -> handle. */
  private readonly relays = new Map<RelayId, number>();
  private readonly source = new DatagramSource();
  private inBatch = false;
  /** Native counters already folded into the stats (collect() adds the difference). */
  private readonly folded: Float64Array;

  constructor(private readonly host: EngineHost) {
    this.io = new BatchIo({
      onBatch: (count) => this.onBatch(count),
      sizeBounds: PACKET_SIZE_BOUNDS,
      // Relayed data only: STUN responses are not in turn.packet.size.
      bucketTags: Array.from({ length: RELAY_SLOTS }, (_, slot) => slot),
    });
    this.folded = new Float64Array(this.io.stats.length);
  }

  async listen(
    listener: ListenerId,
    at: SocketAddress,
    options: ListenOptions,
  ): Promise<SocketAddress> {
    const handle =
      options.fd !== undefined
        ? this.io.adopt(options.fd)
        : this.io.open({
            family: at.family,
            address: at.ip,
            port: at.port,
            reusePort: options.reusePort,
            recvBufferSize: options.bufferBytes,
            sendBufferSize: options.bufferBytes,
          });
    this.sockets[handle & 0xffff] = { handle, kind: LISTENER, id: listener };
    this.listeners[listener] = handle;
    return { ip: at.ip, port: this.io.localPort(handle), family: at.family };
  }

  openRelay(relay: RelayId, family: 4 | 6, address: string, port: number, done: RelayBindDone) {
    let handle: number;
    try {
      handle = this.io.open({ family, address, port });
    } catch (err) {
      // A bind is synchronous here: reported at once.
      done({ ok: false, error: err as Error });
      return;
    }
    this.sockets[handle & 0xffff] = { handle, kind: RELAY, id: relay };
    this.relays.set(relay, handle);
    done({ ok: true, handle });
  }

  closeRelay(relay: RelayId): boolean {
    const handle = this.relays.get(relay);
    if (handle === undefined) return false;
    this.relays.delete(relay);
    this.sockets[handle & 0xffff] = undefined;
    // Packets still queued for it are dropped and counted (send-socket-closed).
    this.io.close(handle);
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Receive: one call per batch

  private onBatch(count: number): void {
    const host = this.host;
    const core = host.core;
    const meta = this.io.rxMeta;
    const rx = this.io.rx;
    const src = this.source;
    const now = performance.now();
    this.inBatch = true;
    try {
      for (let i = 0; i < count; i++) {
        const m = i * RX_STRIDE;
        const handle = meta[m + RX_HANDLE]!;
        const entry = this.sockets[handle & 0xffff];
        // Closed while the batch was in flight (an allocation deleted by an earlier packet).
        if (entry === undefined || entry.handle !== handle) continue;
        const port = meta[m + RX_PORT]!;
        const family = meta[m + RX_FAMILY]!;
        if (family === 4) src.setIpv4(meta[m + RX_ADDR]!, port);
        else {
          src.setIpv6(
            meta[m + RX_ADDR]!,
            meta[m + RX_ADDR + 1]!,
            meta[m + RX_ADDR + 2]!,
            meta[m + RX_ADDR + 3]!,
            port,
            (family & RX_SCOPED) !== 0,
          );
        }
        const start = i * SLOT_SIZE + HEADROOM;
        const end = start + meta[m + RX_LENGTH]!;
        if (entry.kind === LISTENER) {
          if (core.handleClientDatagram(entry.id, rx, start, end, src, now) === RouteKind.ToPeer) {
            this.sendToPeer(SLOT_UDP_C2P);
          } else {
            host.afterInput();
          }
        } else if (
          core.handlePeerDatagram(entry.id, rx, start, end, src, now) === RouteKind.ToClient
        ) {
          this.sendToClient();
        } else {
          host.afterInput();
        }
      }
    } finally {
      this.inBatch = false;
    }
    // The module flushes the queued sends as soon as this returns.
  }

  // ---------------------------------------------------------------------------------------
  // Send

  sendToPeer(slot: number): void {
    const r = this.host.core.route;
    const handle = r.relayHandle;
    if (handle < 0) return;
    const rx = this.io.rx;
    const data = r.data;
    if (data.buffer === rx.buffer) {
      // The ChannelData payload, or a Send indication's DATA, inside the receive arena.
      const base = data.byteOffset - rx.byteOffset;
      this.io.queueFromRx(
        handle,
        base + r.start,
        r.end - r.start,
        r.peerFamily,
        r.peerIp4,
        r.peerIp6,
        r.peerPort,
        slot,
        0,
      );
    } else {
      this.io.queueCopy(
        handle,
        data,
        r.start,
        r.end,
        r.peerFamily,
        r.peerIp4,
        r.peerIp6,
        r.peerPort,
        slot,
        0,
      );
    }
  }

  private sendToClient(): void {
    const host = this.host;
    const r = host.core.route;
    const client = r.client;
    if (client.transport !== "udp") {
      host.deliverToStreamClient(client, r.data.buffer === this.io.rx.buffer);
      return;
    }
    const listener = this.listeners[client.listener];
    if (listener === undefined) return;
    const length = r.end - r.start;
    const rx = this.io.rx;
    if (r.channel === 0) {
      // A Data indication relay-core built (RFC 8656 §11.4): a whole STUN message.
      this.queueCopyTo(listener, client, r.data, r.start, r.end, SLOT_UDP_P2C, 0);
    } else if (r.data === rx && r.start >= HEADROOM) {
      // The header goes into the slot's headroom, right in front of the payload.
      writeChannelDataHeader(rx, r.start - CHANNEL_HEADER, r.channel, length);
      this.io.queueFromRx(
        listener,
        r.start - CHANNEL_HEADER,
        length + CHANNEL_HEADER,
        client.family,
        client.ip4,
        client.ip6,
        client.port,
        SLOT_UDP_P2C,
        CHANNEL_HEADER,
      );
    } else {
      const framed = new Uint8Array(CHANNEL_HEADER + length);
      writeChannelDataHeader(framed, 0, r.channel, length);
      framed.set(r.data.subarray(r.start, r.end), CHANNEL_HEADER);
      this.queueCopyTo(listener, client, framed, 0, framed.length, SLOT_UDP_P2C, CHANNEL_HEADER);
    }
  }

  sendControl(client: ClientEndpoint, data: Uint8Array): void {
    const listener = this.listeners[client.listener];
    if (listener === undefined) return;
    this.queueCopyTo(listener, client, data, 0, data.length, CONTROL_TAG, 0);
  }

  private queueCopyTo(
    handle: number,
    client: ClientEndpoint,
    data: Uint8Array,
    start: number,
    end: number,
    tag: number,
    overhead: number,
  ): void {
    this.io.queueCopy(
      handle,
      data,
      start,
      end,
      client.family,
      client.ip4,
      client.ip6,
      client.port,
      tag,
      overhead,
    );
  }

  flush(): void {
    // Inside a batch the module flushes once the callback returns.
    if (!this.inBatch) this.io.flush();
  }

  // ---------------------------------------------------------------------------------------
  // Counters and lifecycle

  collect(): void {
    const io = this.io;
    const stats = this.host.stats;
    const now = io.stats;
    const last = this.folded;
    for (let slot = 0; slot < RELAY_SLOTS && slot < MAX_TAGS; slot++) {
      const packets = io.sentPackets(slot);
      const bytes = io.sentBytes(slot);
      const lastPackets = last[io.packetsIndex(slot)]!;
      const lastBytes = last[io.bytesIndex(slot)]!;
      stats.relayedPackets[slot]! += packets - lastPackets;
      stats.relayedBytes[slot]! += bytes - lastBytes;
      stats.packetSizeSum += bytes - lastBytes;
    }
    for (let b = 0; b <= PACKET_SIZE_BOUNDS.length; b++) {
      const i = io.bucketIndex(b);
      stats.packetSizeCounts[b]! += now[i]! - last[i]!;
    }
    for (const reason of BATCH_DROP_REASONS) {
      const i = io.dropIndex(reason);
      const delta = now[i]! - last[i]!;
      if (delta > 0) this.host.telemetry.drop(reason, delta);
    }
    last.set(now);
  }

  /** Syscalls and crossings so far (for the bench and debugging). */
  counters() {
    return this.io.counters();
  }

  async close(): Promise<void> {
    this.io.flush();
    // What the data path cost over the process's life: system calls and crossings.
    this.host.log.debug("udp batch counters", { ...this.io.counters() });
    this.io.destroy();
    this.relays.clear();
    this.sockets.length = 0;
  }
}
