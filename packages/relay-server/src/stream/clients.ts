// TCP and TLS client connections (RFC 8656 §3.1): where a TCP client's frame goes.
//
// Each connection's bytes are cut into frames by relay-core's StreamFramer (RFC 8489 §6.2.2:
// STUN and ChannelData back to back) and each frame goes to relay-core's handleStreamClient.
// A frame for a peer (ChannelData, a Send indication) comes back as a route and leaves at once
// on the UDP path (host.sendToPeer); anything else runs the engine's loop (host.afterInput)
// before the next frame, since a ConnectionBind turns the rest of the very same chunk into raw
// peer data (RFC 6062 §5.4) or hands the connection to another worker (worker-link.ts).
//
// The other way, peer data for a client (deliver) is a ChannelData header and the payload,
// padded to 4 bytes (RFC 8656 §12.5), written without concatenating.
//
// Limits that keep a stranger from holding the relay's memory or slots: until it holds an
// allocation a connection may send only small frames, must complete one within
// --tcp-idle-timeout, and is not read while its answers pile up unread.

import {
  type ClientEndpoint,
  type ConnectionId,
  connectionId,
  type ListenerId,
  MAX_STREAM_FRAME,
  MAX_UNAUTHENTICATED_STREAM_FRAME,
  RouteKind,
  StreamFramer,
  writeChannelDataHeader,
} from "@turnpike/relay-core";
import type { EngineHost } from "../engine/host.js";
import type { ConnectionSocket, RemoteConnection } from "../shared/hand-over.js";
import type { AdoptMessage, WorkerLink } from "../shared/worker-link.js";
import { recordRelayed } from "../stats.js";
import type { Admission, Admissions } from "./admission.js";
import { clientToPeerSlot, peerToClientSlot, type StreamPipe } from "./pipe.js";

/** A TCP/TLS client whose socket buffers more than this is not fed more relayed data. */
const STREAM_HIGH_WATER = 1 << 20;
/**
 * A connection without an allocation whose answers pile up unread past this is not read from
 * until they drain (then its idle clock runs out): a stranger cannot park responses here.
 */
const UNAUTHENTICATED_WRITE_LIMIT = 64 << 10;
/**
 * A data connection handed to another worker is closed when that worker has not confirmed the
 * adoption within this (RFC 6062 §5.4 gives a peer connection 30 s to be bound).
 */
const HAND_OVER_DEADLINE_MS = 30_000;
/** Zero bytes for ChannelData padding on streams (RFC 8656 §12.5). */
const PADDING = Buffer.alloc(3);

export interface StreamClient {
  readonly id: ConnectionId;
  readonly socket: ConnectionSocket;
  readonly framer: StreamFramer;
  readonly transport: "tcp" | "tls";
  readonly admission: Admission;
  readonly listener: ListenerId;
  /** RFC 6062 §5.4: after ConnectionBind the connection is a raw pipe to a peer socket. */
  pipe: StreamPipe | undefined;
  /** Holds an allocation: full-size frames, no idle limit, not counted against its source. */
  authenticated: boolean;
  /** performance.now() of the last complete frame: bytes alone do not keep a connection. */
  lastFrameAt: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** Its ConnectionBind belongs to this worker (RFC 6062 across workers; worker-link.ts). */
  handOverTo: number | undefined;
}

export class StreamClients {
  private readonly clients = new Map<ConnectionId, StreamClient>();
  private nextConnectionId = 1;

  constructor(
    private readonly host: EngineHost,
    private readonly admissions: Admissions,
    /** --tcp-idle-timeout, in ms. */
    private readonly idleTimeoutMs: number,
    /** Set when this engine is one of several workers. */
    private readonly link: WorkerLink | undefined,
  ) {}

  /** Open client connections (the turn.connections.active gauge). */
  get size(): number {
    return this.clients.size;
  }

  get(connection: ConnectionId): StreamClient | undefined {
    return this.clients.get(connection);
  }

  /** A connection was accepted (TLS: its handshake completed in time); relay-core learns of it. */
  open(
    listener: ListenerId,
    transport: "tcp" | "tls",
    socket: ConnectionSocket,
    admission: Admission,
  ): StreamClient {
    const id = connectionId(this.nextConnectionId++);
    const client: StreamClient = {
      id,
      socket,
      // Until it holds an allocation a connection may send Binding, Allocate or ConnectionBind
      // requests only: a header claiming more breaks the stream at once.
      framer: new StreamFramer({ maxFrameLength: MAX_UNAUTHENTICATED_STREAM_FRAME }),
      transport,
      admission,
      listener,
      pipe: undefined,
      authenticated: false,
      lastFrameAt: performance.now(),
      idleTimer: undefined,
      handOverTo: undefined,
    };
    this.clients.set(id, client);
    socket.setNoDelay(true);
    this.armIdle(client);
    const host = this.host;
    // The client as the relay sees it: the socket's peer, or the one its PROXY header named.
    host.core.handleConnectionOpened(id, listener, transport, admission.address, admission.port);
    const slot = clientToPeerSlot(transport);
    socket.on("data", (chunk: Buffer) => this.onData(client, chunk, slot));
    socket.on("error", (err) => host.log.debug("client connection error", { error: err.message }));
    // A TURN control connection that ends is done; a piped one forwards its end to the peer.
    socket.on("end", () => {
      if (client.pipe === undefined && client.handOverTo === undefined) socket.end();
    });
    socket.on("close", () => {
      clearTimeout(client.idleTimer);
      if (client.handOverTo !== undefined) return; // relay-core forgot it at the hand-over
      this.clients.delete(id);
      host.core.handleConnectionClosed(id, performance.now());
      host.afterInput();
    });
    return client;
  }

  /**
   * Another worker hands over a data connection whose ConnectionBind names one of this
   * worker's CONNECTION-IDs (worker-link.ts): a connection like any other from here on, its
   * first bytes the ConnectionBind.
   */
  adopt(remote: RemoteConnection, m: AdoptMessage): void {
    const admission = this.admissions.remote(m.address, m.port, (counted) =>
      remote.reportCounted(counted),
    );
    const client = this.open(m.listener, m.transport, remote, admission);
    const bytes = Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.length);
    this.onData(client, bytes, clientToPeerSlot(m.transport));
  }

  /** A TCP/TLS client's bytes: frames to relay-core, or raw peer data once piped. */
  private onData(client: StreamClient, chunk: Buffer, slot: number): void {
    if (client.handOverTo !== undefined) return; // another worker's now: hand-over.ts relays it
    if (client.pipe !== undefined) {
      client.pipe.fromClient(chunk);
      return;
    }
    const host = this.host;
    const framer = client.framer;
    framer.push(chunk);
    const now = performance.now();
    for (let frame = framer.next(); frame !== undefined; frame = framer.next()) {
      client.lastFrameAt = now;
      if (host.core.handleStreamClient(client.id, frame, now) === RouteKind.ToPeer) {
        host.sendToPeer(slot);
        continue;
      }
      // A control message: act on it now, since a ConnectionBind turns the rest of this very
      // chunk into raw peer data (RFC 6062 §5.4).
      host.afterInput();
      if (client.handOverTo !== undefined) {
        this.handOver(client, frame, framer.takeRemaining());
        return;
      }
      const pipe = client.pipe as StreamPipe | undefined;
      if (pipe !== undefined) {
        const rest = framer.takeRemaining();
        if (rest.length > 0) pipe.fromClient(Buffer.from(rest));
        return;
      }
    }
    if (framer.error) {
      // Neither STUN nor ChannelData, or a frame larger than this connection may send: the
      // stream can't be resynchronised (RFC 8656 §12.5).
      host.telemetry.drop(framer.error === "oversized-frame" ? "oversized-frame" : "framing-error");
      client.socket.destroy();
    }
    host.afterInput();
    // Answers the client does not read: stop reading its requests until they drain (ws-style).
    const socket = client.socket;
    const limit = client.authenticated ? STREAM_HIGH_WATER : UNAUTHENTICATED_WRITE_LIMIT;
    if (socket.writableLength > limit && !socket.isPaused() && !socket.destroyed) {
      socket.pause();
      socket.once("drain", () => socket.resume());
    }
  }

  /**
   * The idle clock of a connection without an allocation: only complete frames reset it
   * (onData), so a byte a second, a frame that never completes or a TLS session that sends
   * nothing ends after --tcp-idle-timeout. One timer per connection, re-armed for the
   * remainder when it fires, so the data path only stores a number.
   */
  private armIdle(client: StreamClient): void {
    const remaining = this.idleTimeoutMs - (performance.now() - client.lastFrameAt);
    client.idleTimer = setTimeout(() => this.onIdleTimer(client), Math.max(0, remaining));
  }

  private onIdleTimer(client: StreamClient): void {
    client.idleTimer = undefined;
    if (client.authenticated || client.pipe !== undefined || client.socket.destroyed) return;
    if (performance.now() - client.lastFrameAt >= this.idleTimeoutMs) {
      this.host.log.debug("idle client connection closed", { connection: client.id });
      client.socket.destroy();
      return;
    }
    this.armIdle(client);
  }

  /**
   * An allocation was created (or ended) on a stream connection. With one it is governed by the
   * allocation (RFC 8656 §3.1, lifetime and Refresh) and by the user's quotas: full-size frames,
   * no idle limit, no per-source count. Without, back to the unauthenticated rules.
   */
  setAuthenticated(connection: ConnectionId, authenticated: boolean): void {
    const client = this.clients.get(connection);
    if (client === undefined || client.pipe !== undefined) return;
    client.authenticated = authenticated;
    client.framer.maxFrameLength = authenticated
      ? MAX_STREAM_FRAME
      : MAX_UNAUTHENTICATED_STREAM_FRAME;
    clearTimeout(client.idleTimer);
    client.idleTimer = undefined;
    if (authenticated) {
      this.admissions.uncount(client.admission);
    } else {
      this.admissions.recount(client.admission);
      client.lastFrameAt = performance.now();
      this.armIdle(client);
    }
  }

  /**
   * RFC 6062 §5.4: the data connection is no longer a TURN control connection but a pipe to
   * a peer (`pipe`, made by stream/peers.ts: in JavaScript or spliced in the kernel): authenticated by its ConnectionBind, and no idle
   * limit of its own.
   */
  becomePipe(client: StreamClient, pipe: StreamPipe): void {
    client.pipe = pipe;
    this.admissions.uncount(client.admission);
    clearTimeout(client.idleTimer);
    client.idleTimer = undefined;
  }

  /** The hand-over-connection output: its ConnectionBind belongs to worker `owner`. */
  handOverTo(connection: ConnectionId, owner: number): void {
    const client = this.clients.get(connection);
    if (client !== undefined) client.handOverTo = owner;
  }

  /**
   * relay-core handed this connection's ConnectionBind to the worker that owns its id. It still
   * counts against its source here, where it was admitted, until the owner says it
   * authenticated (a ConnectionBind the owner refuses leaves it counted, as with one engine).
   */
  private handOver(client: StreamClient, frame: Uint8Array, rest: Uint8Array): void {
    clearTimeout(client.idleTimer);
    this.clients.delete(client.id);
    const admission = client.admission;
    const socket = client.socket;
    socket.pause();
    const bytes = new Uint8Array(frame.length + rest.length);
    bytes.set(frame, 0);
    bytes.set(rest, frame.length);
    this.link!.handOver(
      client.handOverTo!,
      socket,
      {
        transport: client.transport,
        listener: client.listener,
        address: admission.address,
        port: admission.port,
        bytes,
      },
      client.id,
      (counted) =>
        counted ? this.admissions.recount(admission) : this.admissions.uncount(admission),
      // The owner answers for it within ms; if it never does (it was restarting), the
      // connection ends as one that never completed a request: RFC 6062 §5.4's 30 s at most.
      Math.min(this.idleTimeoutMs, HAND_OVER_DEADLINE_MS),
    );
  }

  /** A STUN message for a client (a response, a ConnectionAttempt indication). */
  sendControl(connection: ConnectionId, data: Uint8Array): void {
    const client = this.clients.get(connection);
    if (client && !client.socket.destroyed) client.socket.write(data);
  }

  /** Peer data for a client: `core.route` is RouteKind.ToClient (EngineHost). */
  deliver(endpoint: ClientEndpoint, copy: boolean): void {
    const r = this.host.core.route;
    const client = this.clients.get(endpoint.connection);
    if (client === undefined) return;
    const socket = client.socket;
    if (socket.writableLength > STREAM_HIGH_WATER) {
      // The client reads slower than its peers send: UDP cannot be paused, so drop and count.
      this.host.telemetry.drop("backpressure");
      return;
    }
    const length = r.end - r.start;
    // A write that cannot complete at once keeps its buffer: bytes in a reused receive arena
    // must be copied first.
    const payload = copy
      ? Buffer.from(r.data.subarray(r.start, r.end))
      : r.start === 0 && r.end === r.data.length
        ? r.data
        : Buffer.from(r.data.buffer, r.data.byteOffset + r.start, length);
    if (r.channel === 0) {
      socket.write(payload);
    } else {
      // TCP keeps written buffers until they are flushed, so each header is its own buffer.
      const header = Buffer.allocUnsafe(4);
      writeChannelDataHeader(header, 0, r.channel, length);
      socket.cork();
      socket.write(header);
      socket.write(payload);
      const pad = (4 - (length & 3)) & 3;
      if (pad > 0) socket.write(PADDING.subarray(0, pad));
      socket.uncork();
    }
    recordRelayed(this.host.stats, peerToClientSlot(client.transport), length);
  }

  /**
   * The close-connection output (its allocation is gone, or it broke the framing). A piped
   * data connection ends gracefully so relayed bytes still buffered get out.
   */
  close(connection: ConnectionId): void {
    const client = this.clients.get(connection);
    if (client?.pipe !== undefined) client.pipe.endClient();
    else client?.socket.destroy();
  }

  /** The engine closes: every client connection goes. */
  closeAll(): void {
    for (const c of this.clients.values()) c.socket.destroy();
  }
}
