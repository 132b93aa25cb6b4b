/**
 * The data path (RFC 8656 §11 Send and Data indications, §12.4 ChannelData) and the tables it
 * looks things up in: UDP clients by 5-tuple, TCP/TLS clients by connection, relay sockets by
 * id. Everything here runs per packet, so it is written for that: number keys (see
 * datagram-source.ts), no string, view or object made per relayed packet on IPv4 (an IPv6
 * Data indication needs its own bytes), and one reused `route` as the answer.
 *
 * Lookups per packet: a UDP client is one array index and one map lookup; a ChannelData
 * message one more (its channel, which holds its permission); a peer datagram one (its relay
 * socket) plus one (its channel), or a second (its permission) when no channel is bound.
 *
 * Bandwidth limits (bandwidth.ts) are checked last, on what would otherwise be relayed: the
 * allocation's buckets are a field of it, so that costs no lookup, and nothing at all without
 * limits.
 */
import type { TransportAddress } from "../codec/address.js";
import { hasAttribute, readXorAddress } from "../codec/attributes.js";
import { AttributeType, HEADER_LENGTH, MessageClass, Method } from "../codec/constants.js";
import { found, locateAttribute, type StunMessage } from "../codec/message.js";
import { StunMessageBuilder } from "../codec/message-builder.js";
import type { ConnectionId, ListenerId, RelayId } from "../ids.js";
import { NO_CONNECTION } from "../ids.js";
import { ipv4ToUint32 } from "../policy/ip.js";
import type { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import type { RandomSource } from "../rng.js";
import type {
  Allocation,
  ClientEndpoint,
  ClientRecord,
  ClientTransport,
  RelaySocket,
} from "./allocation.js";
import {
  type AddressKeys,
  type DatagramSource,
  ip4PortKey,
  ipv6Words,
  sameWords,
} from "./datagram-source.js";
import type { DropReason, ServerStats } from "./stats.js";
import { type Route, RouteKind } from "./types.js";

/** 65,535 - XOR-PEER-ADDRESS (v6, 24) - DATA header (4), rounded down to 4-byte padding. */
const MAX_DATA_INDICATION_PAYLOAD = 65_504;

export class DataPath {
  /** The routing decision of the last data-path call (TurnServer.route). */
  readonly route: Route = {
    relay: -1 as RelayId,
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
  readonly keys: AddressKeys;
  /**
   * UDP clients with an allocation: per listener id (an array index), by 5-tuple key (IPv4
   * `ip * 65536 + port`, IPv6 a keyed hash; see datagram-source.ts).
   */
  readonly #udpClients: Map<number, ClientRecord>[] = [];
  readonly #streamClients = new Map<ConnectionId, ClientRecord>();
  readonly #relays = new Map<RelayId, RelaySocket>();
  readonly #stats: ServerStats;
  readonly #random: RandomSource;
  readonly #policy: PeerAddressPolicy;

  constructor(
    keys: AddressKeys,
    stats: ServerStats,
    random: RandomSource,
    policy: PeerAddressPolicy,
  ) {
    this.keys = keys;
    this.#stats = stats;
    this.#random = random;
    this.#policy = policy;
  }

  // ---------------------------------------------------------------------------------------
  // Clients and relay sockets

  /** The UDP client with an allocation at `from` on `listener`, if any. */
  udpClient(listener: ListenerId, from: DatagramSource): ClientRecord | undefined {
    const clients = this.#udpClients[listener];
    if (clients === undefined) return undefined;
    if (from.family === 4) return clients.get(ip4PortKey(from.ip4, from.port));
    const client = clients.get(this.keys.ip6Port(from.ip6, from.port));
    return client !== undefined && sameWords(client.ip6!, from.ip6) ? client : undefined;
  }

  streamClient(connection: ConnectionId): ClientRecord | undefined {
    return this.#streamClients.get(connection);
  }

  /** A TCP or TLS client connection was accepted. */
  openStream(
    connection: ConnectionId,
    listener: ListenerId,
    transport: Exclude<ClientTransport, "udp">,
    address: string,
    port: number,
  ): void {
    const family = address.includes(":") ? 6 : 4;
    this.#streamClients.set(connection, {
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

  /** The connection closed, or went to another engine: forget it (returned, if known). */
  closeStream(connection: ConnectionId): ClientRecord | undefined {
    const client = this.#streamClients.get(connection);
    if (client !== undefined) this.#streamClients.delete(connection);
    return client;
  }

  /**
   * The record an allocation is made for: a known client's, a stream connection's, or a new
   * UDP 5-tuple's (entered into the UDP table, where the data path finds it).
   */
  recordFor(endpoint: ClientEndpoint, known: ClientRecord | undefined): ClientRecord {
    if (known !== undefined) return known;
    if (endpoint.transport !== "udp") return this.#streamClients.get(endpoint.connection)!;
    const record: ClientRecord = {
      ...endpoint,
      key:
        endpoint.ip6 !== undefined
          ? this.keys.ip6Port(endpoint.ip6, endpoint.port)
          : ip4PortKey(endpoint.ip4, endpoint.port),
      allocation: undefined,
    };
    let byListener = this.#udpClients[endpoint.listener];
    if (byListener === undefined) {
      byListener = new Map();
      this.#udpClients[endpoint.listener] = byListener;
    }
    byListener.set(record.key, record);
    return record;
  }

  /** A UDP client's allocation ended: it leaves the table with it. */
  forgetUdpClient(client: ClientRecord): void {
    this.#udpClients[client.listener]?.delete(client.key);
  }

  relay(id: RelayId): RelaySocket | undefined {
    return this.#relays.get(id);
  }

  addRelay(socket: RelaySocket): void {
    this.#relays.set(socket.id, socket);
  }

  /** Forget `socket`; false when it was not (or no longer) the one registered under its id. */
  removeRelay(socket: RelaySocket): boolean {
    if (this.#relays.get(socket.id) !== socket) return false;
    this.#relays.delete(socket.id);
    return true;
  }

  /** Every relay socket (shutdown). */
  relaySockets(): RelaySocket[] {
    return [...this.#relays.values()];
  }

  // ---------------------------------------------------------------------------------------
  // Routing

  /**
   * RFC 8656 §12.6: ChannelData `buf[start..end)` from a client goes to the bound peer, if
   * still permitted. One map lookup (the channel); the binding holds its permission.
   */
  channelData(
    client: ClientRecord,
    buf: Uint8Array,
    start: number,
    end: number,
    now: number,
  ): RouteKind {
    const allocation = client.allocation;
    if (allocation === undefined || allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.#drop("no-allocation");
    }
    if (end - start < 4) return this.#drop("malformed-channel-data");
    const length = (buf[start + 2]! << 8) | buf[start + 3]!;
    // RFC 8656 §12.6: the datagram may be longer (padding), never shorter than the length.
    if (start + 4 + length > end) return this.#drop("malformed-channel-data");
    const binding = allocation.channels.get((buf[start]! << 8) | buf[start + 1]!);
    if (binding === undefined || binding.expiresAt <= now) return this.#drop("no-channel");
    if (binding.permission.expiresAt <= now) return this.#drop("no-permission");
    if (!this.#withinLimits(allocation, length, now)) return RouteKind.None;
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
  send(client: ClientRecord | undefined, msg: StunMessage, now: number): RouteKind {
    const allocation = client?.allocation;
    if (allocation === undefined || allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.#drop("no-allocation");
    }
    // DONT-FRAGMENT cannot be honoured by this runtime: treated as unknown (RFC 8656 §11.2).
    if (msg.unknownRequired.length > 0 || hasAttribute(msg, AttributeType.DontFragment)) {
      return this.#drop("invalid-indication");
    }
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    // Found in place (no attribute object per indication): the DATA value's range of `bytes`.
    const hasData = locateAttribute(msg, AttributeType.Data);
    const dataOffset = found.offset;
    const dataLength = found.length;
    if (
      peer === undefined ||
      !hasData ||
      peer.port === 0 ||
      allocation.requestedTransport !== "udp"
    ) {
      return this.#drop("invalid-indication");
    }
    const relay = allocation.relayFor(peer.family);
    if (relay === undefined) return this.#drop("family-mismatch");
    if (this.#policy.check(peer.address, peer.port) !== undefined) {
      return this.#drop("forbidden-peer");
    }
    const permission = allocation.findPermission(peer);
    if (permission === undefined || permission.expiresAt <= now) return this.#drop("no-permission");
    if (!this.#withinLimits(allocation, dataLength, now)) return RouteKind.None;
    const route = this.route;
    route.relay = relay.id;
    route.relayHandle = relay.runtimeHandle;
    route.peerAddress = permission.address;
    route.peerPort = peer.port;
    route.peerFamily = permission.family;
    route.peerIp4 = permission.ip4;
    route.peerIp6 = permission.ip6;
    route.data = msg.bytes;
    route.start = dataOffset;
    route.end = dataOffset + dataLength;
    return RouteKind.ToPeer;
  }

  /**
   * A datagram `buf[start..end)` from peer `from` arriving on relay socket `relay` (RFC 8656
   * §11.3, §12.7). A bound channel costs one map lookup here; an unbound peer a second one
   * (its permission) and a Data indication built for it.
   */
  peerDatagram(
    relay: RelayId,
    buf: Uint8Array,
    start: number,
    end: number,
    from: DatagramSource,
    now: number,
  ): RouteKind {
    const socket = this.#relays.get(relay);
    if (socket === undefined || socket.state !== "bound") return this.#drop("no-allocation");
    const allocation = socket.allocation;
    // An allocation past its lifetime relays nothing, whether or not its timer ran (RFC 8656 §6).
    if (allocation.state !== "active" || allocation.expiresAt <= now) {
      return this.#drop("no-allocation");
    }
    if (from.family !== socket.family) return this.#drop("family-mismatch");
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
      if (binding.permission.expiresAt <= now) return this.#drop("no-permission");
      if (!this.#withinLimits(allocation, end - start, now)) return RouteKind.None;
      // RFC 8656 §12.7: a bound peer's data goes back as ChannelData.
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
      return this.#drop("no-permission");
    }
    // RFC 8656 §11.3: otherwise as a Data indication with XOR-PEER-ADDRESS and DATA. Its
    // attributes must fit STUN's 16-bit length (RFC 8489 §5): a near-maximal IPv6 datagram
    // cannot be carried that way, only over a channel.
    const length = end - start;
    if (length > MAX_DATA_INDICATION_PAYLOAD) return this.#drop("oversized");
    if (!this.#withinLimits(allocation, length, now)) return RouteKind.None;
    const tid = new Uint8Array(12);
    this.#random.fillBytes(tid);
    // Sized up front: header, XOR-PEER-ADDRESS (v6 at most 24), DATA header and padding.
    const capacity = HEADER_LENGTH + 24 + 4 + length + 3;
    const peer: TransportAddress = {
      family: socket.family,
      address: permission.address,
      port: from.port,
    };
    const indication = new StunMessageBuilder(Method.Data, MessageClass.Indication, tid, capacity)
      .xorAddress(AttributeType.XorPeerAddress, peer)
      .bytes(AttributeType.Data, start === 0 && end === buf.length ? buf : buf.subarray(start, end))
      .build();
    route.client = allocation.client;
    route.channel = 0;
    route.data = indication;
    route.start = 0;
    route.end = indication.length;
    return RouteKind.ToClient;
  }

  /** False, counted, when the allocation's bandwidth limits refuse `bytes` now (bandwidth.ts). */
  #withinLimits(allocation: Allocation, bytes: number, now: number): boolean {
    const bandwidth = allocation.bandwidth;
    if (bandwidth === undefined || bandwidth.admit(bytes, now)) return true;
    this.#stats.drops["bandwidth-limit"]++;
    return false;
  }

  #drop(reason: DropReason): typeof RouteKind.None {
    this.#stats.drops[reason]++;
    return RouteKind.None;
  }
}

/** A UDP client 5-tuple not seen before (its text form is built here, on the control path). */
export function udpEndpoint(listener: ListenerId, from: DatagramSource): ClientEndpoint {
  return {
    transport: "udp",
    listener,
    connection: NO_CONNECTION,
    family: from.family,
    address: from.text(),
    port: from.port,
    ip4: from.family === 4 ? from.ip4 : -1,
    ip6: from.family === 6 ? Uint32Array.from(from.ip6) : undefined,
  };
}
