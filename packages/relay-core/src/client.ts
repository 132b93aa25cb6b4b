/**
 * @turnpike/relay-core/client: the client side of the engine, without the server.
 *
 * What a TURN client runtime needs (the tunnel connector, a load generator, a user's client
 * test): the TurnClient engine, the codec, the credentials a client mints and signs with (TURN
 * REST, pinned ports, long-term keys), identifiers, address helpers and injected randomness.
 * The package root (`@turnpike/relay-core`) exports all of this and the server (TurnServer, the
 * credential stores, the peer policy). A client importing this entry loads none of the server's
 * modules: for turnpike-tunnel, which runs on a customer's small VM, 32 of relay-core's modules
 * instead of 66, and ~0.7 MB less memory (bench/README.md, "the connector's share of
 * relay-core").
 */

// Credentials a client mints and signs with (RFC 8489 §9.2; TURN REST usernames; pinned ports)
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
// The client engine
export { TurnClient } from "./client/turn-client.js";
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
// Addresses (the peer policy itself is the server's: the package root)
export { type Cidr, cidrContains, parseCidr } from "./policy/cidr.js";
export { formatIp, type IpFamily, type ParsedIp, parseIp } from "./policy/ip.js";
export { embeddedIpv4 } from "./policy/peer-address-policy.js";
// Randomness is injected (no ambient randomness in the engines)
export { type RandomSource, SeededRandom } from "./rng.js";
