/**
 * The TURN server state machine (RFC 8656 over RFC 8489): sans-IO. Bytes, addresses and `now`
 * go in; outputs, a next timeout and data-path routes come out. See README.md for the call
 * order the runtime follows.
 *
 * This file is the dispatcher: the runtime's inputs, and each request method to the module
 * that implements it.
 *
 *   data-path.ts       ChannelData, Send and Data indications (RFC 8656 §11, §12.4)
 *   authentication.ts  long-term credentials, nonces, PASSWORD-ALGORITHMS (RFC 8489 §9.2)
 *   responses.ts       signing, the unauthenticated rate cap, retransmissions (RFC 8489 §6.3.1)
 *   allocations.ts     Allocate, relay sockets, deletion and expiry (RFC 8656 §7)
 *   allocation.ts      one allocation's lifetime, permissions and channels (§7, §9, §11, §12)
 *   tcp-relay.ts       Connect, ConnectionAttempt, ConnectionBind (RFC 6062)
 *   bandwidth.ts       token buckets on relayed bytes, per allocation and per user
 *   deadlines.ts       when each allocation next needs attention
 */

import type { CredentialStore } from "../auth/credentials.js";
import type { TransportAddress } from "../codec/address.js";
import {
  AttributeType,
  ErrorCode,
  MAX_CHANNEL,
  MAX_LEGACY_CHANNEL,
  MessageClass,
  Method,
  MIN_CHANNEL,
} from "../codec/constants.js";
import {
  decodeStun,
  readAddressFamily,
  readAllXorAddresses,
  readChannelNumber,
  readUint32,
  readXorAddress,
  type StunMessage,
} from "../codec/message.js";
import type { AllocationId, ConnectionId, ListenerId, PeerConnectionId, RelayId } from "../ids.js";
import { OutputQueue } from "../output-queue.js";
import { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import {
  type Allocation,
  type AllocationRules,
  type ClientEndpoint,
  type ClientRecord,
  type ClientTransport,
  desiredLifetime,
} from "./allocation.js";
import { LocalAllocationQuota } from "./allocation-quota.js";
import { Allocations } from "./allocations.js";
import { Authenticator } from "./authentication.js";
import { type BandwidthLimit, BandwidthLimits } from "./bandwidth.js";
import { ChannelOffload } from "./channel-offload.js";
import { DataPath, udpEndpoint } from "./data-path.js";
import { AddressKeys, DatagramSource } from "./datagram-source.js";
import { Deadlines } from "./deadlines.js";
import { DEFAULT_LIFETIMES, type Lifetimes, type TurnServerOptions } from "./options.js";
import { LocalPinnedPortOwners } from "./pinned-port-owners.js";
import { SourceRateLimiter } from "./rate-limit.js";
import { RelayPortPool } from "./relay-port-pool.js";
import { Reply, Responder, ResponseCache } from "./responses.js";
import { createServerStats, type DropReason, type ServerStats } from "./stats.js";
import { TcpRelay } from "./tcp-relay.js";
import { type AllocationInfo, type Route, RouteKind, type TurnServerOutput } from "./types.js";

export class TurnServer {
  readonly stats: ServerStats = createServerStats();
  /** The routing decision of the last data-path call; see RouteKind. */
  readonly route: Route;

  readonly #outputs = new OutputQueue<TurnServerOutput>();
  readonly #lifetimes: Lifetimes;
  readonly #policy: PeerAddressPolicy;
  readonly #maxChannel: number;
  readonly #data: DataPath;
  readonly #responder: Responder;
  readonly #responses: ResponseCache;
  readonly #auth: Authenticator;
  readonly #allocations: Allocations;
  readonly #deadlines = new Deadlines<Allocation>();
  readonly #tcp: TcpRelay;
  /** Channel offload outputs (options.channelOffload), else undefined: no work at all. */
  readonly #offload: ChannelOffload | undefined;
  /** The source of string-addressed input (handleUdpClient, handlePeerData), reused. */
  readonly #textSource = new DatagramSource();
  readonly #bandwidth: BandwidthLimits;

  constructor(options: TurnServerOptions) {
    if (!options.relayAddresses.ip4 && !options.relayAddresses.ip6) {
      throw new Error("TurnServer needs at least one relay address family");
    }
    const stats = this.stats;
    this.#bandwidth = new BandwidthLimits(options);
    const lifetimes = { ...DEFAULT_LIFETIMES, ...options.lifetimes };
    this.#lifetimes = lifetimes;
    this.#policy = options.peerPolicy ?? new PeerAddressPolicy();
    this.#maxChannel = options.legacyChannelNumbers ? MAX_LEGACY_CHANNEL : MAX_CHANNEL;
    const secret = options.secret ?? new Uint8Array(32);
    if (options.secret === undefined) options.random.fillBytes(secret);
    const emit = (output: TurnServerOutput) => {
      this.#outputs.push(output);
    };
    this.#offload = options.channelOffload ? new ChannelOffload(emit) : undefined;
    const keys = new AddressKeys(secret);
    this.#data = new DataPath(keys, stats, options.random, this.#policy);
    this.route = this.#data.route;
    this.#responder = new Responder(
      emit,
      options.software,
      options.unauthenticatedLimiter ??
        new SourceRateLimiter(options.maxUnauthenticatedRate ?? 200),
      stats,
    );
    this.#responses = new ResponseCache(lifetimes.responseCache);
    this.#auth = new Authenticator(
      {
        realm: options.realm,
        credentials: options.credentials,
        secret,
        nonceLifetimeSeconds: lifetimes.nonce,
        unixTimeOffsetMs: options.unixTimeOffsetMs ?? 0,
        revokedUsers: options.revokedUsers ?? [],
      },
      this.#responder,
      stats,
    );
    const deadlines = this.#deadlines;
    this.#tcp = new TcpRelay(
      {
        random: options.random,
        policy: this.#policy,
        maxPerAllocation: options.maxTcpConnectionsPerAllocation ?? 100,
        connectionIds: options.connectionIds,
      },
      emit,
      this.#responder,
      stats,
      deadlines,
      this.#data,
    );
    const rules: AllocationRules = {
      keys,
      stats,
      lifetimes,
      maxPermissions: options.maxPermissionsPerAllocation ?? Number.POSITIVE_INFINITY,
      maxChannels: options.maxChannelsPerAllocation ?? Number.POSITIVE_INFINITY,
    };
    this.#allocations = new Allocations(
      {
        relayAddresses: options.relayAddresses,
        ports: new RelayPortPool({
          dynamic: { min: options.minPort ?? 49152, max: options.maxPort ?? 65535 },
          pinned: options.pinnedPorts,
          random: options.random,
        }),
        quota:
          options.allocationQuota ??
          new LocalAllocationQuota(options.maxAllocations, options.maxAllocationsPerUser),
        pinnedOwners: options.pinnedPortOwners ?? new LocalPinnedPortOwners(),
        reservations: options.reservationExchange,
        random: options.random,
        lifetimes,
        alternateServer: options.alternateServer,
        offload: this.#offload,
        bandwidth: this.#bandwidth,
      },
      rules,
      emit,
      this.#responder,
      stats,
      this.#data,
      deadlines,
      this.#tcp,
    );
  }

  // ---------------------------------------------------------------------------------------
  // Inputs: client traffic

  /**
   * A datagram from a client on UDP listener `listener`, addressed as text (as node:dgram
   * reports it). Returns the data-path route (see `route`); control messages queue outputs.
   * `handleClientDatagram` is the same without strings or views per packet.
   */
  handleUdpClient(
    listener: ListenerId,
    data: Uint8Array,
    address: string,
    port: number,
    now: number,
  ): RouteKind {
    if (!this.#textSource.setText(address, port)) return this.#drop("unsupported-source");
    return this.handleClientDatagram(listener, data, 0, data.length, this.#textSource, now);
  }

  /**
   * A datagram `buf[start..end)` from client `from` on UDP listener `listener` (the batched
   * data path: `from` is reused by the caller, `buf` may be a whole receive arena). Returns the
   * data-path route; its byte range refers to `buf`.
   */
  handleClientDatagram(
    listener: ListenerId,
    buf: Uint8Array,
    start: number,
    end: number,
    from: DatagramSource,
    now: number,
  ): RouteKind {
    if (from.port === 0) return this.#drop("port-zero");
    const first = end > start ? buf[start]! & 0xc0 : 0xc0;
    const known = this.#data.udpClient(listener, from);
    if (first === 0x40) {
      if (known === undefined) return this.#drop("no-allocation");
      return this.#data.channelData(known, buf, start, end, now);
    }
    if (first !== 0) return this.#drop("not-stun");
    // A scoped IPv6 source ("fe80::1%eth0") cannot be written into XOR-MAPPED-ADDRESS, and
    // link-local clients have no business with a relay.
    if (from.scoped) return this.#drop("unsupported-source");
    const endpoint = known ?? udpEndpoint(listener, from);
    const data = start === 0 && end === buf.length ? buf : buf.subarray(start, end);
    return this.#handleStun(endpoint, known, data, now);
  }

  /** A TCP or TLS client connection was accepted (RFC 8656 §3.1: allocations live on it). */
  handleConnectionOpened(
    connection: ConnectionId,
    listener: ListenerId,
    transport: Exclude<ClientTransport, "udp">,
    address: string,
    port: number,
  ): void {
    this.#data.openStream(connection, listener, transport, address, port);
  }

  /** One frame (cut by StreamFramer) from a TCP/TLS client connection. */
  handleStreamClient(connection: ConnectionId, frame: Uint8Array, now: number): RouteKind {
    const client = this.#data.streamClient(connection);
    if (client === undefined) return this.#drop("unknown-connection");
    const first = frame.length > 0 ? frame[0]! & 0xc0 : 0xc0;
    if (first === 0x40) return this.#data.channelData(client, frame, 0, frame.length, now);
    if (first !== 0) return this.#drop("not-stun");
    return this.#handleStun(client, client, frame, now);
  }

  /** The connection closed: RFC 8656 §3.1 ties the allocation's life to it. */
  handleConnectionClosed(connection: ConnectionId, now: number): void {
    this.#tcp.dataConnectionClosed(connection);
    const client = this.#data.closeStream(connection);
    if (client?.allocation) this.#allocations.delete(client.allocation, "connection-closed", now);
  }

  // ---------------------------------------------------------------------------------------
  // Inputs: peer traffic and the runtime's feedback

  /** A datagram from a peer on relay socket `relay`, addressed as text (see handlePeerDatagram). */
  handlePeerData(
    relay: RelayId,
    data: Uint8Array,
    address: string,
    port: number,
    now: number,
  ): RouteKind {
    if (!this.#textSource.setText(address, port)) return this.#drop("family-mismatch");
    return this.#data.peerDatagram(relay, data, 0, data.length, this.#textSource, now);
  }

  /**
   * A datagram `buf[start..end)` from peer `from` arriving on relay socket `relay` (RFC 8656
   * §11.3, §12.4); the route's byte range refers to `buf`.
   */
  handlePeerDatagram(
    relay: RelayId,
    buf: Uint8Array,
    start: number,
    end: number,
    from: DatagramSource,
    now: number,
  ): RouteKind {
    return this.#data.peerDatagram(relay, buf, start, end, from, now);
  }

  /**
   * The runtime bound relay socket `relay` (answer to an "open-relay" output). `handle` comes
   * back in routes as `route.relayHandle`.
   */
  handleRelayBound(relay: RelayId, now: number, handle = -1): void {
    this.#allocations.relayBound(relay, now, handle);
  }

  /** The runtime could not bind relay socket `relay`: another port is tried (bounded), else 508. */
  handleRelayBindFailed(relay: RelayId, now: number): void {
    this.#allocations.relayBindFailed(relay, now);
  }

  /**
   * A peer connected to the TCP relayed address of relay socket `relay` (RFC 6062 §5.3).
   * Returns the CONNECTION-ID under which the runtime holds the (paused) socket, or undefined
   * when the runtime must close it: no allocation, or no permission for the peer's IP.
   */
  handlePeerConnectionAccepted(
    relay: RelayId,
    address: string,
    port: number,
    now: number,
  ): PeerConnectionId | undefined {
    return this.#tcp.peerConnectionAccepted(relay, address, port, now);
  }

  /** The runtime's dial for a Connect request succeeded (RFC 6062 §5.2). */
  handlePeerConnected(peerConnection: PeerConnectionId, now: number): void {
    this.#tcp.peerConnected(peerConnection, now);
  }

  /** The dial failed or was refused: 447 (RFC 6062 §5.2). */
  handlePeerConnectFailed(peerConnection: PeerConnectionId, _now: number): void {
    this.#tcp.peerConnectFailed(peerConnection);
  }

  /**
   * `bytes` moved through the RFC 6062 pipe of `peerConnection` (either way, after its
   * bind-connection): charged to its allocation's and its user's bandwidth buckets. Returns the
   * ms to pause reading both sides of the pipe before going on (0: go on at once), so a pipe is
   * slowed to the limit, never cut (a byte stream cannot drop bytes). Call it per chunk moved.
   */
  chargeConnectionBytes(peerConnection: PeerConnectionId, bytes: number, now: number): number {
    return this.#tcp.charge(peerConnection, bytes, now);
  }

  /** The peer side of a TCP relay connection closed (RFC 6062 §5.5). */
  handlePeerConnectionClosed(peerConnection: PeerConnectionId, _now: number): void {
    this.#tcp.peerConnectionClosed(peerConnection);
  }

  /** Lifetimes: expire allocations, permissions and channels due at or before `now`. */
  handleTimeout(now: number): void {
    this.#allocations.expire(now);
  }

  // ---------------------------------------------------------------------------------------
  // Inputs: operations

  /** Stop granting allocations (SIGTERM): 300 with ALTERNATE-SERVER if configured, else 508. */
  startDraining(): void {
    this.#allocations.draining = true;
  }

  /** Delete every allocation (shutdown): queues close-relay for each relay socket. */
  closeAll(now: number): void {
    this.#allocations.closeAll(now);
  }

  /**
   * The revocation list: from now on every request with credentials of the principals it names
   * gets 403, and their live allocations end at once ("revoked"). Entries: "static:NAME",
   * "rest:USER" (pinned credentials of USER included), "rest:USER;port=P", "rest-expiry:E",
   * or a plain NAME for all of static:NAME, rest:NAME and rest-expiry:NAME (auth/revocation.ts,
   * README.md "Revocation"). Returns how many allocations ended.
   */
  setRevokedUsers(entries: Iterable<string>, now: number): number {
    this.#auth.setRevokedUsers(entries);
    if (!this.#auth.hasRevokedUsers) return 0;
    return this.#allocations.revoke((principal) => this.#auth.isRevoked(principal), now);
  }

  /**
   * Replace the credential store (a reload: new shared secrets, new static users). Requests are
   * checked against it from now on; live allocations stay (RFC 8656 authenticates requests, not
   * allocations) and end at their lifetime unless refreshed with credentials the new store
   * accepts. Nonces are the server's own and stay valid; a retransmission of a request answered
   * before gets the same answer again (RFC 8489 §6.3.1). `SharedSecretCredentials.setSecrets`
   * does the same for the secrets of a store in place.
   */
  setCredentials(credentials: CredentialStore): void {
    this.#auth.setCredentials(credentials);
  }

  /** Track wall-clock jumps: TURN REST usernames expire on the Unix clock. */
  setUnixTimeOffset(offsetMs: number): void {
    this.#auth.setUnixTimeOffset(offsetMs);
  }

  /**
   * Another engine took this engine's reservation `token` (its "reservation-taken" output,
   * engines sharing `reservationExchange`): the reserved port is no longer held here, and the
   * reservation no longer counted (its quota count moved with it).
   */
  handleReservationTaken(token: Uint8Array): void {
    this.#allocations.reservationTaken(token);
  }

  /**
   * The answer to another engine's "release-pinned-port" output (engines sharing
   * `pinnedPortOwners`): that engine took pinned `port` on `family` over for `principal`, and
   * this engine's `allocation` held it. It ends at once ("taken-over") if it still holds the
   * port: "released"; else "none" (ended meanwhile, or a newer claim here holds it).
   */
  releasePinnedPort(
    family: 4 | 6,
    port: number,
    allocation: AllocationId,
    principal: string,
    now: number,
  ): "released" | "none" {
    return this.#allocations.releasePinnedPort(family, port, allocation, principal, now);
  }

  // ---------------------------------------------------------------------------------------
  // Outputs

  /** The next output, in the order they were queued; undefined once all are drained. */
  pollOutput(): TurnServerOutput | undefined {
    return this.#outputs.poll();
  }

  /** The next instant `handleTimeout` has work, or undefined when nothing is scheduled. */
  pollTimeout(): number | undefined {
    return this.#allocations.nextTimeout();
  }

  /**
   * Every allocation that has its relayed address (Allocate answered), for discovery: who holds
   * which relayed address, from where, for which peers. No secret is in it. O(allocations):
   * for an operator's request, never the data path.
   */
  allocations(now: number): AllocationInfo[] {
    return this.#allocations.describe(now);
  }

  /**
   * The bandwidth limits in force (options maxBytesPerSecond, maxBytesPerSecondPerUser): rate and
   * burst of each allocation's bucket and each user's; undefined where there is none.
   */
  get bandwidthLimits(): {
    readonly perAllocation: BandwidthLimit | undefined;
    readonly perUser: BandwidthLimit | undefined;
  } {
    return { perAllocation: this.#bandwidth.perAllocation, perUser: this.#bandwidth.perUser };
  }

  /** Live allocation count (what quotas and readiness look at). */
  get allocationCount(): number {
    return this.stats.allocationsActive;
  }

  get isDraining(): boolean {
    return this.#allocations.draining;
  }

  // ---------------------------------------------------------------------------------------
  // STUN messages from clients (RFC 8489 §6.3)

  #handleStun(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    data: Uint8Array,
    now: number,
  ): RouteKind {
    // A scoped IPv6 source ("fe80::1%eth0", as Node reports link-local senders) cannot be
    // written into XOR-MAPPED-ADDRESS, and link-local clients have no business with a relay.
    if (endpoint.address.includes("%")) return this.#drop("unsupported-source");
    const decoded = decodeStun(data);
    if (!decoded.ok) {
      this.#drop("malformed");
      // RFC 8489 §6.3: a request we can parse the header of gets a 400 rather than silence.
      const header = decoded.header;
      if (
        header &&
        header.messageClass === MessageClass.Request &&
        decoded.error === "bad-length"
      ) {
        this.#responder.error(
          endpoint,
          header.method,
          header.transactionId,
          ErrorCode.BadRequest,
          now,
        );
      }
      return RouteKind.None;
    }
    const msg = decoded.message;
    if (msg.messageClass === MessageClass.Request) {
      this.#handleRequest(endpoint, client, msg, now);
      return RouteKind.None;
    }
    if (msg.messageClass === MessageClass.Indication) {
      if (msg.method === Method.Send) return this.#data.send(client, msg, now);
      // A Binding indication is a keep-alive (RFC 8489 §3): nothing to do.
      if (msg.method === Method.Binding) return RouteKind.None;
    }
    return this.#drop("unexpected-message");
  }

  /** A request: Binding, or a TURN method from an authenticated client (RFC 8656 §4). */
  #handleRequest(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    now: number,
  ): void {
    if (msg.method === Method.Binding) {
      this.#handleBinding(endpoint, msg, now);
      return;
    }
    if (!isTurnRequestMethod(msg.method)) {
      this.#responder.error(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest, now);
      return;
    }
    // RFC 8656 §7: what has expired by `now` is gone at `now`, even when the runtime's timer
    // fires late. Catch up first, so a lapsed allocation gets 437, not a Refresh back to life.
    this.handleTimeout(now);
    if (client !== undefined && client.transport === "udp" && client.allocation === undefined) {
      client = undefined; // its record left the UDP client table with the allocation
    }
    // RFC 8489 §6.3.1 / RFC 8656 §7.2: a retransmission gets the very same response.
    const cacheKey = ResponseCache.key(endpoint, msg.transactionId);
    const cached = this.#responses.get(cacheKey, now);
    if (cached !== undefined) {
      this.#responder.transmit(
        endpoint,
        cached.data,
        msg.method,
        cached.messageClass,
        cached.errorCode,
      );
      return;
    }
    const auth = this.#auth.authenticate(endpoint, msg, now);
    if (auth === undefined) return;
    const reply = new Reply(this.#responder, this.#responses, endpoint, msg, auth, cacheKey, now);
    if (this.#auth.refusesRevoked(auth)) {
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
    switch (msg.method) {
      case Method.Allocate:
        this.#allocations.allocate(endpoint, client, msg, auth, reply, now);
        return;
      case Method.ConnectionBind:
        this.#tcp.connectionBind(endpoint, client, msg, auth, reply);
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
        this.#handleRefresh(allocation, msg, reply, now);
        return;
      case Method.CreatePermission:
        this.#handleCreatePermission(allocation, msg, reply, now);
        return;
      case Method.ChannelBind:
        this.#handleChannelBind(allocation, msg, reply, now);
        return;
      case Method.Connect:
        this.#tcp.connect(allocation, msg, reply, now);
        return;
      default:
        reply.error(ErrorCode.BadRequest);
    }
  }

  /** RFC 8489 §7.3.1: the reflexive transport address, and nothing else to remember. */
  #handleBinding(endpoint: ClientEndpoint, msg: StunMessage, now: number): void {
    const responder = this.#responder;
    if (msg.unknownRequired.length > 0) {
      const b = responder
        .builder(Method.Binding, MessageClass.ErrorResponse, msg.transactionId)
        .errorCode(ErrorCode.UnknownAttribute)
        .unknownAttributes(msg.unknownRequired);
      responder.send(endpoint, b, undefined, Method.Binding, ErrorCode.UnknownAttribute, now);
      return;
    }
    const b = responder
      .builder(Method.Binding, MessageClass.SuccessResponse, msg.transactionId)
      .xorAddress(AttributeType.XorMappedAddress, endpoint);
    responder.send(endpoint, b, undefined, Method.Binding, 0, now);
  }

  /**
   * RFC 8656 §7.3: Refresh, or delete with LIFETIME 0. The families of a dual allocation share
   * one lifetime here, so a Refresh naming one family with a non-zero LIFETIME refreshes both.
   */
  #handleRefresh(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
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
      // RFC 8656 §7.1, §7.3: with REQUESTED-ADDRESS-FAMILY the request applies to that
      // family only: one relayed address of a dual allocation goes, the other stays.
      if (family !== undefined) this.#allocations.deleteFamily(allocation, family, now);
      else this.#allocations.delete(allocation, "deleted", now);
      reply.success((b) => b.uint32(AttributeType.Lifetime, 0));
      return;
    }
    const lifetime = desiredLifetime(requested, this.#lifetimes);
    allocation.refresh(lifetime, now);
    this.#deadlines.schedule(allocation);
    // Every offloaded channel of it may have a new deadline: queued before the answer.
    this.#offload?.sync(allocation, now);
    reply.success((b) => b.uint32(AttributeType.Lifetime, lifetime));
  }

  /** RFC 8656 §10: CreatePermission, for every XOR-PEER-ADDRESS or for none. */
  #handleCreatePermission(
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
    for (const peer of peers as TransportAddress[]) {
      if (allocation.relayFor(peer.family) === undefined) {
        reply.error(ErrorCode.PeerAddressFamilyMismatch);
        return;
      }
      if (this.#policy.check(peer.address) !== undefined) {
        reply.error(ErrorCode.Forbidden);
        return;
      }
    }
    if (!allocation.installPermissions(peers as TransportAddress[], now)) {
      reply.error(ErrorCode.InsufficientCapacity);
      return;
    }
    this.#deadlines.schedule(allocation);
    // Channels to these peers get a later deadline, or are usable again (§9: a permission
    // that had lapsed).
    this.#offload?.sync(allocation, now);
    reply.success();
  }

  /** RFC 8656 §11.2: ChannelBind (which installs the peer's permission too). */
  #handleChannelBind(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const number = readChannelNumber(msg);
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    // Channels carry UDP (RFC 6062 §5: a TCP allocation relays over connections only), and a
    // peer transport address needs a port: 0 cannot be sent to.
    if (
      number === undefined ||
      number < MIN_CHANNEL ||
      number > this.#maxChannel ||
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
    if (this.#policy.check(peer.address, peer.port, "udp") !== undefined) {
      reply.error(ErrorCode.Forbidden);
      return;
    }
    const code = allocation.bindChannel(number, peer, relay, now);
    if (code !== 0) {
      reply.error(code);
      return;
    }
    this.#deadlines.schedule(allocation);
    // The entry is queued before the success: a runtime that carries out outputs in order has
    // it in place before the client can send ChannelData on the answer.
    this.#offload?.sync(allocation, now);
    reply.success();
  }

  #drop(reason: DropReason): typeof RouteKind.None {
    this.stats.drops[reason]++;
    return RouteKind.None;
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
