// Ephemeral credentials of the TURN REST API (draft-uberti-behave-turn-rest-00 §2.2),
// as coturn implements them with --use-auth-secret / static-auth-secret: whoever knows the
// shared secret mints (username, password) pairs that any relay can check statelessly.
//
//   username = "<unix-expiry>" or "<unix-expiry>:<user>"
//   password = base64(HMAC-SHA1(secret, username))
//
// Only the timestamp-first form is accepted. coturn also guesses at a legacy
// "<user>:<timestamp>" order; two parses of one string invite ambiguity ("12:34"), so we
// keep the draft's order, which every current generator (coturn docs, Janus, Jitsi) uses.

import { hmacBinary } from "../codec/hmac.js";

const utf8 = new TextEncoder();

export function restPassword(secret: string, username: string): string {
  // HMAC as two one-shot hashes (codec/hmac.ts): each new username costs one of these.
  const mac = hmacBinary("sha1", utf8.encode(secret), utf8.encode(username));
  return Buffer.from(mac, "latin1").toString("base64");
}

export function mintRestCredentials(
  secret: string,
  nowUnixSeconds: number,
  ttlSeconds: number,
  user?: string,
): { username: string; password: string; ttl: number } {
  // Garbage in (NaN, Infinity) yields credentials that are already expired, not a throw.
  const sum = Math.floor(nowUnixSeconds) + Math.floor(ttlSeconds);
  const expiry = Number.isSafeInteger(sum) && sum > 0 ? sum : 0;
  const ttl = Number.isFinite(ttlSeconds) ? Math.max(0, Math.floor(ttlSeconds)) : 0;
  const username = user === undefined || user === "" ? `${expiry}` : `${expiry}:${user}`;
  return { username, password: restPassword(secret, username), ttl };
}

/** Parses "<unix-expiry>" or "<unix-expiry>:<user>" (the user may contain ':'). */
export function parseRestUsername(
  username: string,
): { expiry: number; user: string | undefined } | undefined {
  if (typeof username !== "string") return undefined;
  let expiry = 0;
  let i = 0;
  for (; i < username.length; i++) {
    const c = username.charCodeAt(i);
    if (c === 58 /* : */) break;
    if (c < 48 || c > 57 || i >= 15) return undefined; // 15 digits stay a safe integer
    expiry = expiry * 10 + (c - 48);
  }
  if (i === 0) return undefined;
  if (i === username.length) return { expiry, user: undefined };
  const user = username.slice(i + 1);
  return user === "" ? undefined : { expiry, user };
}
