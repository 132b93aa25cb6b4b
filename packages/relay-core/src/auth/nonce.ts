// Stateless nonces, RFC 8489 §9.2 and §14.10. A nonce is opaque to the client and has a
// bounded lifetime; making it self-verifying (issue time + MAC) means the server keeps no
// table a flood of Allocate requests could fill.
//
//   "obMatJos2" + base64(security feature bits, 3 bytes)      RFC 8489 §9.2 nonce cookie
//   + base64url(issued-at, 6 bytes, ms of the caller's monotonic clock)
//   + base64url(HMAC-SHA256(secret, everything before || bindTo) truncated to 12 bytes)
//
// 37 printable characters, none of them '"' or '\', so it is a valid quoted-string
// (RFC 8489 §14.10: fewer than 128 characters). bindTo ties the nonce to one client
// identity (e.g. the 5-tuple), so a nonce sniffed on one path cannot be replayed on another.
// What the server answers for "stale" and "invalid" is its business: RFC 8489 §9.2.4 sends
// 438 (Stale Nonce) for any nonce that is "no longer valid", with a fresh nonce.

import { HMAC_INPUT_OFFSET, hmacInput, hmacOfInput } from "../codec/hmac.js";
import { InsertionOrderedMap } from "../insertion-order.js";

/** The nonce cookie magic string, RFC 8489 §9.2. */
export const NONCE_COOKIE = "obMatJos2";

/**
 * STUN Security Features bits (RFC 8489 §18.1). Numbered from the least significant bit,
 * as RFC 8489 erratum 6290 corrects and as the §B.1 test vector's "obMatJos2AAAC"
 * (username anonymity) shows.
 */
export const SecurityFeature = {
  /** The server supports PASSWORD-ALGORITHMS negotiation (bid-down protection, §9.2.1). */
  PasswordAlgorithms: 0x000001,
  /** The server accepts USERHASH instead of USERNAME (§9.2.1). */
  UsernameAnonymity: 0x000002,
} as const;

export type NonceCheck = "valid" | "stale" | "invalid";

const TS_CHARS = 8; // 6 bytes of base64url
const MAC_BYTES = 12;
const MAC_CHARS = 16; // 12 bytes of base64url
const MAX_TIMESTAMP = 2 ** 48 - 1;
/**
 * Nonces known to be authentic for their client, newest kept (see NonceIssuer.check): enough
 * for every setup in flight (a 401, then the Allocate, CreatePermission and ChannelBind or
 * Refreshes within a few round trips), ~100 KB at most.
 */
const KNOWN_NONCES = 1024;
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/**
 * base64url character code -> its 6-bit value, -1 for any other code below 128. A table, not
 * range tests: which ranges a nonce's characters fall in depends on the clock and the MAC, so
 * branches first taken after V8 optimized the nonce check deoptimized it ("Insufficient type
 * feedback for compare operation" in decodeTimestamp, check, #checkNonce under load).
 */
const B64URL_VALUES = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64URL_VALUES[B64URL.charCodeAt(i)] = i;

function base64UrlValue(c: number): number {
  return c < 128 ? B64URL_VALUES[c]! : -1;
}

/**
 * 48-bit integer -> 8 base64url characters (big-endian, 6 bits per character). As two 24-bit
 * halves in integer arithmetic: `%` and `2 ** shift` on a 48-bit double were a floating-point
 * remainder per character, most of the cost of a nonce besides its HMAC (bench/README.md
 * "fifth pass").
 */
function encodeTimestamp(value: number): string {
  const hi = Math.floor(value / 0x1000000);
  const lo = value - hi * 0x1000000;
  return base64UrlQuad(hi) + base64UrlQuad(lo);
}

/** The low 24 bits of `v` as 4 base64url characters, big-endian. */
function base64UrlQuad(v: number): string {
  return (
    B64URL[(v >>> 18) & 63]! + B64URL[(v >>> 12) & 63]! + B64URL[(v >>> 6) & 63]! + B64URL[v & 63]!
  );
}

function decodeTimestamp(text: string, at: number): number {
  let value = 0;
  for (let i = at; i < at + TS_CHARS; i++) {
    const v = base64UrlValue(text.charCodeAt(i));
    if (v < 0) return -1;
    value = value * 64 + v;
  }
  return value;
}

/**
 * The security feature bits a nonce's cookie announces (RFC 8489 §9.2: "obMatJos2" and 24
 * bits in 4 base64 characters), or undefined when it starts with no cookie.
 */
export function nonceSecurityFeatures(nonce: string): number | undefined {
  if (!nonce.startsWith(NONCE_COOKIE) || nonce.length < NONCE_COOKIE.length + 4) return undefined;
  let bits = 0;
  for (let i = NONCE_COOKIE.length; i < NONCE_COOKIE.length + 4; i++) {
    const v = BASE64.indexOf(nonce[i]!);
    if (v < 0) return undefined;
    bits = (bits << 6) | v;
  }
  return bits;
}

export class NonceIssuer {
  readonly #secret: Uint8Array;
  readonly #lifetimeMs: number;
  readonly #prefix: string;
  /**
   * Nonces this issuer minted or whose MAC it verified, and the client each is bound to. A
   * client sends its nonce on every request (RFC 8489 §9.2.4), so all but the first check of
   * it would recompute the same HMAC-SHA256: here they find it instead (measured: the nonce
   * MAC was 2 of the 10 HMACs of a setup, bench/README.md "Setup and churn profile"). Only
   * authentic (nonce, client) pairs go in, and the secret never changes, so an answer from
   * here is the one the MAC would give; a nonce's age is still checked every time. Bounded:
   * the oldest goes, and a nonce that went is verified again.
   */
  readonly #known = new InsertionOrderedMap<string, string>();

  /**
   * @param secret at least 16 bytes from the injected RandomSource; all nonces die with it.
   * @param lifetimeMs how long a nonce stays valid (RFC 8656 §5: expire it at least once an hour).
   * @param securityFeatures SecurityFeature bits advertised in the nonce cookie.
   */
  constructor(
    secret: Uint8Array,
    lifetimeMs: number,
    securityFeatures: number = SecurityFeature.PasswordAlgorithms,
  ) {
    this.#secret = new Uint8Array(secret);
    this.#lifetimeMs = Number.isFinite(lifetimeMs) && lifetimeMs > 0 ? lifetimeMs : 0;
    const bits = (securityFeatures >>> 0) & 0xffffff;
    const cookieBits = Buffer.from([bits >>> 16, (bits >>> 8) & 0xff, bits & 0xff]);
    // RFC 8489 §9.2: the 24 bits "encoded as 4 characters using base64".
    this.#prefix = NONCE_COOKIE + cookieBits.toString("base64");
  }

  issue(nowMs: number, bindTo: string): string {
    const t = Number.isFinite(nowMs) ? Math.min(Math.max(Math.floor(nowMs), 0), MAX_TIMESTAMP) : 0;
    const head = this.#prefix + encodeTimestamp(t);
    const nonce = head + this.#mac(head, bindTo);
    this.#remember(nonce, bindTo);
    return nonce;
  }

  check(nonce: string, nowMs: number, bindTo: string): NonceCheck {
    const prefix = this.#prefix;
    if (typeof nonce !== "string" || nonce.length !== prefix.length + TS_CHARS + MAC_CHARS) {
      return "invalid";
    }
    if (!nonce.startsWith(prefix)) return "invalid";
    const issuedAt = decodeTimestamp(nonce, prefix.length);
    if (issuedAt < 0) return "invalid";
    if (typeof bindTo !== "string" || this.#known.get(nonce) !== bindTo) {
      const head = nonce.slice(0, prefix.length + TS_CHARS);
      if (!sameChars(nonce.slice(head.length), this.#mac(head, bindTo))) return "invalid";
      this.#remember(nonce, bindTo);
    }
    // Only now, with the MAC verified, is the timestamp ours to trust.
    if (!(nowMs >= issuedAt)) return "invalid"; // "issued in the future": not by us
    return nowMs - issuedAt >= this.#lifetimeMs ? "stale" : "valid";
  }

  #remember(nonce: string, bindTo: string): void {
    if (typeof bindTo !== "string") return;
    this.#known.evictOldestAtCap(KNOWN_NONCES);
    this.#known.set(nonce, bindTo);
  }

  /** base64url(HMAC-SHA256(secret, head as latin1 || bindTo as UTF-8)), the first 12 bytes. */
  #mac(head: string, bindTo: string): string {
    const bind = typeof bindTo === "string" ? bindTo : "";
    // head is ASCII (the prefix and base64url); bindTo is an IP address, ASCII too, but any
    // UTF-8 is hashed as UTF-8.
    const input = hmacInput(head.length + bind.length * 3);
    let at = HMAC_INPUT_OFFSET;
    for (let i = 0; i < head.length; i++) input[at++] = head.charCodeAt(i) & 0xff;
    at = writeUtf8(bind, input, at);
    const mac = hmacOfInput("sha256", this.#secret, at - HMAC_INPUT_OFFSET);
    let out = "";
    // 12 bytes are 16 base64url characters, no padding (RFC 4648 §5).
    for (let i = 0; i < MAC_BYTES; i += 3) {
      out += base64UrlQuad(
        (mac.charCodeAt(i) << 16) | (mac.charCodeAt(i + 1) << 8) | mac.charCodeAt(i + 2),
      );
    }
    return out;
  }
}

const utf8 = new TextEncoder();

/** `text` as UTF-8 into out[at ...] (room for 3 bytes per UTF-16 unit); the end. */
function writeUtf8(text: string, out: Uint8Array, at: number): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return at - i + utf8.encodeInto(text, out.subarray(at - i)).written;
    out[at++] = c;
  }
  return at;
}

/** Equal strings of MAC characters, compared without an early exit (RFC 8489 §9.2.4). */
function sameChars(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  let diff = 0;
  for (let i = 0; i < given.length; i++) diff |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return diff === 0;
}
