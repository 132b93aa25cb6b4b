// Where the long-term key for a USERNAME comes from (RFC 8489 §9.2, RFC 8656 §9.2).
//
// Key rotation and MESSAGE-INTEGRITY: with shared-secret (TURN REST) credentials the key
// depends on which secret minted the username, and the only way to know is to try each
// candidate key against the message's MESSAGE-INTEGRITY. So a successful lookup returns
// `keys`, every candidate in preference order (current secret first), and `key`, which
// is keys[0] for callers with one store and one secret. The server verifies with each
// entry of `keys` in turn and signs its response with the one that matched.

import { longTermKeyMd5, longTermKeySha256 } from "./long-term-key.js";
import { parseRestUsername, restPassword } from "./rest-credentials.js";

/** PASSWORD-ALGORITHM the key is for, RFC 8489 §18.5: MD5 (0x0001) or SHA-256 (0x0002). */
export type PasswordAlgorithmName = "md5" | "sha256";

export type KeyLookup =
  | {
      readonly ok: true;
      /** keys[0]. */
      readonly key: Uint8Array;
      /** Every candidate key (one per secret under rotation); try each for MESSAGE-INTEGRITY. */
      readonly keys: readonly Uint8Array[];
      /** Whom allocation quotas count against (RFC 8656 §7.2 "per-user" limits). */
      readonly quotaUser: string;
    }
  | { readonly ok: false; readonly reason: "unknown-user" | "expired" | "malformed" };

export interface CredentialStore {
  /**
   * The long-term key(s) for `username` in `realm`. `nowUnixSeconds` is wall-clock time
   * (TURN REST expiry is a Unix timestamp); `algorithm` defaults to "md5". Never throws.
   */
  lookup(
    username: string,
    realm: string,
    nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
  ): KeyLookup;
}

const UNKNOWN_USER: KeyLookup = { ok: false, reason: "unknown-user" };
const EXPIRED: KeyLookup = { ok: false, reason: "expired" };
const MALFORMED: KeyLookup = { ok: false, reason: "malformed" };

function deriveKey(
  algorithm: PasswordAlgorithmName | undefined,
  username: string,
  realm: string,
  password: string,
): Uint8Array {
  return algorithm === "sha256"
    ? longTermKeySha256(username, realm, password)
    : longTermKeyMd5(username, realm, password);
}

/**
 * Fixed username/password pairs (coturn's `user=name:password`). Keys are derived once per
 * (realm, algorithm) and cached; the REALM attribute is client-supplied, so only a few
 * realms are cached and any further realm is derived on the fly instead of growing memory.
 */
export class StaticCredentials implements CredentialStore {
  static readonly #MAX_CACHED_REALMS = 4;
  readonly #passwords = new Map<string, string>();
  readonly #keysByRealm = new Map<string, Map<string, KeyLookup>>();

  constructor(users: Iterable<readonly [string, string]>) {
    for (const [name, password] of users) this.#passwords.set(name, password);
  }

  lookup(
    username: string,
    realm: string,
    _nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
  ): KeyLookup {
    if (typeof username !== "string" || typeof realm !== "string") return MALFORMED;
    const password = this.#passwords.get(username);
    if (password === undefined) return UNKNOWN_USER;
    const cacheKey = `${algorithm === "sha256" ? "s" : "m"}\u0000${realm}`;
    let cache = this.#keysByRealm.get(cacheKey);
    if (cache === undefined && this.#keysByRealm.size < StaticCredentials.#MAX_CACHED_REALMS) {
      cache = new Map();
      this.#keysByRealm.set(cacheKey, cache);
    }
    const cached = cache?.get(username);
    if (cached !== undefined) return cached;
    const key = deriveKey(algorithm, username, realm, password);
    const result: KeyLookup = { ok: true, key, keys: [key], quotaUser: username };
    cache?.set(username, result);
    return result;
  }
}

/**
 * TURN REST credentials checked against one or more shared secrets (rotation: list the
 * new secret first, keep the old one until every minted username has expired). Derived
 * keys are cached in a Map bounded to `maxCacheEntries`, evicting the oldest insertion,
 * because usernames are attacker-chosen and each derivation costs an HMAC and a hash per
 * secret.
 */
export class SharedSecretCredentials implements CredentialStore {
  readonly #secrets: readonly string[];
  readonly #maxCacheEntries: number;
  readonly #cache = new Map<string, KeyLookup>();

  constructor(secrets: readonly string[], options: { maxCacheEntries?: number } = {}) {
    this.#secrets = [...secrets];
    const max = options.maxCacheEntries ?? 10_000;
    this.#maxCacheEntries = Number.isFinite(max) && max >= 0 ? Math.floor(max) : 10_000;
  }

  lookup(
    username: string,
    realm: string,
    nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
  ): KeyLookup {
    if (typeof realm !== "string") return MALFORMED;
    const parsed = parseRestUsername(username);
    if (parsed === undefined) return MALFORMED;
    // draft-uberti-behave-turn-rest §2.2: the username carries its own expiry.
    if (!(parsed.expiry > nowUnixSeconds)) return EXPIRED;
    if (this.#secrets.length === 0) return UNKNOWN_USER;
    const cacheKey = `${algorithm === "sha256" ? "s" : "m"}\u0000${realm}\u0000${username}`;
    const cached = this.#cache.get(cacheKey);
    if (cached !== undefined) return cached;
    const keys = this.#secrets.map((secret) =>
      deriveKey(algorithm, username, realm, restPassword(secret, username)),
    );
    const result: KeyLookup = {
      ok: true,
      key: keys[0] as Uint8Array,
      keys,
      quotaUser: parsed.user ?? username,
    };
    if (this.#maxCacheEntries > 0) {
      if (this.#cache.size >= this.#maxCacheEntries) {
        // Map iterates in insertion order: the first key is the oldest entry.
        const oldest = this.#cache.keys().next();
        if (oldest.done !== true) this.#cache.delete(oldest.value);
      }
      this.#cache.set(cacheKey, result);
    }
    return result;
  }

  /** Number of cached key sets (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }
}

/**
 * Several stores, e.g. static users and REST credentials. The first store that knows
 * the user (answers ok or "expired") wins. When none does, the answer is "unknown-user"
 * if any store answered that, else "malformed".
 */
export class CombinedCredentials implements CredentialStore {
  readonly #stores: readonly CredentialStore[];

  constructor(stores: readonly CredentialStore[]) {
    this.#stores = [...stores];
  }

  lookup(
    username: string,
    realm: string,
    nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
  ): KeyLookup {
    let sawUnknown = false;
    for (const store of this.#stores) {
      const result = store.lookup(username, realm, nowUnixSeconds, algorithm);
      if (result.ok || result.reason === "expired") return result;
      if (result.reason === "unknown-user") sawUnknown = true;
    }
    return sawUnknown || this.#stores.length === 0 ? UNKNOWN_USER : MALFORMED;
  }
}
