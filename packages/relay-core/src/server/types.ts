/**
 * What the server state machine asks of the runtime (outputs, drained with `pollOutput()`),
 * and the routing decision it returns on the data path.
 */
import type {
  AllocationId,
  ConnectionId,
  ListenerId,
  OffloadId,
  PeerConnectionId,
  RelayId,
} from "../ids.js";
import type { PeerDenyReason } from "../policy/peer-address-policy.js";
import type { ClientEndpoint, ClientTransport } from "./allocation.js";
import type { BucketRef } from "./bandwidth.js";

/** Drained with `TurnServer.pollOutput()` and executed by the runtime in order. */
export type TurnServerOutput =
  | {
      /** Send a STUN message to a client (a response, a ConnectionAttempt indication). */
      readonly type: "transmit";
      readonly client: ClientEndpoint;
      readonly data: Uint8Array;
      /** For telemetry: what this message is. */
      readonly method: number;
      readonly messageClass: number;
      readonly errorCode: number;
      /** Why an error response refuses the request, for the runtime's log (never sent). */
      readonly refusal?: Refusal;
    }
  | {
      /** Bind a relay socket on `bindAddress:port`; answer with relayBound / relayBindFailed. */
      readonly type: "open-relay";
      readonly relay: RelayId;
      readonly family: 4 | 6;
      readonly protocol: "udp" | "tcp";
      readonly bindAddress: string;
      readonly port: number;
      /** Set for a pinned port: the principal it is pinned for. */
      readonly pinnedFor?: string;
    }
  | {
      /**
       * Engines sharing `pinnedPortOwners`: this engine took pinned `port` on `family` over
       * for `principal`, and `allocation` of engine `engine` is the stale holder. The runtime
       * asks that engine to end it (its TurnServer.releasePinnedPort) and binds the
       * "open-relay" for the same family and port that follows once it answered, so the bind
       * does not find the stale socket still open. Queued before that "open-relay".
       */
      readonly type: "release-pinned-port";
      readonly engine: number;
      readonly allocation: AllocationId;
      readonly family: 4 | 6;
      readonly port: number;
      readonly principal: string;
    }
  | { readonly type: "close-relay"; readonly relay: RelayId }
  | {
      /**
       * Engines sharing `reservationExchange`: this engine took the reservation `token` that
       * engine `engine` made (an Allocate with its RESERVATION-TOKEN from a 5-tuple that lands
       * here). The runtime tells that engine (its TurnServer.handleReservationTaken).
       */
      readonly type: "reservation-taken";
      readonly engine: number;
      readonly token: Uint8Array;
    }
  | {
      /** RFC 6062 §5.2: dial `address:port` from the relayed address of TCP relay `relay`. */
      readonly type: "connect-peer";
      readonly peerConnection: PeerConnectionId;
      readonly relay: RelayId;
      readonly family: 4 | 6;
      readonly address: string;
      readonly port: number;
    }
  | {
      /**
       * RFC 6062 §5.4: from now on the client's data connection `dataConnection` is a raw pipe
       * to the peer connection `peerConnection` (after the ConnectionBind success queued just
       * before).
       */
      readonly type: "bind-connection";
      readonly peerConnection: PeerConnectionId;
      readonly dataConnection: ConnectionId;
    }
  | { readonly type: "close-peer-connection"; readonly peerConnection: PeerConnectionId }
  | {
      /**
       * RFC 6062 across engines (TurnServerOptions.connectionIds): the ConnectionBind on client
       * connection `connection` names a CONNECTION-ID engine `owner` issued. This server
       * forgot the connection; the runtime gives it (and the request) to that engine.
       */
      readonly type: "hand-over-connection";
      readonly connection: ConnectionId;
      readonly owner: number;
    }
  | {
      /** Close a client TCP/TLS connection (its allocation is gone or it broke the framing). */
      readonly type: "close-connection";
      readonly connection: ConnectionId;
    }
  | {
      /**
       * TurnServerOptions.channelOffload: channel `channel` of the UDP client `client` on
       * listener `listener` and the peer `peer` of relay socket `relay` (bound on `relayed`)
       * are relayed both ways, ChannelData <-> UDP (RFC 8656 §12.4), until `expiresAt`, so
       * the runtime may do it in its own data path (a kernel one). Queued when the binding
       * becomes usable (before the ChannelBind success that makes it so), and again with the
       * same `offload` and a new `expiresAt` whenever that deadline moves. See README.md,
       * "Channel offload".
       */
      readonly type: "offload-channel";
      readonly offload: OffloadId;
      readonly allocation: AllocationId;
      readonly listener: ListenerId;
      readonly client: NumericTransportAddress;
      /** The channel number (RFC 8656 §12), 0x4000-0x4FFF (0x7FFF with legacyChannelNumbers). */
      readonly channel: number;
      readonly relay: RelayId;
      /** The runtime's own handle for `relay`, as given to handleRelayBound (-1 if none). */
      readonly relayHandle: number;
      /** The address relay socket `relay` is bound on (0.0.0.0 or :: for a wildcard bind). */
      readonly relayed: NumericTransportAddress;
      readonly peer: NumericTransportAddress;
      /**
       * Not used at or after this instant (ms, on the clock of the `now` the server is
       * given): the earliest of the channel's, its peer permission's and the allocation's
       * expiry, exactly when the server's own data path stops relaying it.
       */
      readonly expiresAt: number;
      /**
       * The token bucket of its allocation (maxBytesPerSecond: `id` is the allocation id) and
       * of its user (maxBytesPerSecondPerUser: `id` names the user's bucket, the same for all
       * its allocations), with their rate and burst; undefined without that limit. Charge both
       * ways' application data to both, the allocation's first (README.md, "Bandwidth limits").
       */
      readonly allocationBucket: BucketRef | undefined;
      readonly userBucket: BucketRef | undefined;
    }
  | {
      /**
       * The entry `offload` must go: its channel, permission or allocation ended (delete,
       * expiry, revocation, close, shutdown...). Queued before that allocation's
       * close-relay and allocation-ended, so its counters can be read first.
       */
      readonly type: "end-offload";
      readonly offload: OffloadId;
    }
  | {
      readonly type: "allocation-created";
      readonly allocation: AllocationId;
      readonly client: ClientEndpoint;
      readonly username: string;
      readonly relayed: readonly { family: 4 | 6; address: string; port: number }[];
      readonly transport: "udp" | "tcp";
      readonly lifetimeSeconds: number;
    }
  | {
      readonly type: "allocation-ended";
      readonly allocation: AllocationId;
      readonly client: ClientEndpoint;
      readonly reason: AllocationEndReason;
      readonly transport: "udp" | "tcp";
      readonly families: readonly (4 | 6)[];
      readonly lifetimeSeconds: number;
    };

/**
 * Why a request was refused, for the operator (a runtime logs it; nothing of it goes on the
 * wire, where the error code and reason phrase are all a client learns). Set on every error
 * response the server decides, not on the 401 that opens authentication (RFC 8489 §9.2.4),
 * nor on a retransmitted answer.
 */
export interface Refusal {
  /**
   * What refused it: an AuthFailureReason ("bad-integrity", "stale-nonce", "expired", ...), a
   * word ("revoked", "peer-policy", "no-permission", "no-allocation", "user-quota",
   * "relay-capacity", "no-free-port", "draining", "bind-failed", "wrong-credentials"), or the
   * response's reason phrase.
   */
  readonly reason: string;
  /** The USERNAME the request carried, when it carried one (never a password or key). */
  readonly username?: string;
  /** The peer a permission, channel or Connect was refused for. */
  readonly peer?: string;
  /** Why the peer policy refused `peer` ("loopback", "private", "self", "denied-by-config", ...). */
  readonly policy?: PeerDenyReason;
}

/** A transport address as numbers, the way a kernel data path keys it (no text). */
export interface NumericTransportAddress {
  readonly family: 4 | 6;
  /** IPv4: the address as an unsigned 32-bit number; -1 for IPv6. */
  readonly ip4: number;
  /** IPv6: the address as four big-endian 32-bit words; undefined for IPv4. */
  readonly ip6: Uint32Array | undefined;
  readonly port: number;
}

/** Queues one output (the server's queue, handed to the modules that produce outputs). */
export type Emit = (output: TurnServerOutput) => void;

export type AllocationEndReason =
  | "expired"
  | "deleted"
  | "connection-closed"
  | "bind-failed"
  | "shutdown"
  /** A newer allocation of the same user took its pinned port (a reconnecting tunnel). */
  | "taken-over"
  /** Its user was put on the revocation list (TurnServer.setRevokedUsers). */
  | "revoked"
  /** The operator ended it (TurnServer.endAllocations): its credentials stay valid. */
  | "operator";

/** One live allocation as `TurnServer.allocations()` describes it (discovery, operators). */
export interface AllocationInfo {
  readonly id: AllocationId;
  /** The USERNAME that created it (a REST username carries its expiry; never a password). */
  readonly username: string;
  /** For people: the REST <user> part without its pin, or the static user name. */
  readonly user: string;
  /** The port its credentials pinned, if they did. */
  readonly pinnedPort: number | undefined;
  /** What is relayed: UDP (RFC 8656) or TCP (RFC 6062). */
  readonly transport: "udp" | "tcp";
  /** The client's side of the 5-tuple: its transport, address and port. */
  readonly client: ClientEndpoint;
  /** The relayed transport addresses as XOR-RELAYED-ADDRESS carries them. */
  readonly relayed: readonly { family: 4 | 6; address: string; port: number }[];
  /** Peer IPs with a live permission (RFC 8656 §9). */
  readonly peers: readonly string[];
  /** Monotonic ms, on the scale of the `now` the server is given. */
  readonly createdAt: number;
  readonly expiresAt: number;
}

/** What `handle*` returns on the data path (RFC 8656 §11, §12). */
export const RouteKind = {
  /** Nothing to forward: a control message (see pollOutput) or a counted drop. */
  None: 0,
  /** Send `route.data[start..end)` from relay socket `route.relay` to `route.peerAddress:peerPort`. */
  ToPeer: 1,
  /**
   * Send to `route.client`: when `route.channel` is non-zero, a ChannelData header (channel,
   * end - start) followed by `route.data[start..end)` (padded to 4 bytes on TCP/TLS, RFC 8656
   * §12.5); when zero, `route.data[start..end)` is a whole STUN message (a Data indication).
   */
  ToClient: 2,
} as const;
export type RouteKind = (typeof RouteKind)[keyof typeof RouteKind];

/**
 * The routing decision: one object, reused for every packet (not one per packet), valid until
 * the next call into the server.
 */
export interface Route {
  relay: RelayId;
  /**
   * The runtime's own handle for `relay`, as given to `handleRelayBound` (so a runtime needs no
   * lookup of its own per packet); -1 if it gave none.
   */
  relayHandle: number;
  peerAddress: string;
  peerPort: number;
  /** The peer address in numeric form: IPv4 as a uint32, IPv6 as four big-endian words. */
  peerFamily: 4 | 6;
  peerIp4: number;
  peerIp6: Uint32Array | undefined;
  client: ClientEndpoint;
  channel: number;
  data: Uint8Array;
  start: number;
  end: number;
}

export type { ClientEndpoint, ClientTransport };
