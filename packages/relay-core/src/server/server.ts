/**
 * The TURN server state machine (RFC 8656 over RFC 8489): sans-IO. Bytes, addresses and `now`
 * go in; commands, a next timeout and data-path routes come out. See README.md for the call
 * order the runtime follows.
 */
import type { CredentialStore, PasswordAlgorithmName, Principal } from "../auth/credentials.js";
import { NonceIssuer, SecurityFeature } from "../auth/nonce.js";
import { pinOfUsername, userOfUsername } from "../auth/pinned-username.js";
import type { TransportAddress } from "../codec/address.js";
import {
  AttributeType,
  ErrorCode,
  HEADER_LENGTH,
  MAX_CHANNEL,
  MessageClass,
  Method,
  MIN_CHANNEL,
  PasswordAlgorithm,
  TransportProtocol,
} from "../codec/constants.js";
import {
  bytesKey,
  decodeStun,
  getAttribute,
  hasAttribute,
  readAddressFamily,
  readAllXorAddresses,
  readBytes,
  readChannelNumber,
  readEvenPort,
  readPasswordAlgorithm,
  readRequestedTransport,
  readString,
  readUint32,
  readXorAddress,
  type StunMessage,
  StunMessageBuilder,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "../codec/message.js";
import { MinHeap } from "../min-heap.js";
import { OutputQueue } from "../output-queue.js";
import { ipv4ToUint32 } from "../policy/ip.js";
import { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import type { RandomSource } from "../rng.js";
import {
  Allocation,
  type ChannelBinding,
  type ClientEndpoint,
  type ClientTransport,
  type Permission,
  type RelaySocket,
  type TcpPeerConnection,
} from "./allocation.js";
import { type AllocationQuota, LocalAllocationQuota } from "./allocation-quota.js";
import {
  AddressKeys,
  DatagramSource,
  ip4PortKey,
  ipv6Words,
  sameWords,
} from "./datagram-source.js";
import { SourceRateLimiter } from "./rate-limit.js";
import { type PortRange, RelayPortPool, type Reservation } from "./relay-port-pool.js";
import { createServerStats, type DropReason, type ServerStats } from "./stats.js";
import {
  type AllocationEndReason,
  type AllocationInfo,
  type Command,
  type Route,
  RouteKind,
} from "./types.js";

/** One relayed address family the server offers: where to bind, what to advertise. */
export interface RelayAddressConfig {
  readonly bind: string;
  /** XOR-RELAYED-ADDRESS value when behind 1:1 NAT (defaults to `bind`). */
  readonly advertised?: string;
}

export interface TurnServerOptions {
  readonly realm: string;
  readonly credentials: CredentialStore;
  /** Nonces, port choice and transaction ids: seed it in tests (no ambient randomness here). */
  readonly random: RandomSource;
  /** At least one family. */
  readonly relayAddresses: { readonly ip4?: RelayAddressConfig; readonly ip6?: RelayAddressConfig };
  readonly minPort?: number;
  readonly maxPort?: number;
  /**
   * Ports only pinned credentials get (auth/pinned-username.ts), each exactly the port its
   * username names; disjoint from minPort..maxPort. Without it pinned credentials are refused.
   */
  readonly pinnedPorts?: PortRange;
  /** Users refused from now on (see setRevokedUsers). */
  readonly revokedUsers?: Iterable<string>;
  /** SOFTWARE attribute on responses (RFC 8489 §14.14); omit to send none. */
  readonly software?: string;
  readonly peerPolicy?: PeerAddressPolicy;
  readonly maxAllocations?: number;
  readonly maxAllocationsPerUser?: number;
  readonly maxPermissionsPerAllocation?: number;
  readonly maxChannelsPerAllocation?: number;
  /**
   * Responses per second per source IP to requests without valid credentials (Binding, 401,
   * 438, 400 before authentication); over it they are dropped ("rate-limited"). Default 200,
   * burst twice that; 0 turns the limit off. See rate-limit.ts.
   */
  readonly maxUnauthenticatedRate?: number;
  /** RFC 6062 peer connections per TCP allocation (dialing, waiting or bound). */
  readonly maxTcpConnectionsPerAllocation?: number;
  /** Wall clock = `now + unixTimeOffsetMs` (TURN REST expiry); `now` itself is monotonic ms. */
  readonly unixTimeOffsetMs?: number;
  /** Sent with 300 Try Alternate while draining (RFC 8489 §10). */
  readonly alternateServer?: TransportAddress;
  readonly lifetimes?: Partial<Lifetimes>;
  /**
   * Server-private bytes for nonces and address hashing (32). Engines that must accept each
   * other's nonces (the relay's workers: any of them may see a client's next request) share
   * one; by default they are drawn from `random`.
   */
  readonly secret?: Uint8Array;
  /** Allocation quotas held together with other engines; default: maxAllocations(PerUser). */
  readonly allocationQuota?: AllocationQuota;
  /** The cap on unauthenticated answers; default: maxUnauthenticatedRate per source IP. */
  readonly unauthenticatedLimiter?: { allow(source: string, now: number): boolean };
  /**
   * RFC 6062 CONNECTION-IDs when several engines serve one relay: the ids this one issues are
   * `index` modulo `count`, and a ConnectionBind for another engine's id is handed over to it
   * (a "hand-over-connection" command) instead of being answered here.
   */
  readonly connectionIds?: { readonly index: number; readonly count: number };
}

/** Seconds. RFC 8656 §7.2 (allocation), §9 (permission), §12 (channel and cool-down). */
export interface Lifetimes {
  defaultAllocation: number;
  maxAllocation: number;
  permission: number;
  channel: number;
  channelCooldown: number;
  nonce: number;
  /** RFC 8489 §6.3.1 advises remembering responses to retransmitted requests for 40 s. */
  responseCache: number;
  /** RFC 8656 §7.2: a reserved EVEN-PORT partner is held about 30 s. */
  reservation: number;
}

const DEFAULT_LIFETIMES: Lifetimes = {
  defaultAllocation: 600,
  maxAllocation: 3600,
  permission: 300,
  channel: 600,
  channelCooldown: 300,
  nonce: 600,
  responseCache: 40,
  reservation: 30,
};

/** 65,535 - XOR-PEER-ADDRESS (v6, 24) - DATA header (4), rounded down to 4-byte padding. */
const MAX_DATA_INDICATION_PAYLOAD = 65_504;
const EMPTY_BYTES = new Uint8Array(0);
/** RFC 6062 §5.2, §5.3: how long a dial or an unbound peer connection may wait. */
const TCP_CONNECTION_TIMEOUT_MS = 30_000;
/** A relay port that fails to bind is retried on another port this many times (then 508). */
const MAX_BIND_ATTEMPTS = 8;
const RESPONSE_CACHE_ENTRIES = 8192;
/** RFC 8489 §14.3: USERNAME is "fewer than 509 bytes". */
const MAX_USERNAME_BYTES = 509;
/** RFC 8489 §14.9, §14.10: REALM and NONCE are "fewer than 763 bytes" (128 characters). */
const MAX_REALM_NONCE_BYTES = 763;

interface ClientRecord extends ClientEndpoint {
  readonly key: number;
  allocation: Allocation | undefined;
}

interface Authenticated {
  readonly username: string;
  readonly key: Uint8Array;
  readonly principal: Principal;
  readonly sha256: boolean;
}

interface TimerEntry {
  readonly allocation: Allocation;
  readonly generation: number;
}

export class TurnServer {
  readonly stats: ServerStats = createServerStats();
  /** The routing decision of the last data-path call; see RouteKind. */
  readonly route: Route = {
    relay: -1,
    relayHandle: -1,
    peerAddress: "",
    peerPort: 0,
    peerFamily: 4,
    peerIp4: 0,
    peerIp6: undefined,
    client: undefined as unknown as ClientEndpoint,
    channel: 0,
    data: new Uint8Array(0),
    start: 0,
    end: 0,
  };

  private readonly options: TurnServerOptions;
  private readonly lifetimes: Lifetimes;
  private readonly policy: PeerAddressPolicy;
  private readonly nonces: NonceIssuer;
  private readonly ports: RelayPortPool;
  private readonly commands = new OutputQueue<Command>();
  private readonly timers = new MinHeap<TimerEntry>();
  /**
   * UDP clients with an allocation: per listener id (an array index), by 5-tuple key (IPv4
   * `ip * 65536 + port`, IPv6 a keyed hash; see datagram-source.ts).
   */
  private readonly udpClients: Map<number, ClientRecord>[] = [];
  private readonly keys: AddressKeys;
  /** The source of string-addressed input (handleUdpClient, handlePeerData), reused. */
  private readonly textSource = new DatagramSource();
  private readonly streamClients = new Map<number, ClientRecord>();
  private readonly relays = new Map<number, RelaySocket>();
  /** The allocation holding each pinned port, keyed family * 65536 + port. */
  private readonly pinnedHolders = new Map<number, Allocation>();
  private revokedUsers: ReadonlySet<string>;
  private readonly quota: AllocationQuota;
  /** RFC 6062 peer connections by CONNECTION-ID, and bound ones by client data connection. */
  private readonly tcpConnections = new Map<number, TcpPeerConnection>();
  private readonly dataConnections = new Map<number, TcpPeerConnection>();
  /** Connect requests waiting for the runtime's dial. */
  private readonly pendingConnects = new Map<TcpPeerConnection, Reply>();
  private readonly unauthenticatedLimiter: { allow(source: string, now: number): boolean };
  /** The `now` of the input being handled (responses are built deep below the handlers). */
  private lastNow = 0;
  /** Every allocation not yet deleted (timer-heap rebuilds walk it). */
  private readonly liveAllocations = new Set<Allocation>();
  /** Heap entries that no longer match their allocation's schedule. */
  private staleTimers = 0;
  /** Allocates waiting for their relay sockets to bind, and the reply to send then. */
  private readonly pendingAllocates = new Map<Allocation, Reply>();
  private readonly responseCache = new Map<
    string,
    { data: Uint8Array; messageClass: MessageClass; errorCode: number; expiresAt: number }
  >();
  private nextRelayId = 1;
  private nextAllocationId = 1;
  private draining = false;
  private unixTimeOffsetMs: number;

  constructor(options: TurnServerOptions) {
    if (!options.relayAddresses.ip4 && !options.relayAddresses.ip6) {
      throw new Error("TurnServer needs at least one relay address family");
    }
    this.options = options;
    this.lifetimes = { ...DEFAULT_LIFETIMES, ...options.lifetimes };
    this.policy = options.peerPolicy ?? new PeerAddressPolicy();
    this.ports = new RelayPortPool({
      dynamic: { min: options.minPort ?? 49152, max: options.maxPort ?? 65535 },
      pinned: options.pinnedPorts,
      random: options.random,
    });
    this.revokedUsers = new Set(options.revokedUsers ?? []);
    const secret = options.secret ?? new Uint8Array(32);
    if (options.secret === undefined) options.random.fillBytes(secret);
    this.keys = new AddressKeys(secret);
    this.nonces = new NonceIssuer(
      secret,
      this.lifetimes.nonce * 1000,
      SecurityFeature.PasswordAlgorithms,
    );
    this.unixTimeOffsetMs = options.unixTimeOffsetMs ?? 0;
    this.unauthenticatedLimiter =
      options.unauthenticatedLimiter ??
      new SourceRateLimiter(options.maxUnauthenticatedRate ?? 200);
    this.quota =
      options.allocationQuota ??
      new LocalAllocationQuota(options.maxAllocations, options.maxAllocationsPerUser);
  }

  // ---------------------------------------------------------------------------------------
  // Inputs

  /**
   * A datagram from a client on UDP listener `listener`, addressed as text (as node:dgram
   * reports it). Returns the data-path route (see `route`); control messages queue commands.
   * `handleClientDatagram` is the same without strings or views per packet.
   */
  handleUdpClient(
    listener: number,
    data: Uint8Array,
    address: string,
    port: number,
    now: number,
  ): RouteKind {
    if (!this.textSource.setText(address, port)) return this.drop("unsupported-source");
    return this.handleClientDatagram(listener, data, 0, data.length, this.textSource, now);
  }

  /**
   * A datagram `buf[start..end)` from client `from` on UDP listener `listener` (the batched
   * data path: `from` is reused by the caller, `buf` may be a whole receive arena). Returns the
   * data-path route; its byte range refers to `buf`.
   */
  handleClientDatagram(
    listener: number,
    buf: Uint8Array,
    start: number,
    end: number,
    from: DatagramSource,
    now: number,
  ): RouteKind {
    if (from.port === 0) return this.drop("port-zero");
    const first = end > start ? buf[start]! & 0xc0 : 0xc0;
    const known = this.findUdpClient(listener, from);
    if (first === 0x40) {
      if (known === undefined) return this.drop("no-allocation");
      return this.routeChannelData(known, buf, start, end, now);
    }
    if (first !== 0) return this.drop("not-stun");
    // A scoped IPv6 source ("fe80::1%eth0") cannot be written into XOR-MAPPED-ADDRESS, and
    // link-local clients have no business with a relay.
    if (from.scoped) return this.drop("unsupported-source");
    const endpoint = known ?? udpEndpoint(listener, from);
    const data = start === 0 && end === buf.length ? buf : buf.subarray(start, end);
    return this.handleStun(endpoint, known, data, now);
  }

  private findUdpClient(listener: number, from: DatagramSource): ClientRecord | undefined {
    const clients = this.udpClients[listener];
    if (clients === undefined) return undefined;
    if (from.family === 4) return clients.get(ip4PortKey(from.ip4, from.port));
    const client = clients.get(this.keys.ip6Port(from.ip6, from.port));
    return client !== undefined && sameWords(client.ip6!, from.ip6) ? client : undefined;
  }

  /** A TCP or TLS client connection was accepted (RFC 8656 §3.1: allocations live on it). */
  handleConnectionOpened(
    connection: number,
    listener: number,
    transport: Exclude<ClientTransport, "udp">,
    address: string,
    port: number,
  ): void {
    const family = address.includes(":") ? 6 : 4;
    this.streamClients.set(connection, {
      transport,
      listener,
      connection,
      family,
      address,
      port,
      ip4: family === 4 ? ipv4ToUint32(address) : -1,
      ip6: family === 6 ? ipv6Words(address) : undefined,
      key: connection,
      allocation: undefined,
    });
  }

  /** The connection closed: RFC 8656 §3.1 ties the allocation's life to it. */
  handleConnectionClosed(connection: number, now: number): void {
    const data = this.dataConnections.get(connection);
    if (data !== undefined) {
      // RFC 6062 §5.5: closing either side of a bound pair closes the other.
      this.closeTcpConnection(data);
    }
    const client = this.streamClients.get(connection);
    if (!client) return;
    this.streamClients.delete(connection);
    if (client.allocation) this.deleteAllocation(client.allocation, "connection-closed", now);
  }

  // ---------------------------------------------------------------------------------------
  // RFC 6062 feedback from the runtime

  /**
   * A peer connected to the TCP relayed address of relay socket `relay` (RFC 6062 §5.3).
   * Returns the CONNECTION-ID under which the runtime holds the (paused) socket, or undefined
   * when the runtime must close it: no allocation, or no permission for the peer's IP.
   */
  handlePeerConnectionAccepted(
    relay: number,
    address: string,
    port: number,
    now: number,
  ): number | undefined {
    const socket = this.relays.get(relay);
    if (socket === undefined || socket.protocol !== "tcp" || socket.state !== "bound") {
      this.drop("no-allocation");
      return undefined;
    }
    const allocation = socket.allocation;
    const peer: TransportAddress = { family: socket.family, address, port };
    const permission = this.findPermission(allocation, peer);
    if (permission === undefined || permission.expiresAt <= now) {
      this.drop("no-permission");
      return undefined;
    }
    if (allocation.tcpConnections.size >= this.maxTcpConnections()) {
      this.drop("connection-limit");
      return undefined;
    }
    const connection = this.newTcpConnection(allocation, peer, "pending-bind", now);
    // RFC 6062 §5.3: tell the client on its control connection.
    const tid = new Uint8Array(12);
    this.options.random.fillBytes(tid);
    const b = this.builder(Method.ConnectionAttempt, MessageClass.Indication, tid)
      .xorAddress(AttributeType.XorPeerAddress, peer)
      .uint32(AttributeType.ConnectionId, connection.id);
    this.sendRaw(
      allocation.client,
      b.fingerprint().build(),
      Method.ConnectionAttempt,
      MessageClass.Indication,
      0,
    );
    return connection.id;
  }

  /** The runtime's dial for a Connect request succeeded (RFC 6062 §5.2). */
  handlePeerConnected(connectionId: number, now: number): void {
    const connection = this.tcpConnections.get(connectionId);
    if (connection === undefined || connection.state !== "connecting") return;
    connection.state = "pending-bind";
    connection.expiresAt = now + TCP_CONNECTION_TIMEOUT_MS;
    this.schedule(connection.allocation);
    const reply = this.pendingConnects.get(connection);
    this.pendingConnects.delete(connection);
    reply?.success((b) => b.uint32(AttributeType.ConnectionId, connection.id));
  }

  /** The dial failed or was refused: 447 (RFC 6062 §5.2). */
  handlePeerConnectFailed(connectionId: number, _now: number): void {
    const connection = this.tcpConnections.get(connectionId);
    if (connection === undefined || connection.state !== "connecting") return;
    const reply = this.pendingConnects.get(connection);
    this.pendingConnects.delete(connection);
    this.forgetTcpConnection(connection);
    reply?.error(ErrorCode.ConnectionTimeoutOrFailure);
  }

  /** The peer side of a TCP relay connection closed (RFC 6062 §5.5). */
  handlePeerConnectionClosed(connectionId: number, _now: number): void {
    const connection = this.tcpConnections.get(connectionId);
    if (connection === undefined) return;
    if (connection.state === "connecting") {
      this.handlePeerConnectFailed(connectionId, _now);
      return;
    }
    if (connection.state === "bound") {
      this.emit({ type: "close-connection", connection: connection.dataConnection });
    }
    this.forgetTcpConnection(connection);
  }

  /** One frame (cut by StreamFramer) from a TCP/TLS client connection. */
  handleStreamClient(connection: number, frame: Uint8Array, now: number): RouteKind {
    const client = this.streamClients.get(connection);
    if (client === undefined) return this.drop("unknown-connection");
    const first = frame.length > 0 ? frame[0]! & 0xc0 : 0xc0;
    if (first === 0x40) return this.routeChannelData(client, frame, 0, frame.length, now);
    if (first !== 0) return this.drop("not-stun");
    return this.handleStun(client, client, frame, now);
  }

  /** A datagram from a peer on relay socket `relay`, addressed as text (see handlePeerDatagram). */
  handlePeerData(
    relay: number,
    data: Uint8Array,
    address: string,
    port: number,
    now: number,
  ): RouteKind {
    if (!this.textSource.setText(address, port)) return this.drop("family-mismatch");
    return this.handlePeerDatagram(relay, data, 0, data.length, this.textSource, now);
  }

  /**
   * A datagram `buf[start..end)` from peer `from` arriving on relay socket `relay` (RFC 8656
   * §11.3, §12.4). A bound channel costs one map lookup here; an unbound peer a second one
   * (its permission) and a Data indication built for it.
   */
  handlePeerDatagram(
    relay: number,
    buf: Uint8Array,
    start: number,
    end: number,
    from: DatagramSource,
    now: number,
  ): RouteKind {
    const socket = this.relays.get(relay);
    if (socket === undefined || socket.state !== "bound") return this.drop("no-allocation");
    const allocation = socket.allocation;
    // An allocation past its lifetime relays nothing, whether or not its timer ran (RFC 8656 §7).
    if (allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.drop("no-allocation");
    }
    if (from.family !== socket.family) return this.drop("family-mismatch");
    const v4 = from.family === 4;
    const route = this.route;
    const binding = allocation.channelsByPeer.get(
      v4 ? ip4PortKey(from.ip4, from.port) : this.keys.ip6Port(from.ip6, from.port),
    );
    if (
      binding !== undefined &&
      binding.expiresAt > now &&
      (v4 || sameWords(binding.peerIp6!, from.ip6))
    ) {
      // RFC 8656 §9: without a live permission for the peer's IP the datagram is discarded.
      if (binding.permission.expiresAt <= now) return this.drop("no-permission");
      // RFC 8656 §12.4: a bound peer's data goes back as ChannelData.
      route.client = allocation.client;
      route.channel = binding.number;
      route.data = buf;
      route.start = start;
      route.end = end;
      return RouteKind.ToClient;
    }
    const permission = allocation.permissions.get(v4 ? from.ip4 : this.keys.ip6(from.ip6));
    if (
      permission === undefined ||
      permission.expiresAt <= now ||
      (!v4 && !sameWords(permission.ip6!, from.ip6))
    ) {
      return this.drop("no-permission");
    }
    // RFC 8656 §11.4: otherwise as a Data indication with XOR-PEER-ADDRESS and DATA. Its
    // attributes must fit STUN's 16-bit length (RFC 8489 §5): a near-maximal IPv6 datagram
    // cannot be carried that way, only over a channel.
    const length = end - start;
    if (length > MAX_DATA_INDICATION_PAYLOAD) return this.drop("oversized");
    const tid = new Uint8Array(12);
    this.options.random.fillBytes(tid);
    // Sized up front: header, XOR-PEER-ADDRESS (v6 at most 24), DATA header and padding.
    const capacity = HEADER_LENGTH + 24 + 4 + length + 3;
    const indication = new StunMessageBuilder(Method.Data, MessageClass.Indication, tid, capacity)
      .xorAddress(AttributeType.XorPeerAddress, {
        family: socket.family,
        address: permission.address,
        port: from.port,
      })
      .bytes(AttributeType.Data, start === 0 && end === buf.length ? buf : buf.subarray(start, end))
      .build();
    route.client = allocation.client;
    route.channel = 0;
    route.data = indication;
    route.start = 0;
    route.end = indication.length;
    return RouteKind.ToClient;
  }

  /** The runtime bound relay socket `relay` (answer to an "open-relay" command). */
  handleRelayBound(relay: number, now: number, runtimeHandle = -1): void {
    const socket = this.relays.get(relay);
    if (socket?.state !== "binding") return;
    socket.state = "bound";
    socket.runtimeHandle = runtimeHandle;
    this.maybeCompleteAllocate(socket.allocation, now);
  }

  /** The runtime could not bind relay socket `relay`: try another port (bounded), else fail. */
  handleRelayBindFailed(relay: number, now: number): void {
    const socket = this.relays.get(relay);
    if (socket?.state !== "binding") return;
    // An EVEN-PORT allocation is not moved to an arbitrary port (its parity and reserved
    // neighbour would be lost): it fails instead. Others try another port, picked before the
    // failed one is released so the same port is not picked again.
    if (socket.attempts < MAX_BIND_ATTEMPTS && !socket.fixedPort) {
      const port = this.ports.pick(socket.family);
      if (port !== undefined) {
        this.ports.release(socket.family, socket.port);
        socket.port = port;
        socket.attempts++;
        this.ports.take(socket.family, port);
        this.openRelay(socket);
        return;
      }
    }
    this.releasePort(socket);
    socket.state = "failed";
    this.relays.delete(socket.id);
    const allocation = socket.allocation;
    if (allocation.relays[0] === socket) {
      // The requested family has no relayed address: the Allocate fails (RFC 8656 §7.2, 508).
      // A pinned port is never moved, so say which port could not be had.
      this.sendAllocateFailure(
        allocation,
        ErrorCode.InsufficientCapacity,
        allocation.pinnedPort === undefined
          ? undefined
          : `Insufficient Capacity: pinned port ${allocation.pinnedPort} could not be bound`,
      );
      this.deleteAllocation(allocation, "bind-failed", now);
      return;
    }
    // The additional family failed: the allocation goes on with ADDRESS-ERROR-CODE (§7.2).
    allocation.familyErrors.push({ family: socket.family, code: ErrorCode.InsufficientCapacity });
    this.maybeCompleteAllocate(allocation, now);
  }

  /** Lifetimes: expire allocations, permissions and channels due at or before `now`. */
  handleTimeout(now: number): void {
    for (;;) {
      const at = this.timers.peekKey();
      if (at === undefined || at > now) break;
      const entry = this.timers.pop()!;
      const allocation = entry.allocation;
      if (allocation.deleted || entry.generation !== allocation.timerGeneration) {
        if (this.staleTimers > 0) this.staleTimers--;
        continue;
      }
      allocation.scheduledAt = Number.POSITIVE_INFINITY;
      this.sweep(allocation, now);
    }
    this.ports.expireReservations(now);
  }

  /** Stop granting allocations (SIGTERM): 300 with ALTERNATE-SERVER if configured, else 508. */
  startDraining(): void {
    this.draining = true;
  }

  /** Delete every allocation (shutdown): queues close-relay for each relay socket. */
  closeAll(now: number): void {
    for (const socket of [...this.relays.values()]) {
      if (!socket.allocation.deleted) this.deleteAllocation(socket.allocation, "shutdown", now);
    }
  }

  /**
   * The revocation list: from now on every request with credentials of these users gets 403,
   * and their live allocations end at once ("revoked"). A user is the <user> part of a TURN
   * REST username without its pin (auth/pinned-username.ts), or a static user's name. Returns
   * how many allocations ended.
   */
  setRevokedUsers(users: Iterable<string>, now: number): number {
    this.revokedUsers = new Set(users);
    if (this.revokedUsers.size === 0) return 0;
    let ended = 0;
    for (const allocation of [...this.liveAllocations]) {
      if (!this.revokedUsers.has(userOfUsername(allocation.username))) continue;
      if (allocation.state === "binding") {
        this.sendAllocateFailure(allocation, ErrorCode.Forbidden, "Forbidden: credentials revoked");
      }
      this.deleteAllocation(allocation, "revoked", now);
      ended++;
    }
    return ended;
  }

  /** Track wall-clock jumps: TURN REST usernames expire on the Unix clock. */
  setUnixTimeOffset(offsetMs: number): void {
    this.unixTimeOffsetMs = offsetMs;
  }

  // ---------------------------------------------------------------------------------------
  // Outputs

  pollCommand(): Command | undefined {
    return this.commands.poll();
  }

  /** The next instant `handleTimeout` has work, or undefined when nothing is scheduled. */
  pollTimeout(): number | undefined {
    const next = this.timers.peekKey();
    const reservation = this.ports.nextReservationExpiry();
    if (next === undefined) return reservation;
    return reservation !== undefined && reservation < next ? reservation : next;
  }

  /**
   * Every allocation that has its relayed address (Allocate answered), for discovery: who holds
   * which relayed address, from where, for which peers. No secret is in it. O(allocations):
   * for an operator's request, never the data path.
   */
  allocations(now: number): AllocationInfo[] {
    const out: AllocationInfo[] = [];
    for (const a of this.liveAllocations) {
      if (a.state !== "active" || a.expiresAt <= now) continue;
      const peers: string[] = [];
      for (const p of a.permissions.values()) if (p.expiresAt > now) peers.push(p.address);
      const client = a.client;
      out.push({
        id: a.id,
        username: a.username,
        user: userOfUsername(a.username),
        pinnedPort: a.pinnedPort,
        transport: a.requestedTransport,
        client: {
          transport: client.transport,
          listener: client.listener,
          connection: client.connection,
          family: client.family,
          address: client.address,
          port: client.port,
          ip4: client.ip4,
          ip6: client.ip6,
        },
        relayed: a.relays
          .filter((r) => r.state === "bound")
          .map((r) => ({ family: r.family, address: r.advertisedAddress, port: r.port })),
        peers,
        createdAt: a.createdAt,
        expiresAt: a.expiresAt,
      });
    }
    return out;
  }

  /** Live allocation count (what quotas and readiness look at). */
  get allocationCount(): number {
    return this.stats.allocationsActive;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  // ---------------------------------------------------------------------------------------
  // Data path

  /**
   * RFC 8656 §12.4: ChannelData `buf[start..end)` from a client goes to the bound peer, if
   * still permitted. One map lookup (the channel); the binding holds its permission.
   */
  private routeChannelData(
    client: ClientRecord,
    buf: Uint8Array,
    start: number,
    end: number,
    now: number,
  ): RouteKind {
    const allocation = client.allocation;
    if (allocation === undefined || allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.drop("no-allocation");
    }
    if (end - start < 4) return this.drop("malformed-channel-data");
    const length = (buf[start + 2]! << 8) | buf[start + 3]!;
    // RFC 8656 §12.4: the datagram may be longer (padding), never shorter than the length.
    if (start + 4 + length > end) return this.drop("malformed-channel-data");
    const binding = allocation.channels.get((buf[start]! << 8) | buf[start + 1]!);
    if (binding === undefined || binding.expiresAt <= now) return this.drop("no-channel");
    if (binding.permission.expiresAt <= now) return this.drop("no-permission");
    const route = this.route;
    route.relay = binding.relay.id;
    route.relayHandle = binding.relay.runtimeHandle;
    route.peerAddress = binding.peer.address;
    route.peerPort = binding.peer.port;
    route.peerFamily = binding.peer.family;
    route.peerIp4 = binding.peerIp4;
    route.peerIp6 = binding.peerIp6;
    route.data = buf;
    route.start = start + 4;
    route.end = start + 4 + length;
    return RouteKind.ToPeer;
  }

  /** RFC 8656 §11.2: a Send indication. Unauthenticated; dropped silently when not allowed. */
  private handleSend(client: ClientRecord | undefined, msg: StunMessage, now: number): RouteKind {
    const allocation = client?.allocation;
    if (allocation === undefined || allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.drop("no-allocation");
    }
    // DONT-FRAGMENT cannot be honoured by this runtime: treated as unknown (RFC 8656 §11.2).
    if (msg.unknownRequired.length > 0 || hasAttribute(msg, AttributeType.DontFragment)) {
      return this.drop("invalid-indication");
    }
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    const data = getAttribute(msg, AttributeType.Data);
    if (
      peer === undefined ||
      data === undefined ||
      peer.port === 0 ||
      allocation.requestedTransport !== "udp"
    ) {
      return this.drop("invalid-indication");
    }
    const relay = allocation.relayFor(peer.family);
    if (relay === undefined) return this.drop("family-mismatch");
    if (this.policy.check(peer.address, peer.port) !== undefined)
      return this.drop("forbidden-peer");
    const permission = this.findPermission(allocation, peer);
    if (permission === undefined || permission.expiresAt <= now) return this.drop("no-permission");
    const route = this.route;
    route.relay = relay.id;
    route.relayHandle = relay.runtimeHandle;
    route.peerAddress = permission.address;
    route.peerPort = peer.port;
    route.peerFamily = permission.family;
    route.peerIp4 = permission.ip4;
    route.peerIp6 = permission.ip6;
    route.data = msg.bytes;
    route.start = data.offset;
    route.end = data.offset + data.length;
    return RouteKind.ToPeer;
  }

  // ---------------------------------------------------------------------------------------
  // STUN messages from clients

  private handleStun(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    data: Uint8Array,
    now: number,
  ): RouteKind {
    this.lastNow = now;
    // A scoped IPv6 source ("fe80::1%eth0", as Node reports link-local senders) cannot be
    // written into XOR-MAPPED-ADDRESS, and link-local clients have no business with a relay.
    if (endpoint.address.includes("%")) return this.drop("unsupported-source");
    const decoded = decodeStun(data);
    if (!decoded.ok) {
      this.drop("malformed");
      // RFC 8489 §6.3: a request we can parse the header of gets a 400 rather than silence.
      const header = decoded.header;
      if (
        header &&
        header.messageClass === MessageClass.Request &&
        decoded.error === "bad-length"
      ) {
        this.respondError(endpoint, header.method, header.transactionId, ErrorCode.BadRequest);
      }
      return RouteKind.None;
    }
    const msg = decoded.message;
    if (msg.messageClass === MessageClass.Request) {
      this.handleRequest(endpoint, client, msg, now);
      return RouteKind.None;
    }
    if (msg.messageClass === MessageClass.Indication) {
      if (msg.method === Method.Send) return this.handleSend(client, msg, now);
      // A Binding indication is a keep-alive (RFC 8489 §3): nothing to do.
      if (msg.method === Method.Binding) return RouteKind.None;
    }
    return this.drop("unexpected-message");
  }

  private handleRequest(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    now: number,
  ): void {
    if (msg.method === Method.Binding) {
      this.handleBinding(endpoint, msg);
      return;
    }
    if (!isTurnRequestMethod(msg.method)) {
      this.respondError(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest);
      return;
    }
    // RFC 8656 §7: what has expired by `now` is gone at `now`, even when the runtime's timer
    // fires late. Catch up first, so a lapsed allocation gets 437, not a Refresh back to life.
    this.handleTimeout(now);
    if (client !== undefined && client.transport === "udp" && client.allocation === undefined) {
      client = undefined; // its record left udpClients with the allocation
    }
    // RFC 8489 §6.3.1 / RFC 8656 §7.2: a retransmission gets the very same response.
    const cacheKey = responseCacheKey(endpoint, msg.transactionId);
    const cached = this.responseCache.get(cacheKey);
    if (cached !== undefined) {
      if (cached.expiresAt > now) {
        this.sendRaw(endpoint, cached.data, msg.method, cached.messageClass, cached.errorCode);
        return;
      }
      this.responseCache.delete(cacheKey);
    }
    const auth = this.authenticate(endpoint, msg, now);
    if (auth === undefined) return;
    const reply = new Reply(this, endpoint, msg, auth, cacheKey, now);
    if (this.revokedUsers.size > 0 && this.revokedUsers.has(userOfUsername(auth.username))) {
      // Authentic but withdrawn (the platform revoked them before they expire): 403, not 401,
      // so the client does not retry the same credentials as if a nonce were the problem.
      this.stats.authFailures.revoked++;
      reply.error(ErrorCode.Forbidden, undefined, "Forbidden: credentials revoked");
      return;
    }
    if (msg.unknownRequired.length > 0) {
      reply.error(ErrorCode.UnknownAttribute, (b) => b.unknownAttributes(msg.unknownRequired));
      return;
    }
    const allocation = client?.allocation;
    if (allocation !== undefined && allocation.principal !== auth.principal) {
      // RFC 8656 §7: requests about an allocation come from the user that created it. For TURN
      // REST credentials that is the <user> part: the timestamp part is renewed over time
      // (coturn's uclient -W mints a fresh one per request, and coturn accepts it). A static
      // user of the same name is someone else (credentials.ts, principals).
      this.stats.authFailures["wrong-credentials"]++;
      reply.error(ErrorCode.WrongCredentials);
      return;
    }
    if (msg.method === Method.Allocate) {
      this.handleAllocate(endpoint, client, msg, auth, reply, now);
      return;
    }
    if (msg.method === Method.ConnectionBind) {
      this.handleConnectionBind(endpoint, client, msg, auth, reply, now);
      return;
    }
    // Everything else acts on the 5-tuple's allocation: none (or one still binding its relay
    // port) is 437 Allocation Mismatch (RFC 8656 §7.3, §10.2, §11.2; RFC 6062 §5.2).
    if (allocation === undefined || allocation.state !== "active") {
      reply.error(ErrorCode.AllocationMismatch);
      return;
    }
    switch (msg.method) {
      case Method.Refresh:
        this.handleRefresh(allocation, msg, reply, now);
        return;
      case Method.CreatePermission:
        this.handleCreatePermission(allocation, msg, reply, now);
        return;
      case Method.ChannelBind:
        this.handleChannelBind(allocation, msg, reply, now);
        return;
      case Method.Connect:
        this.handleConnect(allocation, msg, reply, now);
        return;
      default:
        reply.error(ErrorCode.BadRequest);
    }
  }

  /** RFC 8489 §7.3.1: the reflexive transport address, and nothing else to remember. */
  private handleBinding(endpoint: ClientEndpoint, msg: StunMessage): void {
    if (msg.unknownRequired.length > 0) {
      const b = this.builder(Method.Binding, MessageClass.ErrorResponse, msg.transactionId)
        .errorCode(ErrorCode.UnknownAttribute)
        .unknownAttributes(msg.unknownRequired);
      this.finishAndSend(endpoint, b, undefined, Method.Binding, ErrorCode.UnknownAttribute);
      return;
    }
    const b = this.builder(
      Method.Binding,
      MessageClass.SuccessResponse,
      msg.transactionId,
    ).xorAddress(AttributeType.XorMappedAddress, endpoint);
    this.finishAndSend(endpoint, b, undefined, Method.Binding, 0);
  }

  /**
   * RFC 8489 §9.2.4 long-term credentials. Returns undefined when a challenge or an error was
   * sent instead.
   */
  private authenticate(
    endpoint: ClientEndpoint,
    msg: StunMessage,
    now: number,
  ): Authenticated | undefined {
    const hasSha1 = hasAttribute(msg, AttributeType.MessageIntegrity);
    const hasSha256 = hasAttribute(msg, AttributeType.MessageIntegritySha256);
    if (!hasSha1 && !hasSha256) {
      this.stats.challenges++;
      this.challenge(endpoint, msg, ErrorCode.Unauthorized, now);
      return undefined;
    }
    // RFC 8489 §14.3, §14.9, §14.10: USERNAME is under 509 bytes, REALM and NONCE under 763.
    // Longer ones are refused here, before the nonce's HMAC or any key derivation: a stranger
    // must not make the relay hash (or remember) 60 KB usernames.
    if (
      (getAttribute(msg, AttributeType.Username)?.length ?? 0) >= MAX_USERNAME_BYTES ||
      (getAttribute(msg, AttributeType.Realm)?.length ?? 0) >= MAX_REALM_NONCE_BYTES ||
      (getAttribute(msg, AttributeType.Nonce)?.length ?? 0) >= MAX_REALM_NONCE_BYTES
    ) {
      this.stats.authFailures["oversized-attribute"]++;
      this.respondError(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest);
      return undefined;
    }
    const username = readString(msg, AttributeType.Username);
    const realm = readString(msg, AttributeType.Realm);
    const nonce = readString(msg, AttributeType.Nonce);
    if (username === undefined || realm === undefined || nonce === undefined) {
      this.stats.authFailures["missing-attributes"]++;
      this.respondError(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest);
      return undefined;
    }
    const nonceState = this.nonces.check(nonce, now, nonceBinding(endpoint));
    if (nonceState !== "valid") {
      this.stats.authFailures[nonceState === "stale" ? "stale-nonce" : "invalid-nonce"]++;
      this.challenge(endpoint, msg, ErrorCode.StaleNonce, now);
      return undefined;
    }
    // RFC 8489 §9.2.4: PASSWORD-ALGORITHM must be one we offered, and the client must echo our
    // PASSWORD-ALGORITHMS unchanged (bid-down protection).
    let algorithm: PasswordAlgorithmName = "md5";
    const chosen = readPasswordAlgorithm(msg);
    const echoed = readBytes(msg, AttributeType.PasswordAlgorithms);
    if (chosen !== undefined || echoed !== undefined) {
      const offered = OFFERED_PASSWORD_ALGORITHMS;
      if (
        chosen === undefined ||
        echoed === undefined ||
        !sameBytes(echoed, offered) ||
        (chosen !== PasswordAlgorithm.Md5 && chosen !== PasswordAlgorithm.Sha256)
      ) {
        this.stats.authFailures["bad-algorithm"]++;
        this.respondError(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest);
        return undefined;
      }
      if (chosen === PasswordAlgorithm.Sha256) algorithm = "sha256";
    }
    const unixSeconds = Math.floor((now + this.unixTimeOffsetMs) / 1000);
    // The store checks each candidate key (one per secret under rotation) against the
    // message, and caches a key only once it verified (credentials.ts).
    const lookup = this.options.credentials.lookup(
      username,
      this.options.realm,
      unixSeconds,
      algorithm,
      hasSha256
        ? (key) => verifyMessageIntegritySha256(msg, key)
        : (key) => verifyMessageIntegrity(msg, key),
    );
    if (!lookup.ok) {
      this.stats.authFailures[lookup.reason]++;
      this.challenge(endpoint, msg, ErrorCode.Unauthorized, now);
      return undefined;
    }
    return { username, key: lookup.key, principal: lookup.principal, sha256: hasSha256 };
  }

  /** 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4). */
  private challenge(endpoint: ClientEndpoint, msg: StunMessage, code: number, now: number): void {
    const b = this.builder(msg.method, MessageClass.ErrorResponse, msg.transactionId)
      .errorCode(code)
      .string(AttributeType.Realm, this.options.realm)
      .string(AttributeType.Nonce, this.nonces.issue(now, nonceBinding(endpoint)))
      .bytes(AttributeType.PasswordAlgorithms, OFFERED_PASSWORD_ALGORITHMS);
    this.finishAndSend(endpoint, b, undefined, msg.method, code);
  }

  // ---------------------------------------------------------------------------------------
  // Allocate (RFC 8656 §7.2)

  private handleAllocate(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    auth: Authenticated,
    reply: Reply,
    now: number,
  ): void {
    const existing = client?.allocation;
    if (existing !== undefined) {
      if (sameBytes(existing.transactionId, msg.transactionId)) {
        // A retransmission: the success again, or silence while the relay port is binding.
        if (existing.allocateResponse) {
          this.sendRaw(
            endpoint,
            existing.allocateResponse,
            Method.Allocate,
            MessageClass.SuccessResponse,
            0,
          );
        }
        return;
      }
      reply.error(ErrorCode.AllocationMismatch);
      return;
    }
    if (this.draining) {
      if (this.options.alternateServer) {
        const alt = this.options.alternateServer;
        reply.error(ErrorCode.TryAlternate, (b) => b.address(AttributeType.AlternateServer, alt));
      } else {
        reply.error(ErrorCode.InsufficientCapacity);
      }
      return;
    }
    const transport = readRequestedTransport(msg);
    if (transport === undefined) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (transport !== TransportProtocol.Udp && transport !== TransportProtocol.Tcp) {
      reply.error(ErrorCode.UnsupportedTransportProtocol);
      return;
    }
    const relayProtocol = transport === TransportProtocol.Tcp ? "tcp" : "udp";
    if (
      relayProtocol === "tcp" &&
      (endpoint.transport === "udp" ||
        hasAttribute(msg, AttributeType.DontFragment) ||
        hasAttribute(msg, AttributeType.EvenPort) ||
        hasAttribute(msg, AttributeType.ReservationToken))
    ) {
      // RFC 6062 §5.1: TCP allocations are made over TCP/TLS, without the UDP-only attributes.
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (hasAttribute(msg, AttributeType.DontFragment)) {
      // RFC 8656 §7.2: a server that cannot set DF treats DONT-FRAGMENT as unknown.
      reply.error(ErrorCode.UnknownAttribute, (b) =>
        b.unknownAttributes([AttributeType.DontFragment]),
      );
      return;
    }
    const evenPort = readEvenPort(msg);
    const reservationToken = readBytes(msg, AttributeType.ReservationToken);
    const requestedFamily = readAddressFamily(msg, AttributeType.RequestedAddressFamily);
    const additionalFamily = readAddressFamily(msg, AttributeType.AdditionalAddressFamily);
    if (
      requestedFamily === "invalid" ||
      additionalFamily === "invalid" ||
      (reservationToken !== undefined && evenPort !== undefined) ||
      (reservationToken !== undefined && reservationToken.length !== 8) ||
      (requestedFamily !== undefined && additionalFamily !== undefined) ||
      (reservationToken !== undefined &&
        (requestedFamily !== undefined || additionalFamily !== undefined)) ||
      additionalFamily === 4
    ) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const pin = pinOfUsername(auth.username);
    if (pin !== undefined && reservationToken !== undefined) {
      // The pinned port is the port: a RESERVATION-TOKEN names another one.
      reply.error(
        ErrorCode.BadRequest,
        undefined,
        "Bad Request: pinned credentials take no RESERVATION-TOKEN",
      );
      return;
    }
    if (pin?.port !== undefined && evenPort !== undefined) {
      // RFC 8656 §7.2: satisfy EVEN-PORT or refuse with 508. An even pinned port satisfies it
      // (coturn's uclient asks for one on every Allocate); the next port is never reserved, as
      // it may be another user's pin.
      const why =
        pin.port % 2 !== 0
          ? `pinned port ${pin.port} is odd`
          : evenPort.reserveNext
            ? "pinned credentials cannot reserve the next port"
            : undefined;
      if (why !== undefined) {
        reply.error(
          ErrorCode.InsufficientCapacity,
          undefined,
          `Insufficient Capacity: EVEN-PORT refused, ${why}`,
        );
        return;
      }
    }
    let families: (4 | 6)[];
    const familyErrors: { family: 4 | 6; code: number }[] = [];
    let reservation: Reservation | undefined;
    if (reservationToken !== undefined) {
      reservation = this.ports.reservation(reservationToken, now);
      if (reservation === undefined) {
        reply.error(ErrorCode.InsufficientCapacity);
        return;
      }
      families = [reservation.family];
    } else if (additionalFamily === 6) {
      // RFC 8656 §7.2: ADDITIONAL-ADDRESS-FAMILY asks for IPv4 plus IPv6.
      if (!this.options.relayAddresses.ip4) {
        reply.error(ErrorCode.AddressFamilyNotSupported);
        return;
      }
      // Without an IPv6 relay the IPv4 allocation still succeeds, and ADDRESS-ERROR-CODE 440
      // says why IPv6 is missing (RFC 8656 §7.2, §14.11).
      if (this.options.relayAddresses.ip6) families = [4, 6];
      else {
        families = [4];
        familyErrors.push({ family: 6, code: ErrorCode.AddressFamilyNotSupported });
      }
    } else {
      const family = requestedFamily ?? 4;
      if (!this.relayConfig(family)) {
        reply.error(ErrorCode.AddressFamilyNotSupported);
        return;
      }
      families = [family];
    }
    if (pin !== undefined && !this.takePinnedPort(pin.port, families, auth, reply, now)) return;
    // Quotas: RFC 8656 §7.2 486 per user (principal), 508 for the whole server. Taken here,
    // given back when the allocation is deleted (or below, if no port is free).
    const quota = this.quota.acquire(auth.principal);
    if (quota !== 0) {
      reply.error(
        quota === 486 ? ErrorCode.AllocationQuotaReached : ErrorCode.InsufficientCapacity,
      );
      return;
    }
    // Ports: the pinned one, from a reservation, an even port (with its partner reserved), or
    // any free one of the dynamic range.
    const ports: number[] = [];
    let newReservationToken: Uint8Array | undefined;
    if (pin?.port !== undefined) {
      for (const family of families) {
        this.ports.take(family, pin.port);
        ports.push(pin.port);
      }
    } else if (reservation !== undefined) {
      this.ports.redeem(reservationToken!);
      ports.push(reservation.port);
    } else {
      for (const family of families) {
        const port =
          evenPort !== undefined && family === families[0]
            ? this.ports.pickEven(family, evenPort.reserveNext)
            : this.ports.pick(family);
        if (port === undefined) {
          for (let i = 0; i < ports.length; i++) this.ports.release(families[i]!, ports[i]!);
          this.quota.release(auth.principal);
          reply.error(ErrorCode.InsufficientCapacity);
          return;
        }
        this.ports.take(family, port);
        ports.push(port);
      }
      if (evenPort?.reserveNext) {
        newReservationToken = new Uint8Array(8);
        this.options.random.fillBytes(newReservationToken);
        this.ports.reserve(
          newReservationToken,
          families[0]!,
          ports[0]! + 1,
          now + this.lifetimes.reservation * 1000,
        );
      }
    }
    const lifetime = this.desiredLifetime(readUint32(msg, AttributeType.Lifetime));
    const record = this.clientRecordFor(endpoint, client);
    const allocation = new Allocation(
      this.nextAllocationId++,
      record,
      auth.username,
      auth.principal,
      auth.key,
      now,
      lifetime * 1000,
      Uint8Array.from(msg.transactionId),
      relayProtocol,
    );
    allocation.reservationToken = newReservationToken;
    allocation.familyErrors.push(...familyErrors);
    if (pin?.port !== undefined) {
      allocation.pinnedPort = pin.port;
      for (const family of families) this.pinnedHolders.set(pinKey(family, pin.port), allocation);
    }
    this.pendingAllocates.set(allocation, reply);
    record.allocation = allocation;
    this.stats.allocationsActive++;
    this.liveAllocations.add(allocation);
    families.forEach((family, i) => {
      const config = this.relayConfig(family)!;
      const socket: RelaySocket = {
        id: this.nextRelayId++,
        family,
        protocol: relayProtocol,
        bindAddress: config.bind,
        advertisedAddress: config.advertised ?? config.bind,
        port: ports[i]!,
        attempts: 1,
        // Pinned, EVEN-PORT and RESERVATION-TOKEN ports are chosen for a reason: never moved on
        // retry.
        fixedPort:
          pin !== undefined || (i === 0 && (evenPort !== undefined || reservation !== undefined)),
        state: "binding",
        runtimeHandle: -1,
        allocation,
      };
      allocation.relays.push(socket);
      this.relays.set(socket.id, socket);
      this.openRelay(socket);
    });
    this.schedule(allocation);
  }

  /** When every relay socket has an answer, send the Allocate success (RFC 8656 §7.2). */
  private maybeCompleteAllocate(allocation: Allocation, now: number): void {
    if (allocation.state !== "binding") return;
    if (allocation.relays.some((r) => r.state === "binding")) return;
    const reply = this.pendingAllocates.get(allocation);
    this.pendingAllocates.delete(allocation);
    allocation.state = "active";
    this.stats.allocationsCreated++;
    const lifetimeSeconds = Math.round((allocation.expiresAt - now) / 1000);
    const bound = allocation.relays.filter((r) => r.state === "bound");
    if (reply) {
      allocation.allocateResponse = reply.success((b) => {
        for (const r of bound) {
          b.xorAddress(AttributeType.XorRelayedAddress, {
            family: r.family,
            address: r.advertisedAddress,
            port: r.port,
          });
        }
        for (const e of allocation.familyErrors) b.addressErrorCode(e.family, e.code);
        b.uint32(AttributeType.Lifetime, lifetimeSeconds);
        if (allocation.reservationToken) {
          b.bytes(AttributeType.ReservationToken, allocation.reservationToken);
        }
        b.xorAddress(AttributeType.XorMappedAddress, allocation.client);
      });
    }
    this.emit({
      type: "allocation-created",
      allocation: allocation.id,
      client: allocation.client,
      username: allocation.username,
      relayed: bound.map((r) => ({ family: r.family, address: r.advertisedAddress, port: r.port })),
      transport: allocation.requestedTransport,
      lifetimeSeconds,
    });
  }

  private sendAllocateFailure(allocation: Allocation, code: number, reason?: string): void {
    const reply = this.pendingAllocates.get(allocation);
    this.pendingAllocates.delete(allocation);
    reply?.error(code, undefined, reason);
  }

  /**
   * Pinned credentials get exactly their port, on every family asked for. Refused (403 with a
   * reason phrase saying which rule) when the port is not in the pinned range or another user
   * holds it. An allocation of the same user that holds it is stale (a tunnel that restarted
   * or lost its connection): it is released at once, so the newer one does not wait out the
   * old lifetime. Returns false when a reply was sent.
   */
  private takePinnedPort(
    port: number | undefined,
    families: readonly (4 | 6)[],
    auth: Authenticated,
    reply: Reply,
    now: number,
  ): boolean {
    if (port === undefined || !this.ports.isPinnable(port)) {
      const range = this.ports.pinned;
      const shown = port === undefined ? "in USERNAME" : String(port);
      reply.error(
        ErrorCode.Forbidden,
        undefined,
        range === undefined
          ? `Forbidden: pinned port ${shown} refused, this relay has no pinned port range`
          : `Forbidden: pinned port ${shown} is outside this relay's pinned range ${range.min}-${range.max}`,
      );
      return false;
    }
    const stale = new Set<Allocation>();
    for (const family of families) {
      const holder = this.pinnedHolders.get(pinKey(family, port));
      if (holder === undefined) continue;
      if (holder.principal !== auth.principal) {
        reply.error(
          ErrorCode.Forbidden,
          undefined,
          `Forbidden: pinned port ${port} is held by another user`,
        );
        return false;
      }
      stale.add(holder);
    }
    for (const holder of stale) this.deleteAllocation(holder, "taken-over", now);
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Refresh (RFC 8656 §7.3)

  private handleRefresh(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const family = readAddressFamily(msg, AttributeType.RequestedAddressFamily);
    if (family === "invalid") {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (family !== undefined && allocation.relayFor(family) === undefined) {
      reply.error(ErrorCode.PeerAddressFamilyMismatch);
      return;
    }
    const requested = readUint32(msg, AttributeType.Lifetime);
    if (requested === 0) {
      this.deleteAllocation(allocation, "deleted", now);
      reply.success((b) => b.uint32(AttributeType.Lifetime, 0));
      return;
    }
    const lifetime = this.desiredLifetime(requested);
    allocation.expiresAt = now + lifetime * 1000;
    this.schedule(allocation);
    reply.success((b) => b.uint32(AttributeType.Lifetime, lifetime));
  }

  /** RFC 8656 §7.2: min(requested, max), but never below the default. */
  private desiredLifetime(requested: number | undefined): number {
    const { defaultAllocation, maxAllocation } = this.lifetimes;
    if (requested === undefined) return defaultAllocation;
    return Math.max(defaultAllocation, Math.min(requested, maxAllocation));
  }

  // ---------------------------------------------------------------------------------------
  // CreatePermission (RFC 8656 §10)

  private handleCreatePermission(
    allocation: Allocation,
    msg: StunMessage,
    reply: Reply,
    now: number,
  ): void {
    const peers = readAllXorAddresses(msg, AttributeType.XorPeerAddress);
    if (peers.length === 0 || peers.some((p) => p === undefined)) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    // Check every address first: the request installs all permissions or none (§10.2).
    let added = 0;
    for (const peer of peers as TransportAddress[]) {
      if (allocation.relayFor(peer.family) === undefined) {
        reply.error(ErrorCode.PeerAddressFamilyMismatch);
        return;
      }
      if (this.policy.check(peer.address) !== undefined) {
        reply.error(ErrorCode.Forbidden);
        return;
      }
      if (this.findPermission(allocation, peer) === undefined) added++;
    }
    const limit = this.options.maxPermissionsPerAllocation ?? Number.POSITIVE_INFINITY;
    if (allocation.permissions.size + added > limit) {
      reply.error(ErrorCode.InsufficientCapacity);
      return;
    }
    for (const peer of peers as TransportAddress[]) this.installPermission(allocation, peer, now);
    this.schedule(allocation);
    reply.success();
  }

  private installPermission(
    allocation: Allocation,
    peer: TransportAddress,
    now: number,
  ): Permission {
    const expiresAt = now + this.lifetimes.permission * 1000;
    const existing = this.findPermission(allocation, peer);
    if (existing !== undefined) {
      existing.expiresAt = expiresAt;
      return existing;
    }
    const ip6 = peer.family === 6 ? ipv6Words(peer.address) : undefined;
    const ip4 = peer.family === 4 ? ipv4ToUint32(peer.address) : -1;
    const key = ip6 !== undefined ? this.keys.ip6(ip6) : ip4;
    const permission: Permission = {
      key,
      address: peer.address,
      family: peer.family,
      ip4,
      ip6,
      expiresAt,
    };
    allocation.permissions.set(key, permission);
    this.stats.permissionsActive++;
    // Bindings to this IP whose permission lapsed and was swept hold the old record: relink.
    for (const binding of allocation.channels.values()) {
      if (binding.permissionKey === key) binding.permission = permission;
    }
    return permission;
  }

  /** The permission for `peer`'s IP address (any port), live or not yet swept. */
  private findPermission(allocation: Allocation, peer: TransportAddress): Permission | undefined {
    if (peer.family === 4) return allocation.permissions.get(ipv4ToUint32(peer.address));
    const words = ipv6Words(peer.address);
    if (words === undefined) return undefined;
    const permission = allocation.permissions.get(this.keys.ip6(words));
    return permission !== undefined && sameWords(permission.ip6!, words) ? permission : undefined;
  }

  // ---------------------------------------------------------------------------------------
  // ChannelBind (RFC 8656 §11)

  private handleChannelBind(
    allocation: Allocation,
    msg: StunMessage,
    reply: Reply,
    now: number,
  ): void {
    const number = readChannelNumber(msg);
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    // Channels carry UDP (RFC 6062 §5: a TCP allocation relays over connections only), and a
    // peer transport address needs a port: 0 cannot be sent to.
    if (
      number === undefined ||
      number < MIN_CHANNEL ||
      number > MAX_CHANNEL ||
      peer === undefined ||
      peer.port === 0 ||
      allocation.requestedTransport !== "udp"
    ) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const relay = allocation.relayFor(peer.family);
    if (relay === undefined) {
      reply.error(ErrorCode.PeerAddressFamilyMismatch);
      return;
    }
    // With the port: the relay's own address is refused here outside the relay port range.
    if (this.policy.check(peer.address, peer.port, "udp") !== undefined) {
      reply.error(ErrorCode.Forbidden);
      return;
    }
    const peerIp6 = peer.family === 6 ? ipv6Words(peer.address) : undefined;
    const peerIp4 = peer.family === 4 ? ipv4ToUint32(peer.address) : -1;
    const peerKey =
      peerIp6 !== undefined
        ? this.keys.ip6Port(peerIp6, peer.port)
        : ip4PortKey(peerIp4, peer.port);
    const byNumber = allocation.channels.get(number);
    const byPeer = allocation.channelsByPeer.get(peerKey);
    // RFC 8656 §11.2: a number is bound to one peer, a peer to one number, including during the
    // cool-down after expiry (§12); rebinding the same pair refreshes it.
    if ((byNumber && byNumber.peerKey !== peerKey) || (byPeer && byPeer.number !== number)) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    // The binding (re)installs the peer's permission: that must fit the quota too, whether
    // the binding is new or refreshed after the permission lapsed.
    if (
      this.findPermission(allocation, peer) === undefined &&
      allocation.permissions.size >=
        (this.options.maxPermissionsPerAllocation ?? Number.POSITIVE_INFINITY)
    ) {
      reply.error(ErrorCode.InsufficientCapacity);
      return;
    }
    const expiresAt = now + this.lifetimes.channel * 1000;
    if (byNumber !== undefined) {
      if (byNumber.coolingUntil > 0) {
        byNumber.coolingUntil = 0;
        this.stats.channelsActive++;
      }
      byNumber.expiresAt = expiresAt;
    } else {
      const limit = this.options.maxChannelsPerAllocation ?? Number.POSITIVE_INFINITY;
      if (allocation.channels.size >= limit) {
        reply.error(ErrorCode.InsufficientCapacity);
        return;
      }
      const binding: ChannelBinding = {
        number,
        peer,
        peerKey,
        peerIp4,
        peerIp6,
        permissionKey: peerIp6 !== undefined ? this.keys.ip6(peerIp6) : peerIp4,
        // Set just below, by installPermission (the binding is in `channels` by then).
        permission: undefined as unknown as Permission,
        relay,
        expiresAt,
        coolingUntil: 0,
      };
      allocation.channels.set(number, binding);
      allocation.channelsByPeer.set(peerKey, binding);
      this.stats.channelsActive++;
    }
    // RFC 8656 §11.2: ChannelBind also installs or refreshes the permission for the peer IP.
    const permission = this.installPermission(allocation, peer, now);
    allocation.channels.get(number)!.permission = permission;
    this.schedule(allocation);
    reply.success();
  }

  // ---------------------------------------------------------------------------------------
  // Connect and ConnectionBind (RFC 6062 §5.2, §5.4)

  private handleConnect(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
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
    const permission = this.findPermission(allocation, peer);
    if (
      this.policy.check(peer.address, peer.port, "tcp") !== undefined ||
      permission === undefined ||
      permission.expiresAt <= now
    ) {
      reply.error(ErrorCode.Forbidden);
      return;
    }
    for (const c of allocation.tcpConnections) {
      if (c.peer.port === peer.port && c.peer.address === peer.address) {
        reply.error(ErrorCode.ConnectionAlreadyExists);
        return;
      }
    }
    if (allocation.tcpConnections.size >= this.maxTcpConnections()) {
      reply.error(ErrorCode.InsufficientCapacity);
      return;
    }
    const connection = this.newTcpConnection(allocation, peer, "connecting", now);
    this.pendingConnects.set(connection, reply);
    this.emit({
      type: "connect-peer",
      connectionId: connection.id,
      relay: relay.id,
      family: peer.family,
      address: peer.address,
      port: peer.port,
    });
  }

  private handleConnectionBind(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    auth: Authenticated,
    reply: Reply,
    _now: number,
  ): void {
    // A fresh TCP/TLS connection with no allocation of its own (RFC 6062 §5.4).
    if (endpoint.transport === "udp" || client === undefined || client.allocation !== undefined) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const id = readUint32(msg, AttributeType.ConnectionId);
    const connection = id === undefined ? undefined : this.tcpConnections.get(id);
    const space = this.options.connectionIds;
    if (connection === undefined && id !== undefined && space !== undefined && space.count > 1) {
      const owner = id % space.count;
      if (owner !== space.index) {
        // Another engine issued the id and holds the peer connection: the runtime hands this
        // data connection, ConnectionBind included, over to it, which answers (RFC 6062 §5.4).
        this.streamClients.delete(endpoint.connection);
        this.emit({ type: "hand-over-connection", connection: endpoint.connection, owner });
        return;
      }
    }
    // RFC 6062 §5.4: an invalid CONNECTION-ID gets 400. Someone else's is invalid for this
    // principal and gets the very same answer (counted apart): a distinct code would tell a
    // prober which ids exist.
    const owned = connection !== undefined && connection.allocation.principal === auth.principal;
    if (connection !== undefined && !owned) this.stats.authFailures["wrong-credentials"]++;
    if (!owned || connection.state !== "pending-bind") {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    connection.state = "bound";
    connection.dataConnection = endpoint.connection;
    this.dataConnections.set(endpoint.connection, connection);
    reply.success();
    this.emit({
      type: "bind-connection",
      connectionId: connection.id,
      connection: endpoint.connection,
    });
  }

  private newTcpConnection(
    allocation: Allocation,
    peer: TransportAddress,
    state: "connecting" | "pending-bind",
    now: number,
  ): TcpPeerConnection {
    let id = 0;
    const space = this.options.connectionIds;
    while (id === 0 || this.tcpConnections.has(id)) {
      id = this.options.random.nextUint32();
      // With several engines the id names its owner: id % count === index.
      if (space !== undefined && space.count > 1) {
        id = id - (id % space.count) + space.index;
        if (id > 0xffffffff) id -= space.count;
      }
    }
    const connection: TcpPeerConnection = {
      id,
      allocation,
      peer,
      state,
      expiresAt: now + TCP_CONNECTION_TIMEOUT_MS,
      dataConnection: -1,
    };
    this.tcpConnections.set(id, connection);
    allocation.tcpConnections.add(connection);
    this.schedule(allocation);
    return connection;
  }

  /** Close both sides of a TCP relay connection and forget it. */
  private closeTcpConnection(connection: TcpPeerConnection): void {
    if (connection.state === "bound") {
      this.emit({ type: "close-connection", connection: connection.dataConnection });
    }
    this.emit({ type: "close-peer-connection", connectionId: connection.id });
    const reply = this.pendingConnects.get(connection);
    this.pendingConnects.delete(connection);
    reply?.error(ErrorCode.ConnectionTimeoutOrFailure);
    this.forgetTcpConnection(connection);
  }

  private forgetTcpConnection(connection: TcpPeerConnection): void {
    this.tcpConnections.delete(connection.id);
    connection.allocation.tcpConnections.delete(connection);
    if (connection.dataConnection >= 0) this.dataConnections.delete(connection.dataConnection);
  }

  private maxTcpConnections(): number {
    return this.options.maxTcpConnectionsPerAllocation ?? 100;
  }

  // ---------------------------------------------------------------------------------------
  // Lifetimes

  private schedule(allocation: Allocation): void {
    const at = allocation.nextDeadline();
    if (at >= allocation.scheduledAt) return;
    // The later entry already in the heap is dead from now on (lazy deletion).
    if (allocation.scheduledAt !== Number.POSITIVE_INFINITY) this.noteStaleTimer();
    allocation.scheduledAt = at;
    allocation.timerGeneration++;
    this.timers.push(at, { allocation, generation: allocation.timerGeneration });
  }

  /**
   * Dead heap entries keep their allocation reachable until their deadline (up to an hour).
   * Under churn that would hold memory for every allocation of the last hour, so once dead
   * entries outnumber live allocations the heap is rebuilt from the live ones: O(live), and
   * amortised over at least as many deletions.
   */
  private noteStaleTimer(): void {
    if (++this.staleTimers <= Math.max(1024, 2 * this.liveAllocations.size)) return;
    this.timers.clear();
    for (const a of this.liveAllocations) {
      if (a.scheduledAt !== Number.POSITIVE_INFINITY) {
        this.timers.push(a.scheduledAt, { allocation: a, generation: a.timerGeneration });
      }
    }
    this.staleTimers = 0;
  }

  /** Expire what is due on one allocation, then schedule its next deadline. */
  private sweep(allocation: Allocation, now: number): void {
    if (allocation.expiresAt <= now) {
      // RFC 8656 §7: an allocation not refreshed in time is deleted with all it holds.
      this.deleteAllocation(allocation, "expired", now);
      return;
    }
    for (const [key, p] of allocation.permissions) {
      if (p.expiresAt <= now) {
        allocation.permissions.delete(key);
        this.stats.permissionsActive--;
      }
    }
    for (const [number, c] of allocation.channels) {
      if (c.coolingUntil > 0) {
        if (c.coolingUntil <= now) {
          allocation.channels.delete(number);
          allocation.channelsByPeer.delete(c.peerKey);
        }
      } else if (c.expiresAt <= now) {
        // RFC 8656 §12: the binding is gone, but neither side may be rebound to someone else
        // for 5 minutes, so late packets cannot reach the wrong peer.
        c.coolingUntil = c.expiresAt + this.lifetimes.channelCooldown * 1000;
        this.stats.channelsActive--;
        if (c.coolingUntil <= now) {
          allocation.channels.delete(number);
          allocation.channelsByPeer.delete(c.peerKey);
        }
      }
    }
    // RFC 6062 §5.2-§5.3: a dial or an unbound peer connection gets 30 s, then it is closed.
    for (const c of [...allocation.tcpConnections]) {
      if (c.state !== "bound" && c.expiresAt <= now) this.closeTcpConnection(c);
    }
    this.schedule(allocation);
  }

  private deleteAllocation(allocation: Allocation, reason: AllocationEndReason, now: number): void {
    if (allocation.deleted) return;
    allocation.deleted = true;
    this.liveAllocations.delete(allocation);
    if (allocation.scheduledAt !== Number.POSITIVE_INFINITY) this.noteStaleTimer();
    this.pendingAllocates.delete(allocation);
    allocation.timerGeneration++;
    for (const socket of allocation.relays) {
      // A failed socket's port was released when it failed and may belong to someone else now.
      if (socket.state !== "failed") this.releasePort(socket);
      if (this.relays.get(socket.id) === socket) {
        this.relays.delete(socket.id);
        this.emit({ type: "close-relay", relay: socket.id });
      }
    }
    if (allocation.state === "binding" && allocation.reservationToken) {
      // The Allocate never succeeded, so nobody learned its RESERVATION-TOKEN: release it.
      this.ports.cancel(allocation.reservationToken);
    }
    this.stats.permissionsActive -= allocation.permissions.size;
    for (const c of allocation.channels.values())
      if (c.coolingUntil === 0) this.stats.channelsActive--;
    for (const c of [...allocation.tcpConnections]) this.closeTcpConnection(c);
    allocation.permissions.clear();
    allocation.channels.clear();
    allocation.channelsByPeer.clear();
    const client = allocation.client as ClientRecord;
    if (client.allocation === allocation) client.allocation = undefined;
    if (client.transport === "udp") this.udpClients[client.listener]?.delete(client.key);
    this.quota.release(allocation.principal);
    this.stats.allocationsActive--;
    if (allocation.state === "active") {
      this.emit({
        type: "allocation-ended",
        allocation: allocation.id,
        client: allocation.client,
        reason,
        transport: allocation.requestedTransport,
        families: allocation.relays.filter((r) => r.state === "bound").map((r) => r.family),
        lifetimeSeconds: Math.max(0, (now - allocation.createdAt) / 1000),
      });
    }
  }

  // ---------------------------------------------------------------------------------------
  // Relay ports

  private relayConfig(family: 4 | 6): RelayAddressConfig | undefined {
    return family === 4 ? this.options.relayAddresses.ip4 : this.options.relayAddresses.ip6;
  }

  private openRelay(socket: RelaySocket): void {
    this.emit({
      type: "open-relay",
      relay: socket.id,
      family: socket.family,
      protocol: socket.protocol,
      bindAddress: socket.bindAddress,
      port: socket.port,
      pinnedFor:
        socket.allocation.pinnedPort === socket.port ? socket.allocation.principal : undefined,
    });
  }

  /**
   * Another engine of the same relay takes pinned `port` over for `principal` (the relay's
   * workers; takePinnedPort does the same within one engine): this engine's allocation holding
   * it for that principal ends at once ("taken-over"). "other": another principal holds it
   * here, which the caller must refuse; "none": not held here.
   */
  releasePinnedPort(
    family: 4 | 6,
    port: number,
    principal: string,
    now: number,
  ): "released" | "other" | "none" {
    const holder = this.pinnedHolders.get(pinKey(family, port));
    if (holder === undefined) return "none";
    if (holder.principal !== principal) return "other";
    this.deleteAllocation(holder, "taken-over", now);
    return "released";
  }

  /** Give a relay socket's port back (and its pin, if this allocation held one). */
  private releasePort(socket: RelaySocket): void {
    this.ports.release(socket.family, socket.port);
    const key = pinKey(socket.family, socket.port);
    if (this.pinnedHolders.get(key) === socket.allocation) this.pinnedHolders.delete(key);
  }

  // ---------------------------------------------------------------------------------------
  // Sending

  private clientRecordFor(endpoint: ClientEndpoint, known: ClientRecord | undefined): ClientRecord {
    if (known !== undefined) return known;
    if (endpoint.transport !== "udp") return this.streamClients.get(endpoint.connection)!;
    const record: ClientRecord = {
      ...endpoint,
      key:
        endpoint.ip6 !== undefined
          ? this.keys.ip6Port(endpoint.ip6, endpoint.port)
          : ip4PortKey(endpoint.ip4, endpoint.port),
      allocation: undefined,
    };
    let byListener = this.udpClients[endpoint.listener];
    if (byListener === undefined) {
      byListener = new Map();
      this.udpClients[endpoint.listener] = byListener;
    }
    byListener.set(record.key, record);
    return record;
  }

  /** @internal used by Reply */
  builder(method: number, cls: MessageClass, transactionId: Uint8Array): StunMessageBuilder {
    const b = new StunMessageBuilder(method, cls, transactionId);
    if (this.options.software !== undefined)
      b.string(AttributeType.Software, this.options.software);
    return b;
  }

  /** @internal Finish with integrity (when authenticated) and FINGERPRINT, then queue it. */
  finishAndSend(
    endpoint: ClientEndpoint,
    b: StunMessageBuilder,
    auth: Authenticated | undefined,
    method: number,
    errorCode: number,
  ): Uint8Array {
    if (auth !== undefined) {
      if (auth.sha256) b.messageIntegritySha256(auth.key);
      else b.messageIntegrity(auth.key);
    } else if (!this.unauthenticatedLimiter.allow(endpoint.address, this.lastNow)) {
      // An unauthenticated answer over this source's budget: no amplification (rate-limit.ts).
      this.drop("rate-limited");
      return EMPTY_BYTES;
    }
    const data = b.fingerprint().build();
    this.sendRaw(
      endpoint,
      data,
      method,
      errorCode === 0 ? MessageClass.SuccessResponse : MessageClass.ErrorResponse,
      errorCode,
    );
    return data;
  }

  /** @internal */
  remember(cacheKey: string, data: Uint8Array, errorCode: number, now: number): void {
    if (this.responseCache.size >= RESPONSE_CACHE_ENTRIES) {
      const oldest = this.responseCache.keys().next();
      if (!oldest.done) this.responseCache.delete(oldest.value);
    }
    this.responseCache.set(cacheKey, {
      data,
      messageClass: errorCode === 0 ? MessageClass.SuccessResponse : MessageClass.ErrorResponse,
      errorCode,
      expiresAt: now + this.lifetimes.responseCache * 1000,
    });
  }

  private respondError(
    endpoint: ClientEndpoint,
    method: number,
    transactionId: Uint8Array,
    code: number,
  ): void {
    const b = this.builder(method, MessageClass.ErrorResponse, transactionId).errorCode(code);
    this.finishAndSend(endpoint, b, undefined, method, code);
  }

  private sendRaw(
    client: ClientEndpoint,
    data: Uint8Array,
    method: number,
    messageClass: number,
    errorCode: number,
  ): void {
    this.emit({ type: "send-to-client", client, data, method, messageClass, errorCode });
  }

  private emit(command: Command): void {
    this.commands.push(command);
  }

  private drop(reason: DropReason): typeof RouteKind.None {
    this.stats.drops[reason]++;
    return RouteKind.None;
  }
}

/**
 * A response to one authenticated request: signs with the request's key, caches for
 * retransmissions, and can be completed later (Allocate waits for the relay port).
 */
class Reply {
  private readonly msg: { readonly method: number; readonly transactionId: Uint8Array };

  constructor(
    private readonly server: TurnServer,
    private readonly endpoint: ClientEndpoint,
    msg: StunMessage,
    private readonly auth: Authenticated,
    private readonly cacheKey: string,
    private readonly now: number,
  ) {
    // A reply may be sent after this input returns (a relay port that binds later, an RFC 6062
    // dial): keep a copy of the transaction id, not a view into bytes the runtime reuses (a
    // batched receive arena).
    this.msg = { method: msg.method, transactionId: Uint8Array.from(msg.transactionId) };
  }

  success(fill?: (b: StunMessageBuilder) => void): Uint8Array {
    const b = this.server.builder(
      this.msg.method,
      MessageClass.SuccessResponse,
      this.msg.transactionId,
    );
    fill?.(b);
    const data = this.server.finishAndSend(this.endpoint, b, this.auth, this.msg.method, 0);
    this.server.remember(this.cacheKey, data, 0, this.now);
    return data;
  }

  /** An error response; `reason` replaces the standard reason phrase (RFC 8489 §14.8). */
  error(code: number, fill?: (b: StunMessageBuilder) => void, reason?: string): Uint8Array {
    const b = this.server
      .builder(this.msg.method, MessageClass.ErrorResponse, this.msg.transactionId)
      .errorCode(code, reason);
    fill?.(b);
    const data = this.server.finishAndSend(this.endpoint, b, this.auth, this.msg.method, code);
    this.server.remember(this.cacheKey, data, code, this.now);
    return data;
  }
}

function isTurnRequestMethod(method: number): boolean {
  return (
    method === Method.Allocate ||
    method === Method.Refresh ||
    method === Method.CreatePermission ||
    method === Method.ChannelBind ||
    method === Method.Connect ||
    method === Method.ConnectionBind
  );
}

/** A UDP client 5-tuple not seen before (its text form is built here, on the control path). */
function udpEndpoint(listener: number, from: DatagramSource): ClientEndpoint {
  return {
    transport: "udp",
    listener,
    connection: -1,
    family: from.family,
    address: from.text(),
    port: from.port,
    ip4: from.family === 4 ? from.ip4 : -1,
    ip6: from.family === 6 ? Uint32Array.from(from.ip6) : undefined,
  };
}

function pinKey(family: 4 | 6, port: number): number {
  return family * 65536 + port;
}

function responseCacheKey(endpoint: ClientEndpoint, transactionId: Uint8Array): string {
  const tid = bytesKey(transactionId);
  return `${endpoint.transport}|${endpoint.listener}|${endpoint.connection}|${endpoint.address}|${endpoint.port}|${tid}`;
}

/**
 * Nonces are bound to the client's IP address, not its port: RFC 6062 §5.4 data connections
 * come from new ports and reuse the control connection's nonce (coturn's uclient does), and a
 * NAT rebinding a UDP port should not cost a round trip. A nonce still can't travel to others.
 */
function nonceBinding(endpoint: ClientEndpoint): string {
  return endpoint.address;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** PASSWORD-ALGORITHMS value we offer: MD5 and SHA-256, no parameters (RFC 8489 §14.11). */
const OFFERED_PASSWORD_ALGORITHMS = Uint8Array.of(0, 1, 0, 0, 0, 2, 0, 0);
