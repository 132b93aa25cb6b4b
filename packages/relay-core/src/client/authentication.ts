/**
 * The client side of the long-term credential mechanism (RFC 8489 §9.2.3, §9.2.5): which
 * credentials sign a request, with which REALM, NONCE and key.
 *
 * PASSWORD-ALGORITHMS (§9.2.1): a server that offers a list in its 401/438 gets SHA-256 chosen
 * when it is on the list (else MD5), the chosen one in PASSWORD-ALGORITHM, and its list echoed
 * byte for byte. That echo is the bid-down protection: a list an attacker trimmed on the way
 * comes back trimmed, and the server, comparing with what it sent, refuses the request. A
 * nonce cookie that announces the list while the list is missing was trimmed the same way:
 * such an answer is not retried (§9.2.5).
 *
 * Credentials change over time (TURN REST credentials are renewed before they expire). RFC
 * 8656 §5 lets a server insist on the USERNAME that created an allocation (441 Wrong
 * Credentials); then this allocation's requests go back to the credentials it last accepted.
 */
import type { PasswordAlgorithmName } from "../auth/credentials.js";
import { longTermKeyMd5, longTermKeySha256 } from "../auth/long-term-key.js";
import { nonceSecurityFeatures, SecurityFeature } from "../auth/nonce.js";
import { readBytes, readString } from "../codec/attributes.js";
import { AttributeType, PasswordAlgorithm } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { StunMessageBuilder } from "../codec/message-builder.js";

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

/** What a request was signed with, to check the response's MESSAGE-INTEGRITY (§9.2.5). */
export interface Signature {
  readonly credentials: Credentials;
  readonly key: Uint8Array;
}

/** What a 401 or 438 told the client: how to sign its next requests. */
export interface Challenge {
  readonly realm: string;
  readonly nonce: string;
  /** The server's PASSWORD-ALGORITHMS value, echoed as is; undefined when it sent none. */
  readonly offered: Uint8Array | undefined;
  readonly algorithm: PasswordAlgorithmName;
}

export class RequestSigner {
  #credentials: Credentials;
  /**
   * The credentials that created the allocation (or that the server accepted in a later
   * Refresh), used again after a 441 (RFC 8656 §5).
   */
  #allocationCredentials: Credentials | undefined;
  #pinnedToAllocationCredentials = false;
  #realm: string | undefined;
  /** The control connection's last challenge. */
  #challenge: Challenge | undefined;
  #keyCache:
    | {
        readonly credentials: Credentials;
        readonly realm: string;
        readonly algorithm: PasswordAlgorithmName;
        readonly key: Uint8Array;
      }
    | undefined;

  constructor(credentials: Credentials, realm: string | undefined) {
    this.#credentials = credentials;
    this.#realm = realm;
  }

  get realm(): string | undefined {
    return this.#realm;
  }

  /** True once a 441 sent this allocation's requests back to the credentials it accepted. */
  get usesAllocationCredentials(): boolean {
    return this.#pinnedToAllocationCredentials;
  }

  /** Renewed credentials: the next request uses these. */
  setCredentials(credentials: Credentials): void {
    this.#credentials = credentials;
    this.#pinnedToAllocationCredentials = false;
  }

  /** A new allocation is being made: none created by earlier credentials any more. */
  restart(): void {
    this.#allocationCredentials = undefined;
    this.#pinnedToAllocationCredentials = false;
  }

  /** The Allocate succeeded, signed with `signature` (or unsigned, by a server without auth). */
  allocated(signature: Signature | undefined): void {
    this.#allocationCredentials = signature?.credentials ?? this.#credentials;
    this.#pinnedToAllocationCredentials = false;
  }

  /**
   * The server accepted a Refresh signed with `signature`: credentials it took for this
   * allocation (renewed REST credentials, say) are the ones to fall back to after a 441.
   */
  accepted(signature: Signature | undefined): void {
    if (signature !== undefined) this.#allocationCredentials = signature.credentials;
  }

  /**
   * 441 to a request signed with `signature`: go back to the allocation's credentials. False
   * when there is nothing to go back to (no allocation, or the request used them already).
   */
  fallBackToAllocationCredentials(signature: Signature | undefined): boolean {
    if (
      this.#pinnedToAllocationCredentials ||
      this.#allocationCredentials === undefined ||
      signature?.credentials === this.#allocationCredentials
    ) {
      return false;
    }
    this.#pinnedToAllocationCredentials = true;
    return true;
  }

  /**
   * What a 401/438 asks the next request to be signed with; undefined when it cannot be
   * answered: no NONCE, no REALM known, or a PASSWORD-ALGORITHMS list announced by the nonce
   * cookie but missing, or naming no algorithm we know (§9.2.5).
   */
  readChallenge(msg: StunMessage): Challenge | undefined {
    const nonce = readString(msg, AttributeType.Nonce);
    const realm = readString(msg, AttributeType.Realm) ?? this.#realm;
    if (nonce === undefined || realm === undefined) return undefined;
    const offered = readBytes(msg, AttributeType.PasswordAlgorithms);
    if (offered === undefined) {
      const features = nonceSecurityFeatures(nonce) ?? 0;
      if ((features & SecurityFeature.PasswordAlgorithms) !== 0) return undefined;
      return { realm, nonce, offered: undefined, algorithm: "md5" };
    }
    const algorithm = chooseAlgorithm(offered);
    if (algorithm === undefined) return undefined;
    return { realm, nonce, offered: Uint8Array.from(offered), algorithm };
  }

  /** Sign the control connection's next requests as `challenge` says. */
  learn(challenge: Challenge): void {
    this.#challenge = challenge;
    this.#realm = challenge.realm;
  }

  /** A REALM learnt on another connection (RFC 6062 §4.3), if none is known yet. */
  learnRealm(realm: string): void {
    if (this.#realm === undefined) this.#realm = realm;
  }

  /**
   * RFC 8489 §9.2.3: USERNAME, REALM, NONCE, PASSWORD-ALGORITHM(S) and MESSAGE-INTEGRITY, once
   * the server told us its realm and a nonce (undefined: nothing added). `current`: the
   * current credentials whatever a 441 said (Allocate, ConnectionBind); else the allocation's
   * when the server insisted on them.
   */
  sign(
    b: StunMessageBuilder,
    current: boolean,
    challenge: Challenge | undefined = this.#challenge,
  ): Signature | undefined {
    if (challenge === undefined) return undefined;
    const credentials =
      !current && this.#pinnedToAllocationCredentials && this.#allocationCredentials
        ? this.#allocationCredentials
        : this.#credentials;
    const key = this.#key(credentials, challenge.realm, challenge.algorithm);
    b.string(AttributeType.Username, credentials.username)
      .string(AttributeType.Realm, challenge.realm)
      .string(AttributeType.Nonce, challenge.nonce);
    if (challenge.offered !== undefined) {
      b.passwordAlgorithm(
        challenge.algorithm === "sha256" ? PasswordAlgorithm.Sha256 : PasswordAlgorithm.Md5,
      );
      b.bytes(AttributeType.PasswordAlgorithms, challenge.offered);
    }
    b.messageIntegrity(key);
    return { credentials, key };
  }

  #key(credentials: Credentials, realm: string, algorithm: PasswordAlgorithmName): Uint8Array {
    const c = this.#keyCache;
    if (
      c !== undefined &&
      c.credentials === credentials &&
      c.realm === realm &&
      c.algorithm === algorithm
    ) {
      return c.key;
    }
    const { username, password } = credentials;
    const key =
      algorithm === "sha256"
        ? longTermKeySha256(username, realm, password)
        : longTermKeyMd5(username, realm, password);
    this.#keyCache = { credentials, realm, algorithm, key };
    return key;
  }
}

/**
 * RFC 8489 §14.11: PASSWORD-ALGORITHMS is a list of (algorithm, parameters length, parameters
 * padded to 4 bytes). SHA-256 when offered, else MD5; undefined when neither is (or the list
 * is malformed).
 */
function chooseAlgorithm(list: Uint8Array): PasswordAlgorithmName | undefined {
  let md5 = false;
  let sha256 = false;
  for (let at = 0; at < list.length; ) {
    if (at + 4 > list.length) return undefined;
    const algorithm = (list[at]! << 8) | list[at + 1]!;
    const length = (list[at + 2]! << 8) | list[at + 3]!;
    at += 4 + ((length + 3) & ~3);
    if (at > list.length) return undefined;
    if (algorithm === PasswordAlgorithm.Sha256) sha256 = true;
    else if (algorithm === PasswordAlgorithm.Md5) md5 = true;
  }
  return sha256 ? "sha256" : md5 ? "md5" : undefined;
}
