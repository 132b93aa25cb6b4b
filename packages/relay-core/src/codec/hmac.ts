// HMAC (RFC 2104) for MESSAGE-INTEGRITY (RFC 8489 §14.5: HMAC-SHA1), MESSAGE-INTEGRITY-SHA256
// (§14.6) and the nonces' MAC (auth/nonce.ts), computed as two one-shot hashes:
//
//   HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)),  K' = K padded to the 64-byte block
//
// Why not `createHmac`: every request needs two or three HMACs (the nonce, the request's
// integrity, the response's), and `createHmac` builds a native Hmac object, its OpenSSL
// context and a result Buffer each time; measured on the bench's setup path that was the
// largest single cost of a request (bench/README.md, "Setup and churn profile"). Here the
// padded key and the message are written into one reused scratch buffer, each `crypto.hash`
// call answers a string (one char per byte), and nothing outside the V8 heap is allocated.
//
// The scratch buffer is module state, used only within one synchronous call: nothing is kept
// between calls, and no key is cached (the pads are recomputed per call, 64 bytes each).

import { hash } from "node:crypto";

export type HmacAlgorithm = "sha1" | "sha256";

/** SHA-1 and SHA-256 both work on 64-byte blocks (RFC 3174, FIPS 180-4). */
const BLOCK = 64;
const IPAD = 0x36;
const OPAD = 0x5c;

/** Where the message starts in the scratch buffer (after the inner pad). */
export const HMAC_INPUT_OFFSET = BLOCK;

/** The scratch buffer's size at start: messages up to this are the everyday ones. */
const INITIAL_INPUT = BLOCK + 2048;
let input = new Uint8Array(INITIAL_INPUT);
/** The outer pad and the inner digest (at most 32 bytes). */
const outer = new Uint8Array(BLOCK + 32);
/** The outer hash's input, by digest length: SHA-1's 20 bytes, SHA-256's 32. */
const outerSha1 = outer.subarray(0, BLOCK + 20);
const outerSha256 = outer.subarray(0, BLOCK + 32);
/**
 * Views of the first n bytes of the initial scratch buffer, made once per length: crypto.hash
 * takes a view of exactly the bytes to hash, and a subarray per call was two of the ~70 objects
 * a request allocates (bench/README.md "Setup and churn profile"). At most one per length up
 * to INITIAL_INPUT; a grown buffer (a rare large message) gets a subarray per call.
 */
const inputViews: (Uint8Array | undefined)[] = [];

function inputView(n: number): Uint8Array {
  if (input.length !== INITIAL_INPUT) return input.subarray(0, n);
  let view = inputViews[n];
  if (view === undefined) {
    view = input.subarray(0, n);
    inputViews[n] = view;
  }
  return view;
}

/**
 * The scratch buffer with room for a message of `length` bytes at HMAC_INPUT_OFFSET: write the
 * message there, then call `hmacOfInput` with the same length before anything else uses it.
 */
export function hmacInput(length: number): Uint8Array {
  if (BLOCK + length > input.length) {
    let size = input.length;
    while (size < BLOCK + length) size *= 2;
    input = new Uint8Array(size);
  }
  return input;
}

/**
 * HMAC(key, the `length` bytes at HMAC_INPUT_OFFSET of the scratch buffer) as a binary string:
 * one char per byte, 20 for SHA-1, 32 for SHA-256.
 */
export function hmacOfInput(algorithm: HmacAlgorithm, key: Uint8Array, length: number): string {
  const k = key.length > BLOCK ? binaryBytes(hash(algorithm, key, "binary")) : key;
  const n = k.length;
  for (let i = 0; i < BLOCK; i++) input[i] = (i < n ? k[i]! : 0) ^ IPAD;
  const inner = hash(algorithm, inputView(BLOCK + length), "binary");
  for (let i = 0; i < BLOCK; i++) outer[i] = (i < n ? k[i]! : 0) ^ OPAD;
  for (let i = 0; i < inner.length; i++) outer[BLOCK + i] = inner.charCodeAt(i);
  return hash(algorithm, inner.length === 20 ? outerSha1 : outerSha256, "binary");
}

/** HMAC(key, bytes) as a binary string (see hmacOfInput). */
export function hmacBinary(algorithm: HmacAlgorithm, key: Uint8Array, bytes: Uint8Array): string {
  hmacInput(bytes.length).set(bytes, HMAC_INPUT_OFFSET);
  return hmacOfInput(algorithm, key, bytes.length);
}

/**
 * Whether the first `length` chars of the binary string `mac` equal bytes[offset ..
 * offset + length), in time that does not depend on where they differ (RFC 8489 §9.2.4: a
 * MAC check must not tell an attacker how much of a forgery was right).
 */
export function binaryEqualsBytes(
  mac: string,
  bytes: Uint8Array,
  offset: number,
  length: number,
): boolean {
  if (mac.length < length || offset + length > bytes.length) return false;
  let diff = 0;
  for (let i = 0; i < length; i++) diff |= mac.charCodeAt(i) ^ bytes[offset + i]!;
  return diff === 0;
}

function binaryBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}
