/**
 * One allocation (RFC 8656 §3.2, §6) and the rules that concern it alone: its relayed
 * transport addresses, its lifetime, its permissions (§9: per peer IP, all or none per
 * request) and channel bindings (§12: one number per peer and one peer per number, a
 * cool-down after expiry). The server decides who may ask (authentication, ownership, peer
 * policy) and keeps the tables of allocations; what an allocation holds, and for how long, is
 * decided here.
 */
import type { Principal } from "../auth/credentials.js";
import type { TransportAddress } from "../codec/address.js";
import type { AllocationId, ConnectionId, ListenerId, PeerConnectionId, RelayId } from "../ids.js";
import { ipv4ToUint32 } from "../policy/ip.js";
import type { AllocationBandwidth } from "./bandwidth.js";
import type { OffloadEntry } from "./channel-offload.js";
import { type AddressKeys, ip4PortKey, ipv6Words, sameWords } from "./datagram-source.js";
import type { Lifetimes } from "./options.js";
import type { Reply } from "./responses.js";
import type { ServerStats } from "./stats.js";

/** How the client reaches the server: the "client" half of the 5-tuple (RFC 8656 §3.2). */
export type ClientTransport = "udp" | "tcp" | "tls";

/**
 * One client 5-tuple as the runtime knows it. For UDP, `listener` names the socket that must
 * answer; for TCP/TLS, `connection` names the stream (and `listener` where it was accepted).
 */
export interface ClientEndpoint {
  readonly transport: ClientTransport;
  readonly listener: ListenerId;
  /** The runtime's id of the TCP/TLS connection; NO_CONNECTION (-1) for UDP. */
  readonly connection: ConnectionId;
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;
  /** The address as the data path sends to it: IPv4 as a uint32 (else -1) ... */
  readonly ip4: number;
  /** ... IPv6 as four big-endian words (else undefined). */
  readonly ip6: Uint32Array | undefined;
}

/** A client the server keeps: a UDP 5-tuple with an allocation, or a TCP/TLS connection. */
export interface ClientRecord extends ClientEndpoint {
  /** Its key in the UDP client table (data-path.ts); the connection id for TCP/TLS. */
  readonly key: number;
  allocation: Allocation | undefined;
}

/** RFC 8656 §9: a permission is per peer IP address (any port), 300 s. */
export interface Permission {
  /** IPv4: the address as a uint32; IPv6: a keyed hash (see datagram-source.ts). */
  readonly key: number;
  readonly address: string;
  readonly family: 4 | 6;
  /** The numeric address, for the data path (and to confirm an IPv6 hash match). */
  readonly ip4: number;
  readonly ip6: Uint32Array | undefined;
  expiresAt: number;
}

/** RFC 8656 §12: channel <-> peer transport address, 600 s, then 300 s of cool-down. */
export interface ChannelBinding {
  readonly number: number;
  readonly peer: TransportAddress;
  /** IPv4: ip * 65536 + port (a safe integer); IPv6: a keyed hash of address and port. */
  readonly peerKey: number;
  /** The peer address in numeric form, as a permission holds it. */
  readonly peerIp4: number;
  readonly peerIp6: Uint32Array | undefined;
  /** Key of the peer's permission, and the permission itself (relinked when reinstalled). */
  readonly permissionKey: number;
  permission: Permission;
  /** The relay socket (family) the peer is reached through. */
  readonly relay: RelaySocket;
  expiresAt: number;
  /** Set once the binding expired: until then the number and the peer may not be rebound elsewhere. */
  coolingUntil: number;
  /** What the runtime was last told to offload for it (channel-offload.ts); undefined: nothing. */
  offload: OffloadEntry | undefined;
}

/**
 * How a relay socket's port was chosen, which decides what a failed bind may do: "any" tries
 * another free port, "even" another even one (moving its EVEN-PORT reservation along), "fixed"
 * (a pinned port, a RESERVATION-TOKEN's) cannot move and fails the family.
 */
export type PortChoice = "any" | "even" | "fixed";

/** One relayed transport address of an allocation: a socket the runtime binds (RFC 8656 §2). */
export interface RelaySocket {
  readonly id: RelayId;
  readonly family: 4 | 6;
  readonly protocol: "udp" | "tcp";
  /** The address the runtime binds. */
  readonly bindAddress: string;
  /** What XOR-RELAYED-ADDRESS says (differs from bindAddress behind 1:1 NAT). */
  readonly advertisedAddress: string;
  port: number;
  /** Ports tried for this socket, so a retry after a failed bind picks another (bounded). */
  attempts: number;
  readonly choice: PortChoice;
  state: "binding" | "bound" | "failed";
  /** The runtime's handle for the bound socket (see Route.relayHandle); -1 if none. */
  runtimeHandle: number;
  readonly allocation: Allocation;
}

/**
 * RFC 6062: one TCP connection between the relay and a peer, named by CONNECTION-ID. It waits
 * (at most 30 s, §5.2/§5.3) for the client to ConnectionBind a data connection to it.
 */
export interface TcpPeerConnection {
  readonly id: PeerConnectionId;
  readonly allocation: Allocation;
  readonly peer: TransportAddress;
  /** "connecting": a Connect request is dialing; "pending-bind": waiting for ConnectionBind. */
  state: "connecting" | "pending-bind" | "bound";
  /** Deadline of the current wait (dial or bind). */
  expiresAt: number;
  /** The client data connection once bound. */
  dataConnection: ConnectionId | undefined;
}

/** What every allocation of one server shares: its settings and gauges. */
export interface AllocationRules {
  readonly keys: AddressKeys;
  /** permissionsActive and channelsActive are kept here, as permissions come and go. */
  readonly stats: ServerStats;
  readonly lifetimes: Lifetimes;
  readonly maxPermissions: number;
  readonly maxChannels: number;
}

export type AllocationState = "binding" | "active";

/** RFC 8656 §8.2 "desired lifetime" (and §7.2): min(requested, max), never below the default. */
export function desiredLifetime(requested: number | undefined, lifetimes: Lifetimes): number {
  const { defaultAllocation, maxAllocation } = lifetimes;
  if (requested === undefined) return defaultAllocation;
  return Math.max(defaultAllocation, Math.min(requested, maxAllocation));
}

export class Allocation {
  state: AllocationState = "binding";
  readonly relays: RelaySocket[] = [];
  /** Permissions by peer IP key. */
  readonly permissions = new Map<number, Permission>();
  /** Channel bindings by number, and the same bindings by peer key (RFC 8656 §12 lookups both ways). */
  readonly channels = new Map<number, ChannelBinding>();
  readonly channelsByPeer = new Map<number, ChannelBinding>();
  /** RFC 6062 peer connections of a TCP allocation (tcp-relay.ts keeps them). */
  readonly tcpConnections = new Set<TcpPeerConnection>();
  expiresAt: number;
  /** The deadline scheduled for it and that heap entry (deadlines.ts's bookkeeping). */
  scheduledAt = Number.POSITIVE_INFINITY;
  timerEntry: object | undefined = undefined;
  deleted = false;
  /** The Allocate success, kept so a retransmitted Allocate gets identical bytes (RFC 8656 §7.2). */
  allocateResponse: Uint8Array | undefined;
  /** The Allocate still waiting for its relay sockets to bind (relay-sockets.ts answers it). */
  pendingAllocate: Reply | undefined = undefined;
  /** Families asked for that could not be served (reported with ADDRESS-ERROR-CODE). */
  readonly familyErrors: { family: 4 | 6; code: number }[] = [];
  /** RFC 8656 §7.2: the token naming the port reserved next to this one (EVEN-PORT R bit). */
  reservationToken: Uint8Array | undefined;
  /** The port its credentials pinned (auth/pinned-username.ts), on every relayed family. */
  pinnedPort: number | undefined;
  /** The buckets its relayed bytes are charged to (bandwidth.ts); undefined: no limit. */
  bandwidth: AllocationBandwidth | undefined = undefined;

  readonly #rules: AllocationRules;

  constructor(
    readonly id: AllocationId,
    readonly client: ClientRecord,
    /** The USERNAME that created it (for logs; a TURN REST one may be renewed meanwhile). */
    readonly username: string,
    /** Who owns it: later requests must speak for the same principal (RFC 8656 §5, 441). */
    readonly principal: Principal,
    /** The long-term key, to sign responses sent after an asynchronous step (port binding). */
    readonly key: Uint8Array,
    readonly createdAt: number,
    lifetimeSeconds: number,
    /** The Allocate transaction id, to spot retransmissions. */
    readonly transactionId: Uint8Array,
    readonly requestedTransport: "udp" | "tcp",
    rules: AllocationRules,
  ) {
    this.expiresAt = createdAt + lifetimeSeconds * 1000;
    this.#rules = rules;
  }

  /** Relays (and answers for itself) from now until `lifetimeSeconds` from `now` (§8.2). */
  refresh(lifetimeSeconds: number, now: number): void {
    this.expiresAt = now + lifetimeSeconds * 1000;
  }

  relayFor(family: 4 | 6): RelaySocket | undefined {
    for (const r of this.relays) if (r.family === family && r.state === "bound") return r;
    return undefined;
  }

  // ---------------------------------------------------------------------------------------
  // Permissions (RFC 8656 §9, §10)

  /** The permission for `peer`'s IP address (any port), live or not yet swept. */
  findPermission(peer: TransportAddress): Permission | undefined {
    if (peer.family === 4) return this.permissions.get(ipv4ToUint32(peer.address));
    const words = ipv6Words(peer.address);
    if (words === undefined) return undefined;
    const permission = this.permissions.get(this.#rules.keys.ip6(words));
    return permission !== undefined && sameWords(permission.ip6!, words) ? permission : undefined;
  }

  /**
   * RFC 8656 §10.2: install (or refresh) a permission for every peer, or for none: false when
   * the new ones would exceed the per-allocation limit.
   */
  installPermissions(peers: readonly TransportAddress[], now: number): boolean {
    let added = 0;
    for (const peer of peers) if (this.findPermission(peer) === undefined) added++;
    if (this.permissions.size + added > this.#rules.maxPermissions) return false;
    for (const peer of peers) this.#installPermission(peer, now);
    return true;
  }

  #installPermission(peer: TransportAddress, now: number): Permission {
    const expiresAt = now + this.#rules.lifetimes.permission * 1000;
    const existing = this.findPermission(peer);
    if (existing !== undefined) {
      existing.expiresAt = expiresAt;
      return existing;
    }
    const ip6 = peer.family === 6 ? ipv6Words(peer.address) : undefined;
    const ip4 = peer.family === 4 ? ipv4ToUint32(peer.address) : -1;
    const key = ip6 !== undefined ? this.#rules.keys.ip6(ip6) : ip4;
    const permission: Permission = {
      key,
      address: peer.address,
      family: peer.family,
      ip4,
      ip6,
      expiresAt,
    };
    this.permissions.set(key, permission);
    this.#rules.stats.permissionsActive++;
    // Bindings to this IP whose permission lapsed and was swept hold the old record: relink.
    for (const binding of this.channels.values()) {
      if (binding.permissionKey === key) binding.permission = permission;
    }
    return permission;
  }

  // ---------------------------------------------------------------------------------------
  // Channel bindings (RFC 8656 §12)

  /**
   * Bind channel `number` to `peer` through `relay`, or refresh that binding, and install or
   * refresh the peer's permission with it (§12.2). 400 when the number or the peer is bound
   * (or cooling down) to another, 508 over the permission or channel limit, else 0.
   */
  bindChannel(number: number, peer: TransportAddress, relay: RelaySocket, now: number): number {
    const rules = this.#rules;
    const peerIp6 = peer.family === 6 ? ipv6Words(peer.address) : undefined;
    const peerIp4 = peer.family === 4 ? ipv4ToUint32(peer.address) : -1;
    const peerKey =
      peerIp6 !== undefined
        ? rules.keys.ip6Port(peerIp6, peer.port)
        : ip4PortKey(peerIp4, peer.port);
    const byNumber = this.channels.get(number);
    const byPeer = this.channelsByPeer.get(peerKey);
    // §12.2: a number is bound to one peer, a peer to one number, including during the
    // cool-down after expiry (§12); rebinding the same pair refreshes it.
    if ((byNumber && byNumber.peerKey !== peerKey) || (byPeer && byPeer.number !== number)) {
      return 400;
    }
    // The binding (re)installs the peer's permission: that must fit the limit too, whether
    // the binding is new or refreshed after the permission lapsed.
    if (this.findPermission(peer) === undefined && this.permissions.size >= rules.maxPermissions) {
      return 508;
    }
    const expiresAt = now + rules.lifetimes.channel * 1000;
    let binding = byNumber;
    if (binding !== undefined) {
      if (binding.coolingUntil > 0) {
        binding.coolingUntil = 0;
        rules.stats.channelsActive++;
      }
      binding.expiresAt = expiresAt;
    } else {
      if (this.channels.size >= rules.maxChannels) return 508;
      binding = {
        number,
        peer,
        peerKey,
        peerIp4,
        peerIp6,
        permissionKey: peerIp6 !== undefined ? rules.keys.ip6(peerIp6) : peerIp4,
        // Set just below, by #installPermission (the binding is in `channels` by then).
        permission: undefined as unknown as Permission,
        relay,
        expiresAt,
        coolingUntil: 0,
        offload: undefined,
      };
      this.channels.set(number, binding);
      this.channelsByPeer.set(peerKey, binding);
      rules.stats.channelsActive++;
    }
    binding.permission = this.#installPermission(peer, now);
    return 0;
  }

  // ---------------------------------------------------------------------------------------
  // Time

  /** The earliest instant something about this allocation changes by itself. */
  nextDeadline(): number {
    let t = this.expiresAt;
    for (const p of this.permissions.values()) if (p.expiresAt < t) t = p.expiresAt;
    for (const c of this.channels.values()) {
      const at = c.coolingUntil > 0 ? c.coolingUntil : c.expiresAt;
      if (at < t) t = at;
    }
    for (const c of this.tcpConnections)
      if (c.state !== "bound" && c.expiresAt < t) t = c.expiresAt;
    return t;
  }

  /** Forget the permissions and channel bindings (and cool-downs) that are over at `now`. */
  expire(now: number): void {
    const stats = this.#rules.stats;
    for (const [key, p] of this.permissions) {
      if (p.expiresAt <= now) {
        this.permissions.delete(key);
        stats.permissionsActive--;
      }
    }
    for (const [number, c] of this.channels) {
      if (c.coolingUntil > 0) {
        if (c.coolingUntil <= now) {
          this.channels.delete(number);
          this.channelsByPeer.delete(c.peerKey);
        }
      } else if (c.expiresAt <= now) {
        // RFC 8656 §12: the binding is gone, but neither side may be rebound to someone else
        // for 5 minutes, so late packets cannot reach the wrong peer.
        c.coolingUntil = c.expiresAt + this.#rules.lifetimes.channelCooldown * 1000;
        stats.channelsActive--;
        if (c.coolingUntil <= now) {
          this.channels.delete(number);
          this.channelsByPeer.delete(c.peerKey);
        }
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Ending

  /**
   * RFC 8656 §8.2: a Refresh deleting one family of a dual allocation. Its relayed address,
   * and the permissions and channels of peers of that family, are gone; returns the relay
   * socket to close.
   */
  removeFamily(family: 4 | 6): RelaySocket | undefined {
    const i = this.relays.findIndex((r) => r.family === family && r.state === "bound");
    if (i < 0) return undefined;
    const [socket] = this.relays.splice(i, 1);
    const stats = this.#rules.stats;
    for (const [key, p] of this.permissions) {
      if (p.family === family) {
        this.permissions.delete(key);
        stats.permissionsActive--;
      }
    }
    for (const [number, c] of this.channels) {
      if (c.relay !== socket) continue;
      this.channels.delete(number);
      this.channelsByPeer.delete(c.peerKey);
      if (c.coolingUntil === 0) stats.channelsActive--;
    }
    return socket;
  }

  /** The allocation is deleted: it holds no permission or channel any more (§9, §12). */
  clear(): void {
    const stats = this.#rules.stats;
    stats.permissionsActive -= this.permissions.size;
    for (const c of this.channels.values()) if (c.coolingUntil === 0) stats.channelsActive--;
    this.permissions.clear();
    this.channels.clear();
    this.channelsByPeer.clear();
  }
}
