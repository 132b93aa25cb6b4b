/**
 * The TURN server state machine (RFC 8656 over RFC 8489): sans-IO. Bytes, addresses and `now`
 * go in; outputs, a next timeout and data-path routes come out. See README.md for the call
 * order the runtime follows.
 *
 * This file is the surface: the runtime's inputs, the operator's calls and the outputs. Each
 * concern lives in the module named for it:
 *
 *   data-path.ts       ChannelData, Send and Data indications (RFC 8656 §11, §12.4)
 *   requests.ts        STUN requests: Binding, then each TURN method to its module (RFC 8489 §6.3)
 *   authentication.ts  long-term credentials, nonces, PASSWORD-ALGORITHMS (RFC 8489 §9.2)
 *   responses.ts       signing, the unauthenticated rate cap, retransmissions (RFC 8489 §6.3.1)
 *   allocate.ts        Allocate: checks, families, quotas, ports (RFC 8656 §7.2)
 *   relay-sockets.ts   the relay sockets the runtime binds, the Allocate success (RFC 8656 §7.2)
 *   pinned-ports.ts    pinned ports: who holds each, takeover of a stale holder (and with
 *                      pinned-port-owners.ts, one principal per port across engines)
 *   refresh.ts         Refresh: lifetime, deletion with LIFETIME 0 (RFC 8656 §8.2)
 *   permissions.ts     CreatePermission, ChannelBind (RFC 8656 §10.2, §12.2)
 *   allocations.ts     the live allocations, deletion, expiry, revocation, shutdown (RFC 8656 §6)
 *   allocation.ts      one allocation's lifetime, permissions and channels (§6, §9, §12)
 *   tcp-relay.ts       Connect, ConnectionAttempt, ConnectionBind (RFC 6062)
 *   bandwidth.ts       token buckets on relayed bytes, per allocation and per user
 *   deadlines.ts       when each allocation next needs attention
 */

import type { CredentialStore } from "../auth/credentials.js";
import { RevocationList } from "../auth/revocation.js";
import {
  ErrorCode,
  MAX_CHANNEL,
  MAX_LEGACY_CHANNEL,
  MessageClass,
  Method,
} from "../codec/constants.js";
import { decodeStun } from "../codec/message.js";
import type { AllocationId, ConnectionId, ListenerId, PeerConnectionId, RelayId } from "../ids.js";
import { OutputQueue } from "../output-queue.js";
import { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import { AllocateRequests } from "./allocate.js";
import type { Allocation, ClientEndpoint, ClientRecord, ClientTransport } from "./allocation.js";
import { LocalAllocationQuota } from "./allocation-quota.js";
import { type AllocationContext, Allocations } from "./allocations.js";
import { Authenticator } from "./authentication.js";
import { type BandwidthLimit, BandwidthLimits } from "./bandwidth.js";
import { ChannelOffload } from "./channel-offload.js";
import { DataPath, udpEndpoint } from "./data-path.js";
import { AddressKeys, DatagramSource } from "./datagram-source.js";
import { Deadlines } from "./deadlines.js";
import { DEFAULT_LIFETIMES, type TurnServerOptions } from "./options.js";
import { PermissionRequests } from "./permissions.js";
import { LocalPinnedPortOwners } from "./pinned-port-owners.js";
import { PinnedPorts } from "./pinned-ports.js";
import { SourceRateLimiter } from "./rate-limit.js";
import { RefreshRequests } from "./refresh.js";
import { RelayPortPool } from "./relay-port-pool.js";
import { RelaySockets } from "./relay-sockets.js";
import { ClientRequests } from "./requests.js";
import { Responder, ResponseCache } from "./responses.js";
import { createServerStats, type DropReason, type ServerStats } from "./stats.js";
import { TcpRelay } from "./tcp-relay.js";
import { type AllocationInfo, type Route, RouteKind, type TurnServerOutput } from "./types.js";

export class TurnServer {
  readonly stats: ServerStats = createServerStats();
  /** The routing decision of the last data-path call; see RouteKind. */
  readonly route: Route;

  readonly #outputs = new OutputQueue<TurnServerOutput>();
  readonly #data: DataPath;
  readonly #responder: Responder;
  readonly #auth: Authenticator;
  readonly #requests: ClientRequests;
  readonly #allocations: Allocations;
  readonly #relaySockets: RelaySockets;
  readonly #tcp: TcpRelay;
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
    const policy = options.peerPolicy ?? new PeerAddressPolicy();
    const secret = options.secret ?? new Uint8Array(32);
    if (options.secret === undefined) options.random.fillBytes(secret);
    const emit = (output: TurnServerOutput) => {
      this.#outputs.push(output);
    };
    const keys = new AddressKeys(secret);
    this.#data = new DataPath(keys, stats, options.random, policy);
    this.route = this.#data.route;
    this.#responder = new Responder(
      emit,
      options.software,
      options.unauthenticatedLimiter ??
        new SourceRateLimiter(options.maxUnauthenticatedRate ?? 200),
      stats,
    );
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
    const deadlines = new Deadlines<Allocation>();
    this.#tcp = new TcpRelay(
      {
        random: options.random,
        policy,
        maxPerAllocation: options.maxTcpConnectionsPerAllocation ?? 100,
        connectionIds: options.connectionIds,
      },
      emit,
      this.#responder,
      stats,
      deadlines,
      this.#data,
    );
    const context: AllocationContext = {
      relayAddresses: options.relayAddresses,
      ports: new RelayPortPool({
        dynamic: { min: options.minPort ?? 49152, max: options.maxPort ?? 65535 },
        pinned: options.pinnedPorts,
        random: options.random,
      }),
      quota:
        options.allocationQuota ??
        new LocalAllocationQuota(options.maxAllocations, options.maxAllocationsPerUser),
      reservations: options.reservationExchange,
      random: options.random,
      lifetimes,
      alternateServer: options.alternateServer,
      offload: options.channelOffload ? new ChannelOffload(emit) : undefined,
      bandwidth: this.#bandwidth,
      rules: {
        keys,
        stats,
        lifetimes,
        maxPermissions: options.maxPermissionsPerAllocation ?? Number.POSITIVE_INFINITY,
        maxChannels: options.maxChannelsPerAllocation ?? Number.POSITIVE_INFINITY,
      },
      emit,
      responder: this.#responder,
      stats,
      data: this.#data,
      deadlines,
      tcp: this.#tcp,
    };
    const owners = options.pinnedPortOwners ?? new LocalPinnedPortOwners();
    const pinned = new PinnedPorts(context.ports, owners, emit);
    this.#allocations = new Allocations(context, pinned);
    this.#relaySockets = new RelaySockets(context, this.#allocations, pinned);
    const maxChannel = options.legacyChannelNumbers ? MAX_LEGACY_CHANNEL : MAX_CHANNEL;
    this.#requests = new ClientRequests(
      this.#responder,
      new ResponseCache(lifetimes.responseCache),
      this.#auth,
      stats,
      this.#allocations,
      {
        allocate: new AllocateRequests(context, this.#allocations, this.#relaySockets, pinned),
        refresh: new RefreshRequests(context, this.#allocations),
        permissions: new PermissionRequests(context, policy, maxChannel),
        tcp: this.#tcp,
      },
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
   * §11.3, §12.7); the route's byte range refers to `buf`.
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
    this.#relaySockets.bound(relay, now, handle);
  }

  /** The runtime could not bind relay socket `relay`: another port is tried (bounded), else 508. */
  handleRelayBindFailed(relay: RelayId, now: number): void {
    this.#relaySockets.bindFailed(relay, now);
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
    return this.#allocations.endWhere((a) => this.#auth.isRevoked(a.principal), "revoked", now);
  }

  /**
   * The operator ends live allocations at once ("operator"): those of the principals `users`
   * names (entries as the revocation list reads them: "static:NAME", "rest:USER" with its pins,
   * "rest:USER;port=P", "rest-expiry:E", or a plain NAME for all three), or the allocation `id`
   * (AllocationInfo.id). The credentials stay valid, so a client may allocate again: to keep it
   * out, revoke it. Returns how many ended.
   */
  endAllocations(
    which: { readonly users: Iterable<string> } | { readonly id: AllocationId },
    now: number,
  ): number {
    if ("id" in which) {
      return this.#allocations.endWhere((a) => a.id === which.id, "operator", now);
    }
    const named = new RevocationList(which.users);
    if (named.size === 0) return 0;
    return this.#allocations.endWhere((a) => named.revokes(a.principal), "operator", now);
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
   * The answer to another engine's "release-pinned-port" output (engines sharing
   * `pinnedPortOwners`; its family, port, allocation and principal): that engine took the
   * pinned port over, and `allocation` of this engine held it. It ends at once ("taken-over") if
   * it still holds the port: "released"; else "none" (ended meanwhile, or a newer claim here
   * holds it).
   */
  releasePinnedPort(
    release: {
      readonly family: 4 | 6;
      readonly port: number;
      readonly allocation: AllocationId;
      readonly principal: string;
    },
    now: number,
  ): "released" | "none" {
    return this.#allocations.releasePinnedPort(release, now);
  }

  /**
   * Another engine took this engine's reservation `token` (its "reservation-taken" output,
   * engines sharing `reservationExchange`): the reserved port is no longer held here, and the
   * reservation no longer counted (its quota count moved with it).
   */
  handleReservationTaken(token: Uint8Array): void {
    this.#allocations.reservationTaken(token);
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
      // RFC 8489 §6.3 discards a malformed message silently; a request whose header parses
      // gets a 400 instead, so its sender learns why.
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
      this.#requests.handle(endpoint, client, msg, now);
      return RouteKind.None;
    }
    if (msg.messageClass === MessageClass.Indication) {
      if (msg.method === Method.Send) return this.#data.send(client, msg, now);
      // A Binding indication is a keep-alive (RFC 8489 §6.3.2): nothing to do.
      if (msg.method === Method.Binding) return RouteKind.None;
    }
    return this.#drop("unexpected-message");
  }

  #drop(reason: DropReason): typeof RouteKind.None {
    this.stats.drops[reason]++;
    return RouteKind.None;
  }
}
