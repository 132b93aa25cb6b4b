/**
 * @turnpike/relay-core: a pure, synchronous STUN/TURN protocol engine.
 * See README.md for the sans-IO contract and the call order.
 *
 * This list is the package's public surface: what a runtime (relay-server, tunnel-client), a
 * load generator or a user's property test needs. Helpers the engines use inside (the timer
 * heap, the rate limiter, CRC-32, the nonce issuer, the port pool, ...) are not exported.
 */

// Credentials (RFC 8489 §9.2; TURN REST usernames; pinned ports)
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
export { longTermKeyMd5, longTermKeySha256, userHash } from "./auth/long-term-key.js";
export {
  mintPinnedCredentials,
  PIN_MARKER,
  PINNED_SECRET_LABEL,
  type PinnedUser,
  pinnedCredentialSecret,
  pinOfUsername,
  userOfUsername,
} from "./auth/pinned-username.js";
export { mintRestCredentials, parseRestUsername, restPassword } from "./auth/rest-credentials.js";
export { TurnClient } from "./client/turn-client.js";
// The engines
export type {
  ConnectionBindResult,
  RetransmissionOptions,
  TurnClientEvent,
  TurnClientOptions,
  TurnClientOutput,
  TurnClientState,
  TurnClientStats,
  TurnClientTransport,
  TurnData,
} from "./client/types.js";
// The codec (RFC 8489 §5, §14; RFC 8656 §12.4, §18)
export { formatTransportAddress, type TransportAddress } from "./codec/address.js";
export {
  getAttribute,
  hasAttribute,
  readAddress,
  readAddressFamily,
  readAllXorAddresses,
  readBytes,
  readChannelNumber,
  readErrorCode,
  readEvenPort,
  readPasswordAlgorithm,
  readRequestedTransport,
  readString,
  readUint32,
  readUnknownAttributes,
  readXorAddress,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "./codec/attributes.js";
export {
  CHANNEL_DATA_HEADER_LENGTH,
  type ChannelDataView,
  decodeChannelData,
  encodeChannelData,
  writeChannelDataHeader,
} from "./codec/channel-data.js";
export {
  AttributeType,
  ErrorCode,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  MAX_CHANNEL,
  MAX_LEGACY_CHANNEL,
  MessageClass,
  Method,
  MIN_CHANNEL,
  methodName,
  PasswordAlgorithm,
  TransportProtocol,
} from "./codec/constants.js";
export {
  decodeStun,
  type StunAttribute,
  type StunDecodeError,
  type StunDecodeResult,
  type StunMessage,
} from "./codec/message.js";
export { StunMessageBuilder } from "./codec/message-builder.js";
export {
  MAX_STREAM_FRAME,
  MAX_UNAUTHENTICATED_STREAM_FRAME,
  type StreamFrameKind,
  StreamFramer,
  type StreamFramerError,
} from "./codec/stream-framer.js";
// Identifiers the engines and their runtime exchange
export {
  type AllocationId,
  type ConnectionId,
  connectionId,
  type ListenerId,
  listenerId,
  NO_CONNECTION,
  type OffloadId,
  type PeerConnectionId,
  type RelayId,
} from "./ids.js";
// Addresses and the peer policy
export { type Cidr, cidrContains, parseCidr } from "./policy/cidr.js";
export { formatIp, type IpFamily, type ParsedIp, parseIp } from "./policy/ip.js";
export {
  embeddedIpv4,
  PeerAddressPolicy,
  type PeerAddressPolicyOptions,
  type PeerDenyReason,
  type PeerProtocol,
  type SelfAddresses,
} from "./policy/peer-address-policy.js";
// Randomness is injected (no ambient randomness in the engines)
export { type RandomSource, SeededRandom } from "./rng.js";
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
