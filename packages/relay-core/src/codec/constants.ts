/**
 * Wire constants of STUN (RFC 8489), TURN (RFC 8656) and TURN-TCP (RFC 6062).
 *
 * Plain `const` objects rather than TypeScript enums so the values inline cheaply, read well in
 * tests and survive `isolatedModules` builds.
 */

/** RFC 8489 §5: the fixed value in bytes 4..7 of every STUN message. */
export const MAGIC_COOKIE = 0x2112a442;
/** RFC 8489 §5: 20-byte header. */
export const HEADER_LENGTH = 20;
/** RFC 8489 §14.7: FINGERPRINT is CRC-32 of the message XOR'ed with this. */
export const FINGERPRINT_XOR = 0x5354554e;

/** RFC 8489 §5: the two class bits C1 C0. */
export const MessageClass = {
  Request: 0,
  Indication: 1,
  SuccessResponse: 2,
  ErrorResponse: 3,
} as const;
export type MessageClass = (typeof MessageClass)[keyof typeof MessageClass];

/** RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1. */
export const Method = {
  Binding: 0x001,
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
  Connect: 0x00a,
  ConnectionBind: 0x00b,
  ConnectionAttempt: 0x00c,
} as const;
export type Method = (typeof Method)[keyof typeof Method];

const METHOD_NAMES: Record<number, string> = {
  1: "binding",
  3: "allocate",
  4: "refresh",
  6: "send",
  7: "data",
  8: "create_permission",
  9: "channel_bind",
  10: "connect",
  11: "connection_bind",
  12: "connection_attempt",
};
/** A stable, metric-friendly name for a method (`"unknown"` for anything else). */
export function methodName(method: number): string {
  return METHOD_NAMES[method] ?? "unknown";
}
const CLASS_NAMES = ["request", "indication", "success", "error"] as const;
export function className(cls: MessageClass): string {
  return CLASS_NAMES[cls];
}

/** RFC 8489 §18.3, RFC 8656 §18, RFC 6062 §6.2. */
export const AttributeType = {
  // comprehension-required (0x0000-0x7FFF)
  MappedAddress: 0x0001,
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  UnknownAttributes: 0x000a,
  ChannelNumber: 0x000c,
  Lifetime: 0x000d,
  XorPeerAddress: 0x0012,
  Data: 0x0013,
  Realm: 0x0014,
  Nonce: 0x0015,
  XorRelayedAddress: 0x0016,
  RequestedAddressFamily: 0x0017,
  EvenPort: 0x0018,
  RequestedTransport: 0x0019,
  DontFragment: 0x001a,
  MessageIntegritySha256: 0x001c,
  PasswordAlgorithm: 0x001d,
  Userhash: 0x001e,
  XorMappedAddress: 0x0020,
  ReservationToken: 0x0022,
  ConnectionId: 0x002a,
  // comprehension-optional (0x8000-0xFFFF)
  AdditionalAddressFamily: 0x8000,
  AddressErrorCode: 0x8001,
  PasswordAlgorithms: 0x8002,
  AlternateDomain: 0x8003,
  Icmp: 0x8004,
  Software: 0x8022,
  AlternateServer: 0x8023,
  Fingerprint: 0x8028,
} as const;
export type AttributeType = (typeof AttributeType)[keyof typeof AttributeType];

/** Attribute types this implementation understands (RFC 8489 §14: anything else < 0x8000 gets a 420). */
export const KNOWN_ATTRIBUTES: ReadonlySet<number> = new Set(Object.values(AttributeType));

/** RFC 8489 §14.8, RFC 8656 §19, RFC 6062 §6.3. */
export const ErrorCode = {
  TryAlternate: 300,
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  MobilityForbidden: 405,
  UnknownAttribute: 420,
  AllocationMismatch: 437,
  StaleNonce: 438,
  AddressFamilyNotSupported: 440,
  WrongCredentials: 441,
  UnsupportedTransportProtocol: 442,
  PeerAddressFamilyMismatch: 443,
  ConnectionAlreadyExists: 446,
  ConnectionTimeoutOrFailure: 447,
  AllocationQuotaReached: 486,
  RoleConflict: 487,
  ServerError: 500,
  InsufficientCapacity: 508,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Reason phrases: RFC 8489 §14.8 and RFC 8656 §19 recommend these texts. */
export const REASON_PHRASES: Readonly<Record<number, string>> = {
  300: "Try Alternate",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  405: "Mobility Forbidden",
  420: "Unknown Attribute",
  437: "Allocation Mismatch",
  438: "Stale Nonce",
  440: "Address Family not Supported",
  441: "Wrong Credentials",
  442: "Unsupported Transport Protocol",
  443: "Peer Address Family Mismatch",
  446: "Connection Already Exists",
  447: "Connection Timeout or Failure",
  486: "Allocation Quota Reached",
  487: "Role Conflict",
  500: "Server Error",
  508: "Insufficient Capacity",
};

/** RFC 8656 §18.8: REQUESTED-TRANSPORT carries an IANA protocol number. */
export const TransportProtocol = { Udp: 17, Tcp: 6 } as const;

/** RFC 8489 §14.1, RFC 8656 §18.6: address family values used in (XOR-)address attributes. */
export const AddressFamilyCode = { IPv4: 0x01, IPv6: 0x02 } as const;

/** RFC 8489 §18.5: PASSWORD-ALGORITHM values. */
export const PasswordAlgorithm = { Md5: 0x0001, Sha256: 0x0002 } as const;

/**
 * Channel numbers a client may bind: RFC 8656 §12's 0x4000-0x4FFF, narrowed from RFC 5766
 * §11's 0x4000-0x7FFF so that ChannelData cannot be mistaken for the other protocols
 * multiplexed on a port (RFC 7983). Deployed clients still bind above 0x4FFF (coturn's
 * turnutils_uclient does): TurnServerOptions.legacyChannelNumbers accepts the old range.
 */
export const MIN_CHANNEL = 0x4000;
export const MAX_CHANNEL = 0x4fff;
/** RFC 5766 §11: the upper bound of the range older clients use. */
export const MAX_LEGACY_CHANNEL = 0x7fff;
