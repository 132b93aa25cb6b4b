// TURN REST API credentials (draft-uberti-behave-turn-rest-00 §2.2), the scheme coturn calls
// use-auth-secret: username = "<expiry unix seconds>[:<user>]",
// password = base64(HMAC-SHA1(shared secret, username)). Any relay holding the same token can
// verify them, which is what lets relays scale out without shared state.

import { createHmac } from "node:crypto";

export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
  /** Seconds the credentials stay valid. */
  readonly ttl: number;
  readonly uris: readonly string[];
}

export interface MintOptions {
  readonly user?: string | undefined;
  /** Seconds. */
  readonly ttl: number;
  readonly uris: readonly string[];
  /** Wall-clock unix seconds (injected: the expiry is absolute time). */
  readonly nowSeconds: number;
}

export function restApiPassword(token: string, username: string): string {
  return createHmac("sha1", token).update(username).digest("base64");
}

export function mintCredentials(token: string, options: MintOptions): TurnCredentials {
  const expiry = Math.floor(options.nowSeconds) + options.ttl;
  const username = options.user === undefined ? `${expiry}` : `${expiry}:${options.user}`;
  return {
    username,
    password: restApiPassword(token, username),
    ttl: options.ttl,
    uris: [...options.uris],
  };
}
