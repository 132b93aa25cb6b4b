/**
 * Counters the server keeps as plain numbers, so the data path pays one increment. The runtime
 * reads them when metrics are collected (observable instruments), never per packet.
 */

export const DROP_REASONS = [
  /** RFC 8489 §6.3: port 0 cannot be answered; such "requests" are ignored. */
  "port-zero",
  /** Neither STUN nor ChannelData (first two bits 0b1x). */
  "not-stun",
  /** STUN that fails to decode: bad length, truncated attribute, bad FINGERPRINT. */
  "malformed",
  /** ChannelData whose length runs past the datagram. */
  "malformed-channel-data",
  /** A response or an indication we do not act on, arriving from a client. */
  "unexpected-message",
  /** Data path traffic from a 5-tuple (or to a relay socket) with no active allocation. */
  "no-allocation",
  /** ChannelData on an unbound or expired channel (RFC 8656 §12.6). */
  "no-channel",
  /** No live permission for the peer IP (RFC 8656 §9: silently discarded). */
  "no-permission",
  /** A Send indication towards an address the peer policy forbids. */
  "forbidden-peer",
  /** A Send indication without XOR-PEER-ADDRESS or DATA, or with unknown required attributes. */
  "invalid-indication",
  /** A peer address family the allocation has no relayed address for (RFC 8656 §11.3). */
  "family-mismatch",
  /** Traffic on a TCP/TLS connection the server does not know. */
  "unknown-connection",
  /** A source address no answer can carry (a scoped IPv6 address such as fe80::1%eth0). */
  "unsupported-source",
  /** An unauthenticated answer over its source IP's rate budget (amplification guard). */
  "rate-limited",
  /** A peer datagram too large for a Data indication (no channel bound). */
  "oversized",
  /** RFC 6062: a peer connection beyond the per-allocation limit, refused. */
  "connection-limit",
  /** Relayed payload over its allocation's or its user's bandwidth limit (bandwidth.ts). */
  "bandwidth-limit",
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export const AUTH_FAILURE_REASONS = [
  /** USERNAME, REALM or NONCE missing next to MESSAGE-INTEGRITY (400). */
  "missing-attributes",
  /** USERNAME of 509 bytes or more, REALM or NONCE of 763 or more (400, RFC 8489 §14). */
  "oversized-attribute",
  /** A nonce we issued, past its lifetime (438). */
  "stale-nonce",
  /** A nonce we never issued, or issued to another 5-tuple (438). */
  "invalid-nonce",
  "unknown-user",
  /** A TURN REST username whose timestamp has passed. */
  "expired",
  /** A username the credential store cannot parse. */
  "malformed",
  /** MESSAGE-INTEGRITY does not verify with any key: a wrong password. */
  "bad-integrity",
  /**
   * A pinned username signed as a plain REST one (401, like a wrong password): minted before
   * pinned credentials had a key of their own, or by a generic REST service asked for that name.
   */
  "legacy-pinned",
  /** PASSWORD-ALGORITHM(S) bid-down or an algorithm we do not offer (RFC 8489 §9.2.4). */
  "bad-algorithm",
  /**
   * Another principal than the one that created the allocation (441), or a ConnectionBind for
   * another principal's connection (400, like an unknown CONNECTION-ID).
   */
  "wrong-credentials",
  /** Valid credentials of a user on the revocation list (403). */
  "revoked",
] as const;
export type AuthFailureReason = (typeof AUTH_FAILURE_REASONS)[number];

export interface ServerStats {
  allocationsActive: number;
  allocationsCreated: number;
  permissionsActive: number;
  channelsActive: number;
  /** EVEN-PORT reservations held (RFC 8656 §7.2): each counts in its principal's quota. */
  reservationsActive: number;
  /** 401 challenges sent to requests without credentials: the normal first round trip. */
  challenges: number;
  /**
   * Requests authenticated with old-scheme pinned credentials inside the transition window
   * (SharedSecretCredentials legacyPinnedUntil): a runtime warns while this grows.
   */
  legacyPinnedAccepted: number;
  /** Times an RFC 6062 pipe was told to pause reading for a bandwidth limit (chargeConnectionBytes). */
  bandwidthPauses: number;
  readonly drops: Record<DropReason, number>;
  readonly authFailures: Record<AuthFailureReason, number>;
}

export function createServerStats(): ServerStats {
  const drops = {} as Record<DropReason, number>;
  for (const r of DROP_REASONS) drops[r] = 0;
  const authFailures = {} as Record<AuthFailureReason, number>;
  for (const r of AUTH_FAILURE_REASONS) authFailures[r] = 0;
  return {
    allocationsActive: 0,
    allocationsCreated: 0,
    permissionsActive: 0,
    channelsActive: 0,
    reservationsActive: 0,
    challenges: 0,
    legacyPinnedAccepted: 0,
    bandwidthPauses: 0,
    drops,
    authFailures,
  };
}
