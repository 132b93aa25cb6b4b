// Pinned TURN REST usernames: credentials that name the relay port their allocation gets.
//
// A platform that exposes a customer's service through a tunnel wants a fixed endpoint, so it
// mints credentials that carry the port inside the signed username (ARCHITECTURE.md,
// "Scale-out and tunnel endpoints"). The port lives in the <user> part of an ordinary TURN REST
// username (draft-uberti-behave-turn-rest-00 §2.2), behind a marker no plain user name contains:
//
//   username = "<unix-expiry>:<user>;port=<P>"           e.g. "1795520000:acme-pg;port=40007"
//   password = base64(HMAC-SHA1(pinnedSecret, username))
//   pinnedSecret = hex(HMAC-SHA256(token, "turnpike pinned-port credentials v1"))
//
// Why this shape: the HMAC covers the whole username, so the port cannot be changed without
// the secret (a tampered port fails MESSAGE-INTEGRITY, 401), and any relay with the same token
// honours the pin without per-customer state.
//
// Why a key of its own: plain REST credentials are password = HMAC-SHA1(token, username), and
// applications that share the token (a WebRTC app minting TURN credentials for its users) sign
// whatever username they are asked for. If pins were signed the same way, any such user could
// name themselves "x;port=40007" and be handed credentials for someone's pinned port. So the
// password of a pinned username is keyed with a secret derived from the token for this purpose
// only (HMAC-SHA256 as a key-derivation function with a label: domain separation, one
// direction), and the relay verifies pinned usernames with that key alone. A generic minting
// service cannot produce one by accident; only code that means to mint pins (this module,
// `turnpike-relay credentials --port`) does. The derived secret is 64 hex characters, so it can
// be handed to other relays as an ordinary shared secret: coturn, which knows nothing of pins,
// given it as a second static-auth-secret, accepts pinned credentials as plain REST ones (a
// dynamic port) instead of refusing them.
//
// Pinned credentials minted before this scheme (signed with the token) are refused, unless
// the relay's SharedSecretCredentials has a transition window (legacyPinnedUntil).

import { createHmac } from "node:crypto";
import { mintRestCredentials, parseRestUsername } from "./rest-credentials.js";

/** The label of the pinned-credential key derivation (versioned: a new scheme, a new label). */
export const PINNED_SECRET_LABEL = "turnpike pinned-port credentials v1";

/**
 * The secret pinned credentials are signed with, derived from a shared secret (the token):
 * hex(HMAC-SHA256(token, PINNED_SECRET_LABEL)). Give it to a relay that must accept pinned
 * credentials as plain REST ones (coturn's --static-auth-secret, next to the token).
 */
export function pinnedCredentialSecret(token: string): string {
  return createHmac("sha256", token).update(PINNED_SECRET_LABEL, "utf8").digest("hex");
}

/** Separates the user from the pinned port inside the <user> part. */
export const PIN_MARKER = ";port=";

/** What a username says about the port its allocation must get. */
export type PinnedUser =
  /** The user part without the marker, and the pinned port (1..65535). */
  | { readonly user: string; readonly port: number }
  /** The marker is there but what follows is no port: the relay refuses the Allocate. */
  | { readonly user: string; readonly port: undefined };

/** "<user>;port=<P>": the <user> part of a pinned REST username. */
export function pinnedUser(user: string, port: number): string {
  return `${user}${PIN_MARKER}${port}`;
}

/**
 * Reads the pin from a <user> part ("acme-pg;port=40007"). Undefined when the user is not
 * pinned. The port is canonical decimal without leading zeros, so one port has one username.
 */
export function parsePinnedUser(user: string): PinnedUser | undefined {
  if (typeof user !== "string") return undefined;
  const at = user.lastIndexOf(PIN_MARKER);
  if (at < 0) return undefined;
  const name = user.slice(0, at);
  const digits = user.slice(at + PIN_MARKER.length);
  const port = /^[1-9]\d{0,4}$/.test(digits) ? Number(digits) : Number.NaN;
  return port <= 65535 ? { user: name, port } : { user: name, port: undefined };
}

/**
 * The pin of a full USERNAME: only a TURN REST username ("<expiry>:<user>;port=<P>") pins a
 * port. Undefined for a username without a pin.
 */
export function pinOfUsername(username: string): PinnedUser | undefined {
  const rest = parseRestUsername(username);
  return rest?.user === undefined ? undefined : parsePinnedUser(rest.user);
}

/**
 * Who a USERNAME belongs to, for people (discovery API, logs): the <user> part of a REST
 * username without its pin, or the whole username of a static user. Not a principal: the
 * server compares principals (credentials.ts), and the revocation list names them.
 */
export function userOfUsername(username: string): string {
  const rest = parseRestUsername(username);
  if (rest === undefined) return username;
  if (rest.user === undefined) return "";
  return parsePinnedUser(rest.user)?.user ?? rest.user;
}

/**
 * Credentials pinned to `port`, signed with the pinned-credential secret derived from `token`
 * (what `turnpike-relay credentials --port` prints).
 */
export function mintPinnedCredentials(
  token: string,
  nowUnixSeconds: number,
  ttlSeconds: number,
  user: string,
  port: number,
): { username: string; password: string; ttl: number } {
  return mintRestCredentials(
    pinnedCredentialSecret(token),
    nowUnixSeconds,
    ttlSeconds,
    pinnedUser(user, port),
  );
}
