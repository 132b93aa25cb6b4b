/** What a TurnServer is configured with (see README.md for an example). */
import type { CredentialStore } from "../auth/credentials.js";
import type { TransportAddress } from "../codec/address.js";
import type { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import type { RandomSource } from "../rng.js";
import type { AllocationQuota } from "./allocation-quota.js";
import type { UserBandwidth } from "./bandwidth.js";
import type { PinnedPortOwners } from "./pinned-port-owners.js";
import type { PortRange } from "./relay-port-pool.js";
import type { ReservationExchange } from "./reservation-exchange.js";

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
  /** The revocation list: entries as TurnServer.setRevokedUsers reads them. */
  readonly revokedUsers?: Iterable<string>;
  /** SOFTWARE attribute on responses (RFC 8489 §14.14); omit to send none. */
  readonly software?: string;
  readonly peerPolicy?: PeerAddressPolicy;
  readonly maxAllocations?: number;
  readonly maxAllocationsPerUser?: number;
  readonly maxPermissionsPerAllocation?: number;
  readonly maxChannelsPerAllocation?: number;
  /**
   * ChannelBind accepts RFC 5766's channel numbers 0x4000-0x7FFF, not only RFC 8656's
   * 0x4000-0x4FFF (§12), for older clients (coturn's turnutils_uclient binds 0x5xxx and up).
   * RFC 8656 narrowed the range so ChannelData cannot be mistaken for other protocols
   * multiplexed on the same port (RFC 7983). Default false.
   */
  readonly legacyChannelNumbers?: boolean;
  /**
   * Responses per second per source IP to requests without valid credentials (Binding, 401,
   * 438, 400 before authentication); over it they are dropped ("rate-limited"). Default 200,
   * burst twice that; 0 turns the limit off. See rate-limit.ts.
   */
  readonly maxUnauthenticatedRate?: number;
  /** RFC 6062 peer connections per TCP allocation (dialing, waiting or bound). Default 100. */
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
  /**
   * Who owns each pinned port, held together with other engines serving the same relay (one
   * principal per port across all of them); default: this engine's own. See
   * pinned-port-owners.ts.
   */
  readonly pinnedPortOwners?: PinnedPortOwners;
  /**
   * RESERVATION-TOKENs other engines of the same relay made, redeemable here (and this one's
   * there); default: none, a token is redeemed only by the engine that made it. See
   * reservation-exchange.ts.
   */
  readonly reservationExchange?: ReservationExchange;
  /**
   * Relayed payload per allocation, bytes per second, both directions together (a token bucket
   * with a burst of one second's worth, at least 64 KiB); over it a datagram is dropped
   * ("bandwidth-limit") and an RFC 6062 pipe paused (chargeConnectionBytes). Default: none.
   * See bandwidth.ts and README.md, "Bandwidth limits".
   */
  readonly maxBytesPerSecond?: number;
  /** The same per user (principal), over all its allocations in this engine. Default: none. */
  readonly maxBytesPerSecondPerUser?: number;
  /** Per-user buckets held together with other engines; default: this engine's own. */
  readonly userBandwidth?: UserBandwidth;
  /** The cap on unauthenticated answers; default: maxUnauthenticatedRate per source IP. */
  readonly unauthenticatedLimiter?: { allow(source: string, now: number): boolean };
  /**
   * RFC 6062 CONNECTION-IDs when several engines serve one relay: the ids this one issues are
   * `index` modulo `count`, and a ConnectionBind for another engine's id is handed over to it
   * (a "hand-over-connection" output) instead of being answered here.
   */
  readonly connectionIds?: { readonly index: number; readonly count: number };
  /**
   * Report which channel bindings of UDP clients the runtime may relay in a data path of its
   * own (a kernel one), and until when: "offload-channel" and "end-offload" outputs (README.md,
   * "Channel offload"). Default false: no such output, and no work for them.
   */
  readonly channelOffload?: boolean;
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

export const DEFAULT_LIFETIMES: Lifetimes = {
  defaultAllocation: 600,
  maxAllocation: 3600,
  permission: 300,
  channel: 600,
  channelCooldown: 300,
  nonce: 600,
  responseCache: 40,
  reservation: 30,
};
