/**
 * Who a request speaks for: the long-term credential mechanism (RFC 8489 §9.2) with stateless
 * nonces (auth/nonce.ts), PASSWORD-ALGORITHMS negotiation and its bid-down protection (§9.2.1,
 * §9.2.4), the credential stores and their principals (auth/credentials.ts: static users,
 * TURN REST usernames, pinned ones), and the revocation list.
 *
 * Username anonymity (§9.2.1, §14.4): a client that asks for it, by sending USERHASH in place
 * of USERNAME, gets nonces whose cookie offers it, and its USERHASH is looked up among the
 * usernames the credential store knows in advance (static users; a TURN REST username is
 * minted elsewhere and has no entry to be found by). Other clients see no change: the
 * feature is not announced to them, since a client that honours the bit must then hide a
 * username the relay may have no way to find.
 */

import { constantTimeEqual } from "../auth/constant-time.js";
import type {
  CredentialStore,
  KeyLookup,
  PasswordAlgorithmName,
  Principal,
} from "../auth/credentials.js";
import { type NonceCheck, NonceIssuer, SecurityFeature } from "../auth/nonce.js";
import { RevocationList } from "../auth/revocation.js";
import {
  attributeLength,
  hasAttribute,
  hasValidString,
  readBytes,
  readPasswordAlgorithm,
  readString,
  verifyMessageIntegrity,
  verifyMessageIntegritySha256,
} from "../codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, PasswordAlgorithm } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { ClientEndpoint } from "./allocation.js";
import type { Responder, Signer } from "./responses.js";
import type { AuthFailureReason, ServerStats } from "./stats.js";
import type { Refusal } from "./types.js";

/** RFC 8489 §14.3: USERNAME is "fewer than 509 bytes". */
const MAX_USERNAME_BYTES = 509;
/** RFC 8489 §14.9, §14.10: REALM and NONCE are "fewer than 763 bytes" (128 characters). */
const MAX_REALM_NONCE_BYTES = 763;
/** PASSWORD-ALGORITHMS value we offer: MD5 and SHA-256, no parameters (RFC 8489 §14.11). */
const OFFERED_PASSWORD_ALGORITHMS = Uint8Array.of(0, 1, 0, 0, 0, 2, 0, 0);

/** A request whose MESSAGE-INTEGRITY verified with a known user's key. */
export interface Authenticated extends Signer {
  readonly username: string;
  readonly principal: Principal;
}

export interface AuthenticatorOptions {
  readonly realm: string;
  readonly credentials: CredentialStore;
  /** Server-private bytes the nonces are MACed with. */
  readonly secret: Uint8Array;
  readonly nonceLifetimeSeconds: number;
  /** Wall clock = `now + unixTimeOffsetMs` (TURN REST usernames expire on it). */
  readonly unixTimeOffsetMs: number;
  /** The revocation list's entries (auth/revocation.ts). */
  readonly revokedUsers: Iterable<string>;
}

export class Authenticator {
  readonly #realm: string;
  #credentials: CredentialStore;
  readonly #nonces: NonceIssuer;
  /** Nonces whose cookie offers username anonymity too: for clients that sent USERHASH. */
  readonly #anonymousNonces: NonceIssuer;
  readonly #responder: Responder;
  readonly #stats: ServerStats;
  #unixTimeOffsetMs: number;
  #revoked: RevocationList;
  /**
   * The request whose MESSAGE-INTEGRITY the store's `lookup` checks, for the duration of that
   * synchronous call: the two checks below are made once, not a closure over each request.
   */
  #verifying: StunMessage | undefined;
  readonly #verifySha1 = (key: Uint8Array): boolean =>
    this.#verifying !== undefined && verifyMessageIntegrity(this.#verifying, key);
  readonly #verifySha256 = (key: Uint8Array): boolean =>
    this.#verifying !== undefined && verifyMessageIntegritySha256(this.#verifying, key);

  constructor(options: AuthenticatorOptions, responder: Responder, stats: ServerStats) {
    this.#realm = options.realm;
    this.#credentials = options.credentials;
    this.#nonces = new NonceIssuer(
      options.secret,
      options.nonceLifetimeSeconds * 1000,
      SecurityFeature.PasswordAlgorithms,
    );
    this.#anonymousNonces = new NonceIssuer(
      options.secret,
      options.nonceLifetimeSeconds * 1000,
      SecurityFeature.PasswordAlgorithms | SecurityFeature.UsernameAnonymity,
    );
    this.#unixTimeOffsetMs = options.unixTimeOffsetMs;
    this.#revoked = new RevocationList(options.revokedUsers);
    this.#responder = responder;
    this.#stats = stats;
  }

  /** Replace the credential store (reload, secret rotation); nonces stay valid. */
  setCredentials(credentials: CredentialStore): void {
    this.#credentials = credentials;
  }

  setUnixTimeOffset(offsetMs: number): void {
    this.#unixTimeOffsetMs = offsetMs;
  }

  /** Replace the revocation list (entries as auth/revocation.ts reads them). */
  setRevokedUsers(entries: Iterable<string>): void {
    this.#revoked = new RevocationList(entries);
  }

  get hasRevokedUsers(): boolean {
    return this.#revoked.size > 0;
  }

  /** True when the revocation list names `principal`. */
  isRevoked(principal: Principal): boolean {
    return this.#revoked.revokes(principal);
  }

  /**
   * RFC 8489 §9.2.4: the credentials of a request. Returns undefined when a challenge (401,
   * 438) or an error (400) was sent instead.
   */
  authenticate(endpoint: ClientEndpoint, msg: StunMessage, now: number): Authenticated | undefined {
    const hasSha1 = hasAttribute(msg, AttributeType.MessageIntegrity);
    const hasSha256 = hasAttribute(msg, AttributeType.MessageIntegritySha256);
    if (!hasSha1 && !hasSha256) {
      this.#stats.challenges++;
      this.#challenge(endpoint, msg, ErrorCode.Unauthorized, now);
      return undefined;
    }
    // RFC 8489 §14.3, §14.9, §14.10: USERNAME is under 509 bytes, REALM and NONCE under 763.
    // Longer ones are refused here, before the nonce's HMAC or any key derivation: a stranger
    // must not make the relay hash (or remember) 60 KB usernames.
    if (
      attributeLength(msg, AttributeType.Username) >= MAX_USERNAME_BYTES ||
      attributeLength(msg, AttributeType.Realm) >= MAX_REALM_NONCE_BYTES ||
      attributeLength(msg, AttributeType.Nonce) >= MAX_REALM_NONCE_BYTES
    ) {
      this.#stats.authFailures["oversized-attribute"]++;
      this.#responder.error(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest, now, {
        reason: "oversized-attribute",
      });
      return undefined;
    }
    const named = readString(msg, AttributeType.Username);
    const userhash = readBytes(msg, AttributeType.Userhash);
    // REALM must be there (and text), but the key is derived with the server's own realm, so
    // its value is never read into a string.
    const hasRealm = hasValidString(msg, AttributeType.Realm);
    const nonce = readString(msg, AttributeType.Nonce);
    if ((named === undefined && userhash === undefined) || !hasRealm || nonce === undefined) {
      this.#stats.authFailures["missing-attributes"]++;
      this.#responder.error(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest, now, {
        reason: "missing-attributes",
      });
      return undefined;
    }
    if (named === undefined && userhash!.length !== 32) {
      // RFC 8489 §14.4: USERHASH is a SHA-256, 32 bytes.
      this.#stats.authFailures.malformed++;
      this.#responder.error(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest, now, {
        reason: "malformed",
      });
      return undefined;
    }
    const nonceState = this.#checkNonce(nonce, now, endpoint);
    if (nonceState !== "valid") {
      const reason = nonceState === "stale" ? "stale-nonce" : "invalid-nonce";
      this.#stats.authFailures[reason]++;
      this.#challenge(endpoint, msg, ErrorCode.StaleNonce, now, refusal(reason, named));
      return undefined;
    }
    const algorithm = this.#passwordAlgorithm(msg);
    if (algorithm === undefined) {
      this.#stats.authFailures["bad-algorithm"]++;
      this.#responder.error(
        endpoint,
        msg.method,
        msg.transactionId,
        ErrorCode.BadRequest,
        now,
        refusal("bad-algorithm", named),
      );
      return undefined;
    }
    // §9.2.4: a USERHASH names a user only through the usernames the store knows.
    const username = named ?? this.#credentials.usernameForHash?.(userhash!, this.#realm);
    if (username === undefined) {
      this.#stats.authFailures["unknown-user"]++;
      this.#challenge(endpoint, msg, ErrorCode.Unauthorized, now, refusal("unknown-user", named));
      return undefined;
    }
    const unixSeconds = Math.floor((now + this.#unixTimeOffsetMs) / 1000);
    // The store checks each candidate key (one per secret under rotation) against the
    // message, and caches a key only once it verified (credentials.ts).
    this.#verifying = msg;
    let lookup: KeyLookup;
    try {
      lookup = this.#credentials.lookup(
        username,
        this.#realm,
        unixSeconds,
        algorithm,
        hasSha256 ? this.#verifySha256 : this.#verifySha1,
      );
    } finally {
      this.#verifying = undefined;
    }
    if (!lookup.ok) {
      this.#stats.authFailures[lookup.reason]++;
      this.#challenge(endpoint, msg, ErrorCode.Unauthorized, now, refusal(lookup.reason, username));
      return undefined;
    }
    if (lookup.legacyPinned === true) this.#stats.legacyPinnedAccepted++;
    return { username, key: lookup.key, principal: lookup.principal, sha256: hasSha256 };
  }

  /**
   * Authentic credentials of a revoked user (the platform withdrew them before they expire):
   * true, counted. The caller answers 403, not 401, so the client does not retry the same
   * credentials as if a nonce were the problem.
   */
  refusesRevoked(auth: Authenticated): boolean {
    if (!this.isRevoked(auth.principal)) return false;
    this.#stats.authFailures.revoked++;
    return true;
  }

  /**
   * RFC 8489 §9.2.4: PASSWORD-ALGORITHM must be one we offered, and the client must echo our
   * PASSWORD-ALGORITHMS unchanged (bid-down protection). Neither present: MD5 (RFC 5389
   * clients). Undefined: refused.
   */
  #passwordAlgorithm(msg: StunMessage): PasswordAlgorithmName | undefined {
    const chosen = readPasswordAlgorithm(msg);
    const echoed = readBytes(msg, AttributeType.PasswordAlgorithms);
    if (chosen === undefined && echoed === undefined) return "md5";
    if (
      chosen === undefined ||
      echoed === undefined ||
      !constantTimeEqual(echoed, OFFERED_PASSWORD_ALGORITHMS) ||
      (chosen !== PasswordAlgorithm.Md5 && chosen !== PasswordAlgorithm.Sha256)
    ) {
      return undefined;
    }
    return chosen === PasswordAlgorithm.Sha256 ? "sha256" : "md5";
  }

  /** A nonce of either kind: valid, stale, or not one of ours (for this client). */
  #checkNonce(nonce: string, now: number, endpoint: ClientEndpoint): NonceCheck {
    const state = this.#nonces.check(nonce, now, nonceBinding(endpoint));
    if (state !== "invalid") return state;
    return this.#anonymousNonces.check(nonce, now, nonceBinding(endpoint));
  }

  /**
   * 401 or 438 with REALM, a fresh NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4); the nonce
   * offers username anonymity to a request that carried USERHASH.
   */
  #challenge(
    endpoint: ClientEndpoint,
    msg: StunMessage,
    code: number,
    now: number,
    why?: Refusal,
  ): void {
    const issuer = hasAttribute(msg, AttributeType.Userhash) ? this.#anonymousNonces : this.#nonces;
    const b = this.#responder
      .builder(msg.method, MessageClass.ErrorResponse, msg.transactionId)
      .errorCode(code)
      .string(AttributeType.Realm, this.#realm)
      .string(AttributeType.Nonce, issuer.issue(now, nonceBinding(endpoint)))
      .bytes(AttributeType.PasswordAlgorithms, OFFERED_PASSWORD_ALGORITHMS);
    this.#responder.send(endpoint, b, undefined, msg.method, code, now, why);
  }
}

/** An authentication failure for the log: the reason, and the USERNAME when there was one. */
function refusal(reason: AuthFailureReason, username: string | undefined): Refusal {
  return username === undefined ? { reason } : { reason, username };
}

/**
 * Nonces are bound to the client's IP address, not its port: RFC 6062 §5.4 data connections
 * come from new ports and reuse the control connection's nonce (coturn's uclient does), and a
 * NAT rebinding a UDP port should not cost a round trip. A nonce still can't travel to others.
 */
function nonceBinding(endpoint: ClientEndpoint): string {
  return endpoint.address;
}
