// TURN REST API credentials (draft-uberti-behave-turn-rest-00 §2.2), the scheme coturn calls
// use-auth-secret: username = "<expiry unix seconds>[:<user>]",
// password = base64(HMAC-SHA1(shared secret, username)). Any relay holding the same token can
// verify them, which is what lets relays scale out without shared state.

import { mintRestCredentials, restPassword } from "@turnpike/relay-core";

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

/** The password for a REST username (relay-core's derivation; the relay verifies with it). */
export const restApiPassword = restPassword;

/** The TURN REST API response for `turnpike-relay credentials` (relay-core mints them). */
export function mintCredentials(token: string, options: MintOptions): TurnCredentials {
  return {
    ...mintRestCredentials(token, options.nowSeconds, options.ttl, options.user),
    uris: [...options.uris],
  };
}
