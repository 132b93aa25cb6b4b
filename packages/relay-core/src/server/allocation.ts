/**
 * The state a TURN server keeps per client (RFC 8656 §2.2, §5): allocations, their relayed
 * transport addresses, permissions and channel bindings. Plain data; the rules live in server.ts.
 */
import type { Principal } from "../auth/credentials.js";
import type { TransportAddress } from "../codec/address.js";

/** How the client reaches the server: the "client" half of the 5-tuple (RFC 8656 §2.2). */
export type ClientTransport = "udp" | "tcp" | "tls";

/**
 * One client 5-tuple as the runtime knows it. For UDP, `listener` names the socket that must
 * answer; for TCP/TLS, `connection` names the stream (and `listener` where it was accepted).
 */
export interface ClientEndpoint {
  readonly transport: ClientTransport;
  readonly listener: number;
  /** The runtime's id of the TCP/TLS connection; -1 for UDP. */
  readonly connection: number;
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;
  /** The address as the data path sends to it: IPv4 as a uint32 (else -1) ... */
  readonly ip4: number;
  /** ... IPv6 as four big-endian words (else undefined). */
  readonly ip6: Uint32Array | undefined;
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
}

/** One relayed transport address of an allocation: a socket the runtime binds (RFC 8656 §2). */
export interface RelaySocket {
  readonly id: number;
  readonly family: 4 | 6;
  readonly protocol: "udp" | "tcp";
  /** The address the runtime binds. */
  readonly bindAddress: string;
  /** What XOR-RELAYED-ADDRESS says (differs from bindAddress behind 1:1 NAT). */
  readonly advertisedAddress: string;
  port: number;
  /** Ports tried for this socket, so a retry after a failed bind picks another (bounded). */
  attempts: number;
  /** EVEN-PORT or RESERVATION-TOKEN chose this port: a failed bind is not retried elsewhere. */
  readonly fixedPort: boolean;
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
  readonly id: number;
  readonly allocation: Allocation;
  readonly peer: TransportAddress;
  /** "connecting": a Connect request is dialing; "pending-bind": waiting for ConnectionBind. */
  state: "connecting" | "pending-bind" | "bound";
  /** Deadline of the current wait (dial or bind). */
  expiresAt: number;
  /** The client data connection once bound. */
  dataConnection: number;
}

export type AllocationState = "binding" | "active";

export class Allocation {
  state: AllocationState = "binding";
  readonly relays: RelaySocket[] = [];
  /** Permissions by peer IP key. */
  readonly permissions = new Map<number, Permission>();
  /** Channel bindings by number, and the same bindings by peer key (RFC 8656 §12 lookups both ways). */
  readonly channels = new Map<number, ChannelBinding>();
  readonly channelsByPeer = new Map<number, ChannelBinding>();
  /** RFC 6062 peer connections of a TCP allocation. */
  readonly tcpConnections = new Set<TcpPeerConnection>();
  expiresAt: number;
  /** The deadline currently scheduled in the timer heap, and its generation (lazy deletion). */
  scheduledAt = Number.POSITIVE_INFINITY;
  timerGeneration = 0;
  deleted = false;
  /** The Allocate success, kept so a retransmitted Allocate gets identical bytes (RFC 8656 §7.2). */
  allocateResponse: Uint8Array | undefined;
  /** Families asked for that could not be served (reported with ADDRESS-ERROR-CODE). */
  familyErrors: { family: 4 | 6; code: number }[] = [];
  reservationToken: Uint8Array | undefined;
  /** The port its credentials pinned (auth/pinned-username.ts), on every relayed family. */
  pinnedPort: number | undefined;

  constructor(
    readonly id: number,
    readonly client: ClientEndpoint & { readonly key: number },
    /** The USERNAME that created it (for logs; a TURN REST one may be renewed meanwhile). */
    readonly username: string,
    /** Who owns it: later requests must speak for the same principal (RFC 8656 §7, 441). */
    readonly principal: Principal,
    /** The long-term key, to sign responses sent after an asynchronous step (port binding). */
    readonly key: Uint8Array,
    readonly createdAt: number,
    lifetimeMs: number,
    /** The Allocate transaction id, to spot retransmissions. */
    readonly transactionId: Uint8Array,
    readonly requestedTransport: "udp" | "tcp",
  ) {
    this.expiresAt = createdAt + lifetimeMs;
  }

  relayFor(family: 4 | 6): RelaySocket | undefined {
    for (const r of this.relays) if (r.family === family && r.state === "bound") return r;
    return undefined;
  }

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
}
