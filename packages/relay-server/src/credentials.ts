// TURN REST API credentials (draft-uberti-behave-turn-rest-00 §2.2), the scheme coturn calls
// use-auth-secret: username = "<expiry unix seconds>[:<user>]",
// password = base64(HMAC-SHA1(shared secret, username)). Any relay holding the same token can
// verify them, which is what lets relays scale out without shared state.
//
// With a port the username pins it ("<expiry>:<user>;port=<P>", relay-core's
// pinned-username.ts): the tunnel holding them gets exactly that relay port on every relay with
// the token and a --pinned-ports range containing it.

import {
  mintPinnedCredentials,
  mintRestCredentials,
  pinnedCredentialSecret,
  restPassword,
} from "@turnpike/relay-core";
import { encodeTunnelKey } from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import type { CredentialsCommand } from "./config/types.js";

export interface TurnCredentials {
  readonly username: string;
  readonly password: string;
  /** Seconds the credentials stay valid. */
  readonly ttl: number;
  readonly uris: readonly string[];
  /** username and password as one opaque string for `turnpike-tunnel --key` (TURNPIKE_KEY). */
  readonly key: string;
}

export interface MintOptions {
  readonly user?: string | undefined;
  /** A relay port to pin (needs `user`). */
  readonly port?: number | undefined;
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
  const c =
    options.port !== undefined && options.user !== undefined
      ? mintPinnedCredentials(token, options.nowSeconds, options.ttl, options.user, options.port)
      : mintRestCredentials(token, options.nowSeconds, options.ttl, options.user);
  return { ...c, uris: [...options.uris], key: encodeTunnelKey(c) };
}

/**
 * `turnpike-relay credentials`: the credentials as JSON on stdout (with `--pinned-secret`, the
 * pinned-credential secret instead), notes about them on stderr; the exit code.
 */
export function runCredentialsCommand(
  command: CredentialsCommand,
  nowSeconds: number,
  stdout: (text: string) => void,
  stderr: (line: string) => void,
): number {
  if (command.pinnedSecret) {
    stdout(`${pinnedCredentialSecret(command.token)}\n`);
    return 0;
  }
  const creds = mintCredentials(command.token, {
    user: command.user,
    port: command.port,
    ttl: command.ttl,
    uris: command.uris,
    nowSeconds,
  });
  for (const note of command.notes) stderr(`${PROGRAM_NAME} credentials: ${note}`);
  stdout(`${JSON.stringify(creds)}\n`);
  return 0;
}
