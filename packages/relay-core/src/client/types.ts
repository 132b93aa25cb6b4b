/**
 * The TURN client's inputs and outputs as plain values: options, events, and the reused
 * data-path view (RFC 8656 client side, RFC 6062 §4 for TCP relaying).
 */
import type { TransportAddress } from "../codec/address.js";
import type { PeerConnectionId } from "../ids.js";
import type { RandomSource } from "../rng.js";

/** What carries the control connection to the server (RFC 8656 §3.1). */
export type TurnClientTransport = "udp" | "tcp" | "tls";

/** The allocation's life, as a runtime sees it. */
export type TurnClientState = "idle" | "allocating" | "allocated" | "failed" | "released";

/** RFC 8489 §6.2.1 retransmission parameters (milliseconds); smaller values suit tests. */
export interface RetransmissionOptions {
  /** Initial retransmission timeout, doubled after each send over UDP. Default 500 ms. */
  readonly rto?: number;
  /** Rc: how many times a request is sent over UDP in all. Default 7. */
  readonly rc?: number;
  /** Rm: after the last send, wait Rm * RTO for an answer. Default 16. */
  readonly rm?: number;
  /** TCP/TLS: no retransmission, one timeout for the whole transaction. Default 39,500 ms. */
  readonly streamTimeout?: number;
}

export interface TurnClientOptions {
  readonly username: string;
  readonly password: string;
  /** Known in advance (otherwise learnt from the first 401). */
  readonly realm?: string;
  /** Transaction ids come from here: seed it in tests. */
  readonly random: RandomSource;
  readonly transport: TurnClientTransport;
  /** REQUESTED-TRANSPORT: "udp" (RFC 8656) or "tcp" (RFC 6062, only over tcp/tls). Default "udp". */
  readonly requestedTransport?: "udp" | "tcp";
  /** REQUESTED-ADDRESS-FAMILY of the relayed address (RFC 8656 §7.1). Default 4. */
  readonly family?: 4 | 6;
  /** LIFETIME to ask for, seconds (RFC 8656 §7.1); the server decides. */
  readonly lifetime?: number;
  /** SOFTWARE attribute on requests (RFC 8489 §14.14). */
  readonly software?: string;
  readonly retransmission?: RetransmissionOptions;
  /** 438 Stale Nonce answers retried per request before giving up. Default 3. */
  readonly maxStaleNonceRetries?: number;
  /** Seconds between CreatePermission refreshes (permissions last 300 s, RFC 8656 §9). Default 240. */
  readonly permissionRefreshInterval?: number;
  /** Seconds between ChannelBind refreshes (bindings last 600 s, RFC 8656 §12). Default 540. */
  readonly channelRefreshInterval?: number;
  /**
   * Seconds without a request sent before a Binding request checks the server and keeps NAT
   * bindings open; 0 turns it off. Default 15 (UDP), 30 (TCP/TLS).
   */
  readonly keepaliveInterval?: number;
  /**
   * What the keep-alive is once allocated: a Binding (default; the server does no work for it)
   * or a Refresh, which also proves the allocation still exists. A relay restarted between two
   * keep-alives answers a Binding as if nothing happened but a Refresh with 437 (RFC 8656 §8),
   * so the allocation is known lost within one interval instead of at the next refresh.
   */
  readonly keepaliveRequest?: "binding" | "refresh";
}

/** What `TurnClient.pollOutput()` yields: bytes for the server, or an event. */
export type TurnClientOutput =
  | {
      /** Write `data` to the server on the control connection. */
      readonly type: "transmit";
      readonly data: Uint8Array;
    }
  | TurnClientEvent;

/** What happened to the allocation (and what the runtime may act on). */
export type TurnClientEvent =
  | {
      readonly type: "allocated";
      readonly relayed: TransportAddress;
      /** XOR-MAPPED-ADDRESS: our address as the server sees it (undefined if the server omits it). */
      readonly mapped: TransportAddress | undefined;
      /** Seconds. */
      readonly lifetime: number;
    }
  | {
      readonly type: "allocate-failed";
      readonly code: number;
      readonly reason: string;
      /** With 300 Try Alternate (RFC 8489 §10): where to go instead. */
      readonly alternateServer?: TransportAddress;
    }
  | { readonly type: "refreshed"; readonly lifetime: number }
  | { readonly type: "refresh-failed"; readonly code: number; readonly reason: string }
  | { readonly type: "released" }
  | { readonly type: "permission-created"; readonly peerIp: string }
  | {
      readonly type: "permission-failed";
      readonly peerIp: string;
      readonly code: number;
      readonly reason: string;
    }
  | { readonly type: "channel-bound"; readonly peer: TransportAddress; readonly channel: number }
  | {
      readonly type: "channel-bind-failed";
      readonly peer: TransportAddress;
      readonly channel: number;
      readonly code: number;
      readonly reason: string;
    }
  | {
      readonly type: "connected";
      readonly peer: TransportAddress;
      readonly connectionId: PeerConnectionId;
    }
  | {
      readonly type: "connect-failed";
      readonly peer: TransportAddress;
      readonly code: number;
      readonly reason: string;
    }
  | {
      readonly type: "connection-attempt";
      readonly peer: TransportAddress;
      readonly connectionId: PeerConnectionId;
    }
  | {
      /**
       * No answer in time (RFC 8489 §6.2.1: 39.5 s by default). For Allocate and Refresh the
       * client is then "failed"; a Binding keep-alive timing out means the server looks dead;
       * CreatePermission / ChannelBind are retried while still wanted; Connect is given up.
       */
      readonly type: "transaction-timeout";
      readonly method: number;
      /** The peer of a CreatePermission (port 0), ChannelBind or Connect. */
      readonly peer?: TransportAddress;
    };

/**
 * A decoded ChannelData message or Data indication from the server: the payload is
 * `bytes.subarray(start, end)`. One object, reused: valid until the next call into the client.
 */
export interface TurnData {
  /** Who sent it: the channel's peer or the Data indication's XOR-PEER-ADDRESS. */
  peer: TransportAddress | undefined;
  /** The channel number, 0 for a Data indication. */
  channel: number;
  bytes: Uint8Array;
  start: number;
  end: number;
}

/** The answer to a ConnectionBind on a data connection (RFC 6062 §4.3). */
export type ConnectionBindResult =
  | { readonly ok: true; readonly connectionId: PeerConnectionId }
  | {
      readonly ok: false;
      /** The STUN error code, or 0 when the bytes were not a valid answer to our request. */
      readonly code: number;
      readonly reason: string;
      /**
       * After 401/438 with a fresh NONCE: the same request signed with it, to write on the same
       * data connection (once: a second failure is final).
       */
      readonly retry?: Uint8Array;
    };

export interface TurnClientStats {
  requests: number;
  retransmissions: number;
  timeouts: number;
  /** Inputs ignored: malformed, unknown transaction, bad integrity, unknown channel... */
  dropped: number;
}
