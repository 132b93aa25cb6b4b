// RFC 6062 on the relay side: TCP relayed addresses (a listener per TCP allocation), peer
// connections by CONNECTION-ID, and the pipes that join a peer connection to a client's data
// connection after ConnectionBind (§5.4).
//
//   open-relay (tcp)        openRelay: listen on the relayed address; the engine answers
//                           relay-core from the RelayBind (engine/relay-sockets.ts)
//   a peer connects         §5.3: held paused under the CONNECTION-ID relay-core gives it
//   connect-peer            §5.2: dial the peer from the relayed address
//   bind-connection         §5.4: the pipe, each side's FIN forwarded (§5.5): spliced in the
//                           kernel where it can be (spliced-pipe.ts), else in JavaScript
//   close-peer-connection   a piped peer ends gracefully, any other is destroyed

import net from "node:net";
import type { ConnectionId, PeerConnectionId, RelayId } from "@turnpike/relay-core";
import { ReusedReadBuffer } from "@turnpike/runtime-kit";
import {
  batchIoAvailability,
  bindUdp,
  closeFd,
  SplicedSockets,
  tcpBind,
  tcpListen,
} from "@turnpike/udp-batch";
import type { EngineHost, RelayBindDone } from "../engine/host.js";
import { stripMapped } from "./admission.js";
import type { StreamClients } from "./clients.js";
import { RelayPipe, type StreamPipe } from "./pipe.js";
import { SplicedPipe } from "./spliced-pipe.js";

export class PeerConnections {
  /** TCP relayed-address listeners still binding, and bound ones. */
  private readonly binding = new Map<RelayId, net.Server>();
  private readonly relays = new Map<RelayId, net.Server>();
  private readonly sockets = new Map<PeerConnectionId, net.Socket>();
  /**
   * The reused read buffers of the peer connections this relay dialled (Connect): their bytes
   * arrive through the buffer's sink, not 'data' events (runtime-kit reused-read-buffer.ts).
   * Connections a relayed listener accepted cannot have one (net.Server takes no `onread`).
   */
  private readonly reads = new Map<PeerConnectionId, ReusedReadBuffer>();
  /**
   * Relayed addresses listened on with SO_REUSEPORT (where udp-batch loads), so a Connect can
   * dial from the relayed port itself, each with the exclusive UDP socket on the same address
   * and port that holds the port for it (reusableListen).
   */
  private readonly guards = new Map<RelayId, number>();
  /** Peer connections joined to a client data connection (RFC 6062 §5.4), and their pipes. */
  private readonly pipes = new Map<PeerConnectionId, StreamPipe>();
  /** The pipes spliced in the kernel now: their counters are read at metrics collection. */
  private readonly spliced = new Set<SplicedPipe>();

  constructor(
    private readonly host: EngineHost,
    private readonly clients: StreamClients,
    /** Pipes this engine may splice at once (spliced-pipe.ts's splicedPipeLimit); 0: none. */
    private readonly maxSplicedPipes = 0,
  ) {}

  /** Listen on a TCP relayed address; `done` unless the relay is closed while binding. */
  openRelay(relay: RelayId, address: string, port: number, done: RelayBindDone): void {
    const server = net.createServer(
      { noDelay: true, pauseOnConnect: true, allowHalfOpen: true },
      (socket) => this.onPeerConnection(relay, socket),
    );
    let target: net.ListenOptions = { host: address, port, exclusive: true };
    if (batchIoAvailability().available) {
      try {
        target = this.reusableListen(relay, address, port);
      } catch (error) {
        done({ ok: false, error: error as Error });
        return;
      }
    }
    this.binding.set(relay, server);
    const onBindError = (error: Error) => {
      if (this.binding.get(relay) !== server) return;
      this.binding.delete(relay);
      this.releaseGuard(relay);
      server.close();
      done({ ok: false, error });
    };
    server.once("error", onBindError);
    server.listen(target, () => {
      server.off("error", onBindError);
      if (this.binding.get(relay) !== server) {
        server.close();
        return;
      }
      this.binding.delete(relay);
      this.relays.set(relay, server);
      server.on("error", (err) => this.host.log.debug("tcp relay error", { error: err.message }));
      done({ ok: true, handle: -1 });
    });
  }

  /**
   * RFC 6062 §5.2 dials peers from the relayed transport address, port included, while the
   * relayed listener holds it: Linux allows that only when both sockets set SO_REUSEPORT
   * (socket(7)). A SO_REUSEPORT listener alone would also let another worker bind the same
   * relay port without EADDRINUSE, which is how a taken port is found (engine/relay-sockets.ts),
   * so an exclusive UDP socket on the same address and port holds the port: UDP and TCP ports
   * are separate spaces, and a relay port is one allocation's whatever its protocol
   * (relay-core's relay-port-pool.ts). Throws EADDRINUSE when the port is taken.
   */
  private reusableListen(relay: RelayId, address: string, port: number): net.ListenOptions {
    const family = address.includes(":") ? 6 : 4;
    // Nothing reads it: the smallest receive buffer the kernel allows bounds what datagrams
    // sent to it can hold.
    const guard = bindUdp({ family, address, port, reusePort: false, recvBufferSize: 1 });
    try {
      const fd = tcpListen({ family, address, port, steerGroup: 1 });
      this.guards.set(relay, guard);
      return { fd } as net.ListenOptions;
    } catch (error) {
      closeFd(guard);
      throw error;
    }
  }

  private releaseGuard(relay: RelayId): void {
    const guard = this.guards.get(relay);
    this.guards.delete(relay);
    if (guard !== undefined) closeFd(guard);
  }

  /** Close TCP relayed address `relay` (bound or binding). */
  closeRelay(relay: RelayId): void {
    const server = this.relays.get(relay) ?? this.binding.get(relay);
    this.relays.delete(relay);
    this.binding.delete(relay);
    this.releaseGuard(relay);
    server?.close();
  }

  /** §5.3: a peer connects to a TCP relayed address; held paused until bound. */
  private onPeerConnection(relay: RelayId, socket: net.Socket): void {
    const host = this.host;
    const id = host.core.handlePeerConnectionAccepted(
      relay,
      stripMapped(socket.remoteAddress ?? ""),
      socket.remotePort ?? 0,
      performance.now(),
    );
    if (id === undefined) socket.destroy();
    else this.track(id, socket);
    host.afterInput();
  }

  /**
   * §5.2: dial the peer from the relayed transport address for a Connect request: its address
   * and port where the relayed listener has SO_REUSEPORT (reusableListen; node:net cannot set
   * it on a connecting socket, so udp-batch's tcpBind makes the socket), else from its address
   * with an ephemeral port (node:dgram fallback, no native module).
   */
  connect(
    id: PeerConnectionId,
    relay: RelayId,
    family: 4 | 6,
    address: string,
    port: number,
  ): void {
    const local = this.relays.get(relay)?.address() as net.AddressInfo | undefined;
    const reads = new ReusedReadBuffer();
    let socket: net.Socket | undefined;
    if (local !== undefined && this.guards.has(relay)) {
      try {
        socket = this.dialFrom(local, reads, address, port);
      } catch (err) {
        // The relayed port cannot be bound for this peer (say, its last connection to the
        // same peer lingers in TIME_WAIT): the relayed address with another port will do.
        this.host.log.debug("peer dial from the relayed port failed", {
          error: (err as Error).message,
        });
      }
    }
    socket ??= net.connect({
      onread: reads.onread,
      host: address,
      port,
      family,
      localAddress: local?.address,
      noDelay: true,
      allowHalfOpen: true,
    });
    socket.pause();
    // Known from the start, so a dial the core gives up on (allocation gone, 30 s timeout) is
    // found and destroyed by close-peer-connection.
    this.sockets.set(id, socket);
    this.reads.set(id, reads);
    const host = this.host;
    const onError = () => {
      if (this.sockets.get(id) === socket) {
        this.sockets.delete(id);
        this.reads.delete(id);
      }
      socket.destroy();
      host.core.handlePeerConnectFailed(id, performance.now());
      host.afterInput();
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      if (this.sockets.get(id) !== socket) {
        socket.destroy(); // cancelled while dialing
        return;
      }
      this.track(id, socket);
      host.core.handlePeerConnected(id, performance.now());
      host.afterInput();
    });
  }

  /** A connection from the relayed address and port `from` (see reusableListen). */
  private dialFrom(
    from: net.AddressInfo,
    reads: ReusedReadBuffer,
    address: string,
    port: number,
  ): net.Socket {
    const fd = tcpBind({
      family: from.family === "IPv6" ? 6 : 4,
      address: from.address,
      port: from.port,
    });
    const socket = new net.Socket({
      fd,
      onread: reads.onread,
      allowHalfOpen: true,
      readable: true,
      writable: true,
    });
    socket.setNoDelay(true);
    // A socket made from an fd starts reading at once: stopped before it connects (paused
    // until ConnectionBind, like any peer connection), or the peer's first bytes would reach
    // the reused buffer's sink before the pipe does.
    socket.pause();
    return socket.connect({ host: address, port });
  }

  private track(id: PeerConnectionId, socket: net.Socket): void {
    const host = this.host;
    this.sockets.set(id, socket);
    socket.on("error", (err) => host.log.debug("peer connection error", { error: err.message }));
    socket.on("close", () => {
      if (this.sockets.get(id) === socket) {
        this.sockets.delete(id);
        this.reads.delete(id);
      }
      this.pipes.delete(id);
      host.core.handlePeerConnectionClosed(id, performance.now());
      host.afterInput();
    });
  }

  /** §5.4: join a client data connection and a peer connection. */
  bind(id: PeerConnectionId, connection: ConnectionId): void {
    const client = this.clients.get(connection);
    const peer = this.sockets.get(id);
    if (client === undefined || peer === undefined) {
      client?.socket.destroy();
      peer?.destroy();
      return;
    }
    if (client.transport === "tcp" && this.spliced.size < this.maxSplicedPipes) {
      const spliced = this.splice(id, client.socket, peer);
      if (spliced !== undefined) {
        this.clients.becomePipe(client, spliced);
        this.pipes.set(id, spliced);
        return;
      }
    }
    const pipe = new RelayPipe(this.host, id, client.socket, peer, client.transport);
    this.clients.becomePipe(client, pipe);
    this.pipes.set(id, pipe);
    const reads = this.reads.get(id);
    if (reads === undefined) {
      peer.on("data", (chunk: Buffer) => pipe.fromPeer(chunk));
    } else {
      // The chunk is a view of the reused buffer: a write the client socket could not finish
      // keeps referring to it, so the next read goes into a fresh one.
      const to = client.socket;
      reads.sink = (chunk) => {
        pipe.fromPeer(chunk);
        if (to.writableLength > 0) reads.retain();
        return true;
      };
    }
    peer.on("end", () => client.socket.end());
    client.socket.on("end", () => peer.end());
    peer.resume();
  }

  /** The pipe in the kernel, or undefined where it cannot be made (the JavaScript one then). */
  private splice(id: PeerConnectionId, client: unknown, peer: net.Socket): SplicedPipe | undefined {
    if (!SplicedSockets.canJoin(client, peer)) return undefined;
    try {
      const pipe: SplicedPipe = new SplicedPipe(this.host, id, client as net.Socket, peer, () =>
        this.spliced.delete(pipe),
      );
      this.spliced.add(pipe);
      return pipe;
    } catch (err) {
      this.host.log.debug("spliced pipe not made; piping in JavaScript", {
        error: (err as Error).message,
      });
      return undefined;
    }
  }

  /** Bring the relayed-bytes counters up to date with the spliced pipes' (metrics collection). */
  syncCounters(): void {
    for (const pipe of this.spliced) pipe.sync();
  }

  /**
   * close-peer-connection. A piped peer gets a graceful end (its last bytes still reach the
   * client); one still dialing or waiting for ConnectionBind is paused and would never read
   * the peer's FIN, so it is destroyed.
   */
  close(id: PeerConnectionId): void {
    const socket = this.sockets.get(id);
    this.sockets.delete(id);
    this.reads.delete(id);
    if (socket === undefined) return;
    const pipe = this.pipes.get(id);
    this.pipes.delete(id);
    if (pipe !== undefined) pipe.endPeer();
    else socket.destroy();
  }

  /** The engine closes: every relayed address and peer connection goes. */
  closeAll(): void {
    for (const s of this.binding.values()) s.close();
    this.binding.clear();
    for (const s of this.relays.values()) s.close();
    this.relays.clear();
    for (const guard of this.guards.values()) closeFd(guard);
    this.guards.clear();
    for (const pipe of [...this.spliced]) pipe.close();
    for (const s of this.sockets.values()) s.destroy();
    this.sockets.clear();
    this.reads.clear();
  }
}
