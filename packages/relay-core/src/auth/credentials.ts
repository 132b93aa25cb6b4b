// Where the long-term key for a USERNAME comes from (RFC 8489 §9.2, RFC 8656 §5).
//
// Key rotation and MESSAGE-INTEGRITY: with shared-secret (TURN REST) credentials the key
// depends on which secret minted the username, and the only way to know is to try each
// candidate key against the message's MESSAGE-INTEGRITY. So the server hands the store a
// `verify` function: the lookup answers with the key that verified (the server signs its
// response with it), or "bad-integrity".
//
// Caching: usernames arrive before anything is authenticated, so a store caches a derived key
// only once MESSAGE-INTEGRITY verified with it. Otherwise every stranger's made-up username
// would buy a cache entry (a 60 KB username each, before the server refused long ones).
//
// Principals: a static user "alice" and the TURN REST user "<expiry>:alice" are different
// people (one knows a password, the other holds tokens minted by whoever has the shared
// secret), so lookups name them "static:alice" and "rest:alice". A REST username without a
// user part ("<expiry>") names nobody but itself: "rest-expiry:<expiry>", a kind of its own,
// so it never shares a principal with the REST user whose name happens to be those digits.
// Allocation ownership (RFC 8656 §5: requests about an allocation come from the user that
// created it), the per-user quotas and the revocation list (revocation.ts) compare
// principals, never bare names.

import { InsertionOrderedMap } from "../insertion-order.js";
import { longTermKeyMd5, longTermKeySha256, userHash } from "./long-term-key.js";
import { PIN_MARKER, pinnedCredentialSecret } from "./pinned-username.js";
import { parseRestUsername, restPassword } from "./rest-credentials.js";

/** PASSWORD-ALGORITHM the key is for, RFC 8489 §18.5: MD5 (0x0001) or SHA-256 (0x0002). */
export type PasswordAlgorithmName = "md5" | "sha256";

/**
 * Who a request speaks for: "static:<name>" for --user accounts, "rest:<user>" for TURN REST
 * credentials with a <user> part (pin included: "rest:acme-pg;port=40007"), and
 * "rest-expiry:<expiry>" for those without one. Branded so a bare username can never be
 * compared with one by mistake.
 */
export type Principal = string & { readonly __principal: unique symbol };

export const STATIC_PRINCIPAL = "static:";
export const REST_PRINCIPAL = "rest:";
export const EXPIRY_ONLY_PRINCIPAL = "rest-expiry:";

export function staticPrincipal(name: string): Principal {
  return `${STATIC_PRINCIPAL}${name}` as Principal;
}

export function restPrincipal(user: string): Principal {
  return `${REST_PRINCIPAL}${user}` as Principal;
}

/** TURN REST credentials "<expiry>" (no user part): the username is the only name they have. */
export function expiryOnlyPrincipal(username: string): Principal {
  return `${EXPIRY_ONLY_PRINCIPAL}${username}` as Principal;
}

export type KeyLookup =
  | {
      readonly ok: true;
      /** The key that verified (with `verify`), else keys[0]. */
      readonly key: Uint8Array;
      /** Every candidate key (one per secret under rotation). */
      readonly keys: readonly Uint8Array[];
      /** Who owns what this request creates, and whose quota it counts against. */
      readonly principal: Principal;
      /**
       * Pinned credentials signed the old way (as plain REST ones), accepted only inside the
       * store's transition window (SharedSecretCredentials, legacyPinnedUntil).
       */
      readonly legacyPinned?: true;
    }
  | {
      readonly ok: false;
      /**
       * "legacy-pinned": a pinned username signed as a plain REST one (old scheme, or a generic
       * REST minting service asked for that name), refused like a wrong password.
       */
      readonly reason: "unknown-user" | "expired" | "malformed" | "bad-integrity" | "legacy-pinned";
    };

/** True when the message's MESSAGE-INTEGRITY(-SHA256) verifies with `key`. */
export type IntegrityCheck = (key: Uint8Array) => boolean;

export interface CredentialStore {
  /**
   * The long-term key for `username` in `realm`. `nowUnixSeconds` is wall-clock time (TURN
   * REST expiry is a Unix timestamp); `algorithm` defaults to "md5". With `verify` the answer
   * is the candidate key that verifies, or "bad-integrity", and only then may the store cache
   * it; without, the candidates are derived and nothing is cached. Never throws.
   */
  lookup(
    username: string,
    realm: string,
    nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
    verify?: IntegrityCheck,
  ): KeyLookup;
  /**
   * The username whose USERHASH (RFC 8489 §14.4: SHA-256 of "username:realm") is `userhash`,
   * for stores that know their usernames in advance; undefined when none has it. A store
   * without this method cannot serve username anonymity (TURN REST usernames are minted
   * elsewhere and cannot be found from their hash).
   */
  usernameForHash?(userhash: Uint8Array, realm: string): string | undefined;
}

const UNKNOWN_USER: KeyLookup = { ok: false, reason: "unknown-user" };
const EXPIRED: KeyLookup = { ok: false, reason: "expired" };
const MALFORMED: KeyLookup = { ok: false, reason: "malformed" };
const BAD_INTEGRITY: KeyLookup = { ok: false, reason: "bad-integrity" };
const LEGACY_PINNED: KeyLookup = { ok: false, reason: "legacy-pinned" };

/** `verified` of a cache entry, answering with the entry's own object for the key that verified. */
function verifiedCached(c: CachedCandidates, verify: IntegrityCheck | undefined): KeyLookup {
  if (verify === undefined) {
    const candidates: RestCandidates = { keys: c.keys, principal: c.principal, expiry: c.expiry };
    return verified(candidates, verify);
  }
  for (let i = 0; i < c.keys.length; i++) {
    const key = c.keys[i]!;
    if (verify(key)) return c.answers[i]!;
  }
  return BAD_INTEGRITY;
}

/** `candidates` checked with `verify`: the one that verifies first (no `verify`: keys[0]). */
function verified(
  candidates: { readonly keys: readonly Uint8Array[]; readonly principal: Principal },
  verify: IntegrityCheck | undefined,
): KeyLookup {
  if (verify === undefined) return { ok: true, key: candidates.keys[0]!, ...candidates };
  for (const key of candidates.keys) {
    if (verify(key))
      return { ok: true, key, keys: candidates.keys, principal: candidates.principal };
  }
  return BAD_INTEGRITY;
}

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
  readonly #keysByRealm = new Map<string, Map<string, Uint8Array>>();
  /** USERHASH (hex) -> username, per realm, built when a realm is first asked for. */
  readonly #namesByRealm = new Map<string, Map<string, string>>();

  constructor(users: Iterable<readonly [string, string]>) {
    for (const [name, password] of users) this.#passwords.set(name, password);
  }

  usernameForHash(userhash: Uint8Array, realm: string): string | undefined {
    if (!(userhash instanceof Uint8Array) || userhash.length !== 32) return undefined;
    if (typeof realm !== "string") return undefined;
    let names = this.#namesByRealm.get(realm);
    if (names === undefined) {
      names = new Map();
      for (const name of this.#passwords.keys()) names.set(hex(userHash(name, realm)), name);
      // As for keys: the REALM may be client-supplied, so only a few realms are kept.
      if (this.#namesByRealm.size < StaticCredentials.#MAX_CACHED_REALMS) {
        this.#namesByRealm.set(realm, names);
      }
    }
    return names.get(hex(userhash));
  }

  lookup(
    username: string,
    realm: string,
    _nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
    verify?: IntegrityCheck,
  ): KeyLookup {
    if (typeof username !== "string" || typeof realm !== "string") return MALFORMED;
    const password = this.#passwords.get(username);
    if (password === undefined) return UNKNOWN_USER;
    // Usernames here are configured ones: caching their keys cannot be grown from outside.
    const cacheKey = `${algorithm === "sha256" ? "s" : "m"}\u0000${realm}`;
    let cache = this.#keysByRealm.get(cacheKey);
    if (cache === undefined && this.#keysByRealm.size < StaticCredentials.#MAX_CACHED_REALMS) {
      cache = new Map();
      this.#keysByRealm.set(cacheKey, cache);
    }
    let key = cache?.get(username);
    if (key === undefined) {
      key = deriveKey(algorithm, username, realm, password);
      cache?.set(username, key);
    }
    return verified({ keys: [key], principal: staticPrincipal(username) }, verify);
  }
}

/** The candidate keys of one username, as SharedSecretCredentials caches them. */
interface RestCandidates {
  readonly keys: readonly Uint8Array[];
  readonly principal: Principal;
  /** The username's own expiry (Unix seconds): no use keeping its keys after that. */
  readonly expiry: number;
}

/** A cache entry: the keys of one username for one realm and algorithm. */
interface CachedCandidates extends RestCandidates {
  readonly realm: string;
  readonly sha256: boolean;
  /**
   * The answer for keys[i]: one object per key, not one per request. Made with the entry (whose
   * first request verified one of the keys), not on a key's first hit: an empty array
   * filled later was read out of bounds and came in two maps (empty, then holding objects), and
   * V8 deoptimized verifiedCached for either ("out of bounds", "wrong map") while usernames kept
   * arriving (churn, bench/README "fourth pass").
   */
  readonly answers: readonly KeyLookup[];
}

export interface SharedSecretOptions {
  /** Verified key sets kept (default 10,000); 0 keeps none. */
  readonly maxCacheEntries?: number;
  /**
   * Until this instant (Unix seconds), pinned credentials signed the old way, with the token
   * itself as for plain REST credentials, are still accepted (counted, KeyLookup.legacyPinned)
   * so that those handed out before the upgrade keep working while they are re-minted. Default:
   * never (they are refused like a wrong password).
   */
  readonly legacyPinnedUntil?: number;
}

/**
 * TURN REST credentials checked against one or more shared secrets (rotation: list the new
 * secret first, keep the old one until every minted username has expired; `setSecrets`
 * replaces the list at run time). Keys that verified are cached (each derivation costs an HMAC
 * and a hash per secret) in a Map bounded to `maxCacheEntries`, evicting the oldest insertion.
 * Only verified usernames get in, and the server refuses USERNAMEs of 509 bytes or more before
 * asking (RFC 8489 §14.3), so the cache holds at most `maxCacheEntries` usernames minted with
 * a secret, each under 509 bytes.
 *
 * Pinned usernames ("<expiry>:<user>;port=<P>", pinned-username.ts) verify only against the
 * pinned-credential secret derived from each shared secret (pinnedCredentialSecret): a generic
 * TURN REST minting service holding the token signs with the token itself, and what it signs
 * for a pinned-looking name is refused ("legacy-pinned", a 401 like a wrong password).
 */
export class SharedSecretCredentials implements CredentialStore {
  #secrets: readonly string[] = [];
  /** pinnedCredentialSecret of each secret, in the same order. */
  #pinnedSecrets: readonly string[] = [];
  readonly #maxCacheEntries: number;
  readonly #legacyPinnedUntil: number;
  /**
   * By username alone, its realm and algorithm in the entry: the key is the string the request
   * decoded, hashed once, where a composite key was a new string built and hashed per request
   * (bench/README.md, "2026-12-07, third pass"). A username asked for under another realm or
   * algorithm misses and, once verified, takes the entry over.
   */
  readonly #cache = new InsertionOrderedMap<string, CachedCandidates>();

  constructor(secrets: readonly string[], options: SharedSecretOptions = {}) {
    this.setSecrets(secrets);
    const max = options.maxCacheEntries ?? 10_000;
    this.#maxCacheEntries = Number.isFinite(max) && max >= 0 ? Math.floor(max) : 10_000;
    const until = options.legacyPinnedUntil;
    this.#legacyPinnedUntil = typeof until === "number" && until > 0 ? until : 0;
  }

  /**
   * Replace the shared secrets (the first is the one new credentials are minted with; every
   * one verifies). Keys cached from the old list are forgotten, so credentials of a secret no
   * longer listed stop authenticating at once; live allocations are not this store's concern
   * (the server keeps them until they expire, unless refreshed with valid credentials).
   */
  setSecrets(secrets: readonly string[]): void {
    this.#secrets = secrets.filter((s) => typeof s === "string" && s !== "");
    this.#pinnedSecrets = this.#secrets.map(pinnedCredentialSecret);
    this.#cache.clear();
  }

  lookup(
    username: string,
    realm: string,
    nowUnixSeconds: number,
    algorithm?: PasswordAlgorithmName,
    verify?: IntegrityCheck,
  ): KeyLookup {
    if (typeof realm !== "string") return MALFORMED;
    const sha256 = algorithm === "sha256";
    const cached = this.#cache.get(username);
    if (cached !== undefined && cached.realm === realm && cached.sha256 === sha256) {
      // A cached username parsed, and the cache is empty without secrets (setSecrets clears
      // it): only its expiry is left to check, as below.
      if (!(cached.expiry > nowUnixSeconds)) return EXPIRED;
      return verifiedCached(cached, verify);
    }
    const parsed = parseRestUsername(username);
    if (parsed === undefined) return MALFORMED;
    // draft-uberti-behave-turn-rest §2.2: the username carries its own expiry.
    if (!(parsed.expiry > nowUnixSeconds)) return EXPIRED;
    if (this.#secrets.length === 0) return UNKNOWN_USER;
    const pinned = parsed.user?.includes(PIN_MARKER) === true;
    const candidates: RestCandidates = {
      keys: this.#keys(pinned ? this.#pinnedSecrets : this.#secrets, algorithm, username, realm),
      principal:
        parsed.user === undefined ? expiryOnlyPrincipal(username) : restPrincipal(parsed.user),
      expiry: parsed.expiry,
    };
    const result = verified(candidates, verify);
    if (result.ok && verify !== undefined && this.#maxCacheEntries > 0) {
      // Let a few expired usernames at the front go (insertion order is roughly expiry order
      // for credentials minted with one TTL), so the cache empties once its users have left.
      this.#cache.dropExpiredOldest((old) => old.expiry <= nowUnixSeconds, 4);
      this.#cache.evictOldestAtCap(this.#maxCacheEntries);
      const answers: KeyLookup[] = [];
      for (const key of candidates.keys) {
        answers.push(
          key === result.key
            ? result
            : { ok: true, key, keys: candidates.keys, principal: candidates.principal },
        );
      }
      this.#cache.set(username, { ...candidates, realm, sha256, answers });
    }
    if (result.ok || !pinned || verify === undefined) return result;
    return this.#signedAsPlain(candidates, algorithm, username, realm, nowUnixSeconds, verify);
  }

  /** Number of cached key sets (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  #keys(
    secrets: readonly string[],
    algorithm: PasswordAlgorithmName | undefined,
    username: string,
    realm: string,
  ): Uint8Array[] {
    return secrets.map((secret) =>
      deriveKey(algorithm, username, realm, restPassword(secret, username)),
    );
  }

  /**
   * A pinned username that failed with the pinned keys, tried with the plain ones: signed that
   * way it is an old-scheme pinned credential (accepted during the transition window, never
   * cached, so it stops when the window closes) or a generic minting service's. Either way the
   * answer without the window is the 401 of a wrong password, counted apart.
   */
  #signedAsPlain(
    candidates: RestCandidates,
    algorithm: PasswordAlgorithmName | undefined,
    username: string,
    realm: string,
    nowUnixSeconds: number,
    verify: IntegrityCheck,
  ): KeyLookup {
    const plain = verified(
      { ...candidates, keys: this.#keys(this.#secrets, algorithm, username, realm) },
      verify,
    );
    if (!plain.ok) return BAD_INTEGRITY;
    return nowUnixSeconds < this.#legacyPinnedUntil
      ? { ...plain, legacyPinned: true }
      : LEGACY_PINNED;
  }
}

/**
 * Several stores, e.g. static users and REST credentials. The first store that knows
 * the user (answers ok, "expired", "bad-integrity" or "legacy-pinned") wins. When none does,
 * the answer is "unknown-user" if any store answered that, else "malformed".
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
    verify?: IntegrityCheck,
  ): KeyLookup {
    let sawUnknown = false;
    for (const store of this.#stores) {
      const result = store.lookup(username, realm, nowUnixSeconds, algorithm, verify);
      if (result.ok || (result.reason !== "unknown-user" && result.reason !== "malformed")) {
        return result;
      }
      if (result.reason === "unknown-user") sawUnknown = true;
    }
    return sawUnknown || this.#stores.length === 0 ? UNKNOWN_USER : MALFORMED;
  }

  usernameForHash(userhash: Uint8Array, realm: string): string | undefined {
    for (const store of this.#stores) {
      const name = store.usernameForHash?.(userhash, realm);
      if (name !== undefined) return name;
    }
    return undefined;
  }
}

function hex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}
