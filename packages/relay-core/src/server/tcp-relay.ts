/**
 * RFC 6062: TCP allocations relay over TCP connections between the relay and peers, each
 * named by a CONNECTION-ID. A client asks for one with Connect (§5.2: the runtime dials) or
 * is told of one with a ConnectionAttempt indication (§5.3: a peer connected to the relayed
 * address); either way it then opens a new data connection to the server and binds it with
 * ConnectionBind (§5.4), after which the runtime pipes the two connections together. A peer
 * connection not bound within 30 s is closed, and closing either side of a bound pair closes
 * the other (§5.5).
 *
 * With several engines behind one relay (the relay's workers), the ids this engine issues are
 * `index` modulo `count`, and a ConnectionBind naming another engine's id is handed over to it.
 */
import { formatTransportAddress, type TransportAddress } from "../codec/address.js";
import { readUint32, readXorAddress } from "../codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { ConnectionId, PeerConnectionId, RelayId } from "../ids.js";
import type { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import type { RandomSource } from "../rng.js";
import type { Allocation, ClientEndpoint, ClientRecord, TcpPeerConnection } from "./allocation.js";
import type { Authenticated } from "./authentication.js";
import type { DataPath } from "./data-path.js";
import type { Deadlines } from "./deadlines.js";
import type { Reply, Responder } from "./responses.js";
import type { ServerStats } from "./stats.js";
import type { Emit } from "./types.js";

/** RFC 6062 §5.2, §5.3: how long a dial or an unbound peer connection may wait. */
const TCP_CONNECTION_TIMEOUT_MS = 30_000;

export interface TcpRelayOptions {
  readonly random: RandomSource;
  readonly policy: PeerAddressPolicy;
  /** Peer connections per TCP allocation (dialing, waiting or bound). */
  readonly maxPerAllocation: number;
  /** This engine's share of the CONNECTION-ID space, when several engines serve one relay. */
  readonly connectionIds: { readonly index: number; readonly count: number } | undefined;
}

export class TcpRelay {
  /** Peer connections by CONNECTION-ID, and bound ones by the client's data connection. */
  readonly #byId = new Map<PeerConnectionId, TcpPeerConnection>();
  readonly #byDataConnection = new Map<ConnectionId, TcpPeerConnection>();
  /** Connect requests waiting for the runtime's dial. */
  readonly #pendingConnects = new Map<TcpPeerConnection, Reply>();
  readonly #options: TcpRelayOptions;
  readonly #emit: Emit;
  readonly #responder: Responder;
  readonly #stats: ServerStats;
  readonly #deadlines: Deadlines<Allocation>;
  readonly #data: DataPath;

  constructor(
    options: TcpRelayOptions,
    emit: Emit,
    responder: Responder,
    stats: ServerStats,
    deadlines: Deadlines<Allocation>,
    data: DataPath,
  ) {
    this.#options = options;
    this.#emit = emit;
    this.#responder = responder;
    this.#stats = stats;
    this.#deadlines = deadlines;
    this.#data = data;
  }

  // ---------------------------------------------------------------------------------------
  // Requests

  /** RFC 6062 §5.2: Connect. The reply waits for the runtime's dial. */
  connect(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    if (allocation.requestedTransport !== "tcp" || peer === undefined || peer.port === 0) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const relay = allocation.relayFor(peer.family);
    if (relay === undefined) {
      reply.error(ErrorCode.PeerAddressFamilyMismatch);
      return;
    }
    // RFC 6062 §5.2 and the policy as for UDP: no permission or a forbidden peer => 403.
    const policy = this.#options.policy.check(peer.address, peer.port, "tcp");
    const permission = allocation.findPermission(peer);
    if (policy !== undefined || permission === undefined || permission.expiresAt <= now) {
      const shown = formatTransportAddress(peer);
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        undefined,
        policy !== undefined
          ? { reason: "peer-policy", peer: shown, policy }
          : { reason: "no-permission", peer: shown },
      );
      return;
    }
    for (const c of allocation.tcpConnections) {
      if (c.peer.port === peer.port && c.peer.address === peer.address) {
        reply.error(ErrorCode.ConnectionAlreadyExists);
        return;
      }
    }
    if (allocation.tcpConnections.size >= this.#options.maxPerAllocation) {
      reply.error(ErrorCode.InsufficientCapacity);
      return;
    }
    const connection = this.#open(allocation, peer, "connecting", now);
    this.#pendingConnects.set(connection, reply);
    this.#emit({
      type: "connect-peer",
      peerConnection: connection.id,
      relay: relay.id,
      family: peer.family,
      address: peer.address,
      port: peer.port,
    });
  }

  /** RFC 6062 §5.4: ConnectionBind on a fresh data connection. */
  connectionBind(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    auth: Authenticated,
    reply: Reply,
  ): void {
    // A fresh TCP/TLS connection with no allocation of its own (RFC 6062 §5.4).
    if (endpoint.transport === "udp" || client === undefined || client.allocation !== undefined) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const id = readUint32(msg, AttributeType.ConnectionId) as PeerConnectionId | undefined;
    const connection = id === undefined ? undefined : this.#byId.get(id);
    const space = this.#options.connectionIds;
    if (connection === undefined && id !== undefined && space !== undefined && space.count > 1) {
      const owner = id % space.count;
      if (owner !== space.index) {
        // Another engine issued the id and holds the peer connection: the runtime hands this
        // data connection, ConnectionBind included, over to it, which answers (RFC 6062 §5.4).
        this.#data.closeStream(endpoint.connection);
        this.#emit({ type: "hand-over-connection", connection: endpoint.connection, owner });
        return;
      }
    }
    // RFC 6062 §5.4: an invalid CONNECTION-ID gets 400. Someone else's is invalid for this
    // principal and gets the very same answer (counted apart): a distinct code would tell a
    // prober which ids exist.
    const owned = connection !== undefined && connection.allocation.principal === auth.principal;
    if (connection !== undefined && !owned) this.#stats.authFailures["wrong-credentials"]++;
    if (!owned || connection.state !== "pending-bind") {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    connection.state = "bound";
    connection.dataConnection = endpoint.connection;
    this.#byDataConnection.set(endpoint.connection, connection);
    reply.success();
    this.#emit({
      type: "bind-connection",
      peerConnection: connection.id,
      dataConnection: endpoint.connection,
    });
  }

  // ---------------------------------------------------------------------------------------
  // The runtime's feedback

  /**
   * A peer connected to TCP relay socket `relay` (§5.3): its CONNECTION-ID, with a
   * ConnectionAttempt queued for the client, or undefined when the runtime must close it.
   */
  peerConnectionAccepted(
    relay: RelayId,
    address: string,
    port: number,
    now: number,
  ): PeerConnectionId | undefined {
    const socket = this.#data.relay(relay);
    if (socket === undefined || socket.protocol !== "tcp" || socket.state !== "bound") {
      this.#stats.drops["no-allocation"]++;
      return undefined;
    }
    const allocation = socket.allocation;
    const peer: TransportAddress = { family: socket.family, address, port };
    const permission = allocation.findPermission(peer);
    if (permission === undefined || permission.expiresAt <= now) {
      this.#stats.drops["no-permission"]++;
      return undefined;
    }
    if (allocation.tcpConnections.size >= this.#options.maxPerAllocation) {
      this.#stats.drops["connection-limit"]++;
      return undefined;
    }
    const connection = this.#open(allocation, peer, "pending-bind", now);
    // RFC 6062 §5.3: tell the client on its control connection.
    const tid = new Uint8Array(12);
    this.#options.random.fillBytes(tid);
    const b = this.#responder
      .builder(Method.ConnectionAttempt, MessageClass.Indication, tid)
      .xorAddress(AttributeType.XorPeerAddress, peer)
      .uint32(AttributeType.ConnectionId, connection.id);
    this.#responder.transmit(
      allocation.client,
      b.fingerprint().build(),
      Method.ConnectionAttempt,
      MessageClass.Indication,
      0,
    );
    return connection.id;
  }

  /** The dial for a Connect succeeded: the success names the CONNECTION-ID (§5.2). */
  peerConnected(id: PeerConnectionId, now: number): void {
    const connection = this.#byId.get(id);
    if (connection === undefined || connection.state !== "connecting") return;
    connection.state = "pending-bind";
    connection.expiresAt = now + TCP_CONNECTION_TIMEOUT_MS;
    this.#deadlines.schedule(connection.allocation);
    const reply = this.#pendingConnects.get(connection);
    this.#pendingConnects.delete(connection);
    reply?.success((b) => b.uint32(AttributeType.ConnectionId, connection.id));
  }

  /** The dial failed or was refused: 447 (§5.2). */
  peerConnectFailed(id: PeerConnectionId): void {
    const connection = this.#byId.get(id);
    if (connection === undefined || connection.state !== "connecting") return;
    const reply = this.#pendingConnects.get(connection);
    this.#pendingConnects.delete(connection);
    this.#forget(connection);
    reply?.error(ErrorCode.ConnectionTimeoutOrFailure);
  }

  /** The peer side closed (§5.5): so does a bound client data connection. */
  peerConnectionClosed(id: PeerConnectionId): void {
    const connection = this.#byId.get(id);
    if (connection === undefined) return;
    if (connection.state === "connecting") {
      this.peerConnectFailed(id);
      return;
    }
    if (connection.dataConnection !== undefined) {
      this.#emit({ type: "close-connection", connection: connection.dataConnection });
    }
    this.#forget(connection);
  }

  /**
   * Bytes moved through the bound pipe of peer connection `id`: charged to its allocation's
   * bandwidth buckets; the ms to pause reading (0: none, or no such pipe, or no limit).
   */
  charge(id: PeerConnectionId, bytes: number, now: number): number {
    const connection = this.#byId.get(id);
    if (connection?.state !== "bound" || !(bytes > 0)) return 0;
    const pause = connection.allocation.bandwidth?.charge(bytes, now) ?? 0;
    if (pause > 0) this.#stats.bandwidthPauses++;
    return pause;
  }

  /** A client connection closed: if it was a bound data connection, its peer's closes too (§5.5). */
  dataConnectionClosed(connection: ConnectionId): void {
    const bound = this.#byDataConnection.get(connection);
    if (bound !== undefined) this.#close(bound);
  }

  // ---------------------------------------------------------------------------------------
  // Allocation lifecycle

  /** §5.2-§5.3: a dial or an unbound peer connection gets 30 s, then it is closed. */
  expire(allocation: Allocation, now: number): void {
    for (const c of [...allocation.tcpConnections]) {
      if (c.state !== "bound" && c.expiresAt <= now) this.#close(c);
    }
  }

  /** The allocation ends: every connection of peers of `family` (or all) with it. */
  closeAll(allocation: Allocation, family?: 4 | 6): void {
    for (const c of [...allocation.tcpConnections]) {
      if (family === undefined || c.peer.family === family) this.#close(c);
    }
  }

  #open(
    allocation: Allocation,
    peer: TransportAddress,
    state: "connecting" | "pending-bind",
    now: number,
  ): TcpPeerConnection {
    let id = 0;
    const space = this.#options.connectionIds;
    while (id === 0 || this.#byId.has(id as PeerConnectionId)) {
      id = this.#options.random.nextUint32();
      // With several engines the id names its owner: id % count === index.
      if (space !== undefined && space.count > 1) {
        id = id - (id % space.count) + space.index;
        if (id > 0xffffffff) id -= space.count;
      }
    }
    const connection: TcpPeerConnection = {
      id: id as PeerConnectionId,
      allocation,
      peer,
      state,
      expiresAt: now + TCP_CONNECTION_TIMEOUT_MS,
      dataConnection: undefined,
    };
    this.#byId.set(connection.id, connection);
    allocation.tcpConnections.add(connection);
    this.#deadlines.schedule(allocation);
    return connection;
  }

  /** Close both sides of a peer connection and forget it; a pending Connect gets 447. */
  #close(connection: TcpPeerConnection): void {
    if (connection.dataConnection !== undefined) {
      this.#emit({ type: "close-connection", connection: connection.dataConnection });
    }
    this.#emit({ type: "close-peer-connection", peerConnection: connection.id });
    const reply = this.#pendingConnects.get(connection);
    this.#pendingConnects.delete(connection);
    reply?.error(ErrorCode.ConnectionTimeoutOrFailure);
    this.#forget(connection);
  }

  #forget(connection: TcpPeerConnection): void {
    this.#byId.delete(connection.id);
    connection.allocation.tcpConnections.delete(connection);
    if (connection.dataConnection !== undefined) {
      this.#byDataConnection.delete(connection.dataConnection);
    }
  }
}
