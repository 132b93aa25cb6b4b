// The portable UDP data path: node:dgram, one 'message' event and one send per datagram.
// Used where @turnpike/udp-batch cannot be built or loaded (not Linux, no compiler) or when
// --udp-io dgram asks for it. Same contract as the batch path (udp-path.ts).
//
// Every send carries a callback, created once per counter: dgram reports errors that happen
// after a send only there (an EMSGSIZE without a callback vanishes), so relayed packets and
// bytes count only what the kernel accepted, and failures become drops by reason. Measured
// here, a callback does not make a dgram send slower.

import dgram from "node:dgram";
import {
  type ClientEndpoint,
  DatagramSource,
  type ListenerId,
  type RelayId,
  RouteKind,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import { dupFd } from "@turnpike/udp-batch";
import type { SocketAddress } from "../config/types.js";
import type { EngineHost, RelayBindDone } from "../engine/host.js";
import { RELAY_SLOTS, recordRelayed } from "../stats.js";
import {
  CHANNEL_HEADER,
  type ListenOptions,
  SLOT_UDP_C2P,
  SLOT_UDP_P2C,
  type UdpPath,
} from "./udp-path.js";

type SendCallback = (err: Error | null, bytes?: number) => void;

export class DgramUdpPath implements UdpPath {
  readonly kind = "dgram" as const;
  private readonly listeners: dgram.Socket[] = [];
  /** Bound relay sockets by the handle relay-core hands back in routes (an array index). */
  private readonly sockets: (dgram.Socket | undefined)[] = [];
  private readonly freeHandles: number[] = [];
  /** Relay id -> handle, and relay sockets still binding. */
  private readonly handles = new Map<RelayId, number>();
  private readonly binding = new Map<RelayId, dgram.Socket>();
  private readonly source = new DatagramSource();
  /** The header in front of a peer datagram relayed to a UDP client; see sendToClient. */
  private readonly header = Buffer.alloc(CHANNEL_HEADER);
  private readonly sendList: Buffer[] = [this.header, this.header];
  /** Per relay slot: count what the kernel accepted (payload sends). */
  private readonly onSent: SendCallback[] = [];
  /** Peer -> UDP client as ChannelData: the header is not payload. */
  private readonly onSentChannel: SendCallback;
  private readonly onSentControl: SendCallback;

  constructor(private readonly host: EngineHost) {
    for (let slot = 0; slot < RELAY_SLOTS; slot++) {
      this.onSent.push((err, bytes) => this.sent(err, slot, bytes ?? 0));
    }
    this.onSentChannel = (err, bytes) =>
      this.sent(err, SLOT_UDP_P2C, Math.max(0, (bytes ?? 0) - CHANNEL_HEADER));
    this.onSentControl = (err) => {
      if (err) this.failed(err);
    };
  }

  private sent(err: Error | null, slot: number, bytes: number): void {
    if (err) this.failed(err);
    else recordRelayed(this.host.stats, slot, bytes);
  }

  private failed(err: Error): void {
    const code = (err as NodeJS.ErrnoException).code;
    this.host.telemetry.drop(sendDropReason(code));
  }

  listen(listener: ListenerId, at: SocketAddress, options: ListenOptions): Promise<SocketAddress> {
    const socket = dgram.createSocket({
      type: at.family === 6 ? "udp6" : "udp4",
      ipv6Only: at.family === 6,
      // reusePort: Node >= 22.12 (and its types); older lines never ask for it.
      ...(options.reusePort ? ({ reusePort: true } as object) : {}),
      lookup: literalLookup,
    });
    this.listeners[listener] = socket;
    socket.on("message", (msg, rinfo) => this.onClient(listener, msg, rinfo));
    return new Promise((resolve, reject) => {
      socket.once("error", reject);
      const where =
        options.fd !== undefined
          ? { fd: dupFd(options.fd) }
          : { address: at.ip, port: at.port, exclusive: !options.reusePort };
      socket.bind(where, () => {
        socket.off("error", reject);
        socket.on("error", (err) =>
          this.host.log.debug("udp listener error", { error: err.message }),
        );
        if (options.bufferBytes) setBuffers(socket, options.bufferBytes);
        resolve({ ip: at.ip, port: socket.address().port, family: at.family });
      });
    });
  }

  openRelay(relay: RelayId, family: 4 | 6, address: string, port: number, done: RelayBindDone) {
    const host = this.host;
    const socket = dgram.createSocket({
      type: family === 6 ? "udp6" : "udp4",
      ipv6Only: family === 6,
      lookup: literalLookup,
    });
    this.binding.set(relay, socket);
    const onBindError = (error: Error) => {
      if (this.binding.get(relay) !== socket) return;
      this.binding.delete(relay);
      socket.close();
      done({ ok: false, error });
    };
    socket.once("error", onBindError);
    socket.bind({ address, port, exclusive: true }, () => {
      socket.off("error", onBindError);
      if (this.binding.get(relay) !== socket) {
        socket.close(); // the allocation went away while binding
        return;
      }
      this.binding.delete(relay);
      const handle = this.freeHandles.pop() ?? this.sockets.length;
      this.sockets[handle] = socket;
      this.handles.set(relay, handle);
      socket.on("message", (msg, rinfo) => this.onPeer(relay, msg, rinfo));
      socket.on("error", (err) => host.log.debug("relay socket error", { error: err.message }));
      done({ ok: true, handle });
    });
  }

  closeRelay(relay: RelayId): boolean {
    const pending = this.binding.get(relay);
    if (pending !== undefined) {
      this.binding.delete(relay);
      pending.close();
      return true;
    }
    const handle = this.handles.get(relay);
    if (handle === undefined) return false;
    this.handles.delete(relay);
    this.sockets[handle]?.close();
    this.sockets[handle] = undefined;
    this.freeHandles.push(handle);
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Receive: one event per datagram

  private onClient(listener: ListenerId, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const host = this.host;
    if (!this.source.setText(rinfo.address, rinfo.port)) return;
    const kind = host.core.handleClientDatagram(
      listener,
      msg,
      0,
      msg.length,
      this.source,
      performance.now(),
    );
    if (kind === RouteKind.ToPeer) {
      this.sendToPeer(SLOT_UDP_C2P);
      return;
    }
    host.afterInput();
  }

  private onPeer(relay: RelayId, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const host = this.host;
    if (!this.source.setText(rinfo.address, rinfo.port)) return;
    const kind = host.core.handlePeerDatagram(
      relay,
      msg,
      0,
      msg.length,
      this.source,
      performance.now(),
    );
    if (kind !== RouteKind.ToClient) {
      host.afterInput();
      return;
    }
    const client = host.core.route.client;
    // `msg` is this datagram's own Buffer: a stream write may keep it without a copy.
    if (client.transport === "udp") this.sendToClient(client);
    else host.deliverToStreamClient(client, false);
  }

  // ---------------------------------------------------------------------------------------
  // Send

  sendToPeer(slot: number): void {
    const r = this.host.core.route;
    const socket = this.sockets[r.relayHandle];
    if (socket === undefined) return;
    try {
      socket.send(r.data, r.start, r.end - r.start, r.peerPort, r.peerAddress, this.onSent[slot]);
    } catch (err) {
      // dgram throws synchronously on arguments it rejects; relay-core never routes such a
      // packet, and if it ever did, one datagram must not take the process down.
      this.host.telemetry.drop("send-failed");
      this.host.log.debug("send to peer failed", { error: (err as Error).message });
    }
  }

  private sendToClient(client: ClientEndpoint): void {
    const r = this.host.core.route;
    const listener = this.listeners[client.listener];
    if (listener === undefined) return;
    const length = r.end - r.start;
    if (r.channel === 0) {
      // A Data indication the core built: one whole STUN message.
      listener.send(
        r.data,
        r.start,
        length,
        client.port,
        client.address,
        this.onSent[SLOT_UDP_P2C],
      );
      return;
    }
    // Reuse one header buffer while the socket's send queue is empty: a send is then either
    // done synchronously or becomes the queue's only entry, and the next packet sees a
    // non-empty queue and takes a fresh header. Node copies the list array itself.
    const header =
      listener.getSendQueueCount() === 0 ? this.header : Buffer.allocUnsafe(CHANNEL_HEADER);
    writeChannelDataHeader(header, 0, r.channel, length);
    const list = this.sendList;
    list[0] = header;
    list[1] =
      r.start === 0 && r.end === r.data.length
        ? (r.data as Buffer)
        : Buffer.from(r.data.buffer, r.data.byteOffset + r.start, length);
    listener.send(list, client.port, client.address, this.onSentChannel);
  }

  sendControl(client: ClientEndpoint, data: Uint8Array): void {
    this.listeners[client.listener]?.send(data, client.port, client.address, this.onSentControl);
  }

  flush(): void {
    // Every send already went to the kernel.
  }

  collect(): void {
    // Counted as the send callbacks come in.
  }

  async close(): Promise<void> {
    for (const s of this.binding.values()) s.close();
    this.binding.clear();
    for (const s of this.sockets) s?.close();
    this.sockets.length = 0;
    this.handles.clear();
    await Promise.all(
      this.listeners.map((s) => new Promise<void>((r) => s.close(() => r()))),
    ).catch(() => undefined);
  }
}

/** Kernel errors on a UDP send, by the same names the batch path counts them under. */
export function sendDropReason(code: string | undefined): string {
  switch (code) {
    case "EMSGSIZE":
      return "send-emsgsize";
    case "ECONNREFUSED":
      return "send-econnrefused";
    case "ENOBUFS":
    case "ENOMEM":
      return "send-enobufs";
    case "EPERM":
    case "EACCES":
      return "send-eperm";
    case "ENETUNREACH":
    case "EHOSTUNREACH":
    case "EADDRNOTAVAIL":
      return "send-unreachable";
    default:
      return "send-failed";
  }
}

/**
 * Every address the driver sends to is an IP literal from relay-core or from the kernel, so
 * name resolution is never needed. dgram's default lookup (dns.lookup) still defers each send
 * by a process.nextTick for a literal; answering synchronously keeps the send on the spot and
 * saves that per-packet work.
 */
function literalLookup(
  address: string,
  _options: unknown,
  callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  callback(null, address, address.includes(":") ? 6 : 4);
}

/** Best effort: a kernel that refuses the size keeps its default. */
function setBuffers(socket: dgram.Socket, bytes: number): void {
  try {
    socket.setRecvBufferSize(bytes);
    socket.setSendBufferSize(bytes);
  } catch {
    // EPERM/ENOBUFS: the defaults stay, and the drop counters will tell.
  }
}
