/**
 * @turnpike/relay-core: a pure, synchronous STUN/TURN protocol engine.
 * See README.md for the sans-IO contract and the call order.
 *
 * This list is the package's public surface: what a runtime (relay-server, tunnel-client), a
 * load generator or a user's property test needs. Helpers the engines use inside (the timer
 * heap, the rate limiter, CRC-32, the nonce issuer, the port pool, ...) are not exported.
 */

// The server's credential stores (RFC 8489 §9.2; TURN REST usernames; pinned ports)
export {
  CombinedCredentials,
  type CredentialStore,
  type IntegrityCheck,
  type KeyLookup,
  type PasswordAlgorithmName,
  type Principal,
  SharedSecretCredentials,
  type SharedSecretOptions,
  StaticCredentials,
} from "./auth/credentials.js";
// Everything a client needs (TurnClient, the codec, minting credentials, ids, addresses,
// randomness): also its own entry, `@turnpike/relay-core/client`, which loads no server module.
export * from "./client.js";
// The peer policy (RFC 8656 §21.3)
export {
  PeerAddressPolicy,
  type PeerAddressPolicyOptions,
  type PeerDenyReason,
  type PeerProtocol,
  type SelfAddresses,
} from "./policy/peer-address-policy.js";
// The server engine
export type { ClientEndpoint, ClientTransport } from "./server/allocation.js";
export type { AllocationQuota } from "./server/allocation-quota.js";
export {
  type BandwidthLimit,
  type BucketRef,
  type ByteBucket,
  bandwidthLimit,
  LocalUserBandwidth,
  MIN_BURST_BYTES,
  TokenBucket,
  type UserBandwidth,
  type UserBucket,
} from "./server/bandwidth.js";
export { DatagramSource } from "./server/datagram-source.js";
export type { Lifetimes, RelayAddressConfig, TurnServerOptions } from "./server/options.js";
export {
  LocalPinnedPortOwners,
  type PinnedPortClaim,
  type PinnedPortOwners,
} from "./server/pinned-port-owners.js";
export type { PortRange } from "./server/relay-port-pool.js";
export type {
  ExchangedReservation,
  PublishedReservation,
  ReservationExchange,
} from "./server/reservation-exchange.js";
export { TurnServer } from "./server/server.js";
export {
  AUTH_FAILURE_REASONS,
  type AuthFailureReason,
  DROP_REASONS,
  type DropReason,
  type ServerStats,
} from "./server/stats.js";
export {
  type AllocationEndReason,
  type AllocationInfo,
  type NumericTransportAddress,
  type Refusal,
  type Route,
  RouteKind,
  type TurnServerOutput,
} from "./server/types.js";
