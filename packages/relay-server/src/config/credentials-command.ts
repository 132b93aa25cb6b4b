// `turnpike-relay credentials`: the arguments of the command that mints TURN REST API
// credentials from the relay's token (credentials.ts mints them). It reads the relay's own
// sources too (flags, TURNPIKE_*, the config file), so the secrets (--token, TURNPIKE_TOKEN or
// --token-file: it mints with the first), the --pinned-ports range and the default turn:/turns:
// URIs (RFC 7065) are the relay's, wherever it is run. `--pinned-secret` prints the secret
// pinned credentials are signed with instead, for a coturn next to Turnpike (relay-core's
// pinnedCredentialSecret).

import { isIPv4, isIPv6 } from "node:net";
import { PIN_MARKER } from "@turnpike/relay-core";
import {
  ConfigError,
  fail,
  list,
  type OptionSpec,
  type OptionValues,
  one,
  parseInteger,
  type Scalar,
} from "@turnpike/runtime-kit";
import { ENV_PREFIX, envName, OPTIONS, type OptionName, PROGRAM_NAME } from "./options.js";
import { resolveSecrets } from "./secrets.js";
import { commandParser, readSubcommand } from "./sources.js";
import type { CredentialsCommand, InfoCommand, SocketAddress } from "./types.js";
import { formatSocketAddress, isUnspecified } from "./values.js";

export const DEFAULT_TTL = 86400;

export const CREDENTIALS_USAGE = `${PROGRAM_NAME} credentials [--user NAME [--port P]] [--ttl SECONDS] [--uri URI ...] | --pinned-secret`;

/** The relay's options the command reads from flags too (for the default URIs and the pin). */
const RELAY_OPTIONS: readonly OptionName[] = [
  "listen",
  "tls-listen",
  "relay-ip",
  "public-ip4",
  "public-ip6",
  "pinned-ports",
];

export function parseCredentials(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
): CredentialsCommand | InfoCommand {
  const read = readSubcommand(credentialsParser(argv), "credentials", env, [
    "token",
    "token-file",
    ...RELAY_OPTIONS,
  ]);
  if ("command" in read) return read;
  const { args, values: v } = read;
  const notes: string[] = [];
  if (v.token === undefined && v["token-file"] === undefined) {
    throw new ConfigError(
      `credentials needs the relay's shared secret: export ${ENV_PREFIX}TOKEN (or pass --token or --token-file)`,
    );
  }
  const token = resolveSecrets({ tokens: v.token, tokenFile: v["token-file"] }, undefined, [])
    .tokens[0]!;
  if (args.pinnedSecret === true) {
    const other = ["user", "port", "ttl", "uri"].find((o) => args[o] !== undefined);
    if (other !== undefined) {
      throw new ConfigError(`--pinned-secret prints the secret only: drop --${other}`);
    }
    return {
      command: "credentials",
      token,
      pinnedSecret: true,
      user: undefined,
      port: undefined,
      ttl: DEFAULT_TTL,
      uris: [],
      notes,
    };
  }
  const userArg = args.user;
  let user: string | undefined;
  if (userArg !== undefined) {
    user = one(userArg as Scalar | Scalar[], "--user");
    if (user === "" || user.includes(":") || user.includes(PIN_MARKER)) {
      fail("--user", `a name without ':' or '${PIN_MARKER}' (pin a port with --port)`, user);
    }
  }
  let port: number | undefined;
  if (args.port !== undefined) {
    port = parseInteger(args.port as Scalar, "--port", 1, 65535);
    if (user === undefined) throw new ConfigError("--port needs --user: a pin belongs to a user");
    const pinned = v["pinned-ports"];
    // The relay's range is known when its configuration is (same env and config file): a pin
    // outside it would be refused with 403 by every relay, so refuse to mint it.
    if (pinned !== undefined && (port < pinned.min || port > pinned.max)) {
      fail(
        "--port",
        `a port in the relay's --pinned-ports ${pinned.min}-${pinned.max}`,
        String(port),
      );
    }
  }
  const ttl =
    args.ttl === undefined
      ? DEFAULT_TTL
      : parseInteger(args.ttl as Scalar, "--ttl", 1, 10 * 365 * 86400);
  const uriArg = args.uri;
  let uris: string[];
  if (uriArg !== undefined) {
    uris = list(uriArg as Scalar | Scalar[]);
    for (const uri of uris) {
      if (!/^turns?:[^\s]+$/.test(uri)) fail("--uri", "a turn: or turns: URI", uri);
    }
  } else {
    uris = defaultUris(v, notes);
  }
  return { command: "credentials", token, pinnedSecret: false, user, port, ttl, uris, notes };
}

/**
 * turn:/turns: URIs (RFC 7065) for the relay's listeners, from the relay's own settings (its
 * flags, environment and config file), never from this host's interfaces: the credentials are
 * often minted on another host than the relay's. A listener's host is the public address of its
 * family when it is the relay's (behind 1:1 NAT clients reach that one), else its own address;
 * an unspecified listener (0.0.0.0) takes the public, else the relay address of its family, and
 * gets no URI without one (`notes` says so).
 */
function defaultUris(v: OptionValues<typeof OPTIONS>, notes: string[]): string[] {
  const relayIp = (family: 4 | 6) =>
    v["relay-ip"].find((ip) => (family === 4 ? isIPv4(ip) : isIPv6(ip)));
  const hostFor = (a: SocketAddress): string | undefined => {
    const publicIp = a.family === 4 ? v["public-ip4"] : v["public-ip6"];
    if (isUnspecified(a.ip)) return publicIp ?? relayIp(a.family);
    const relay = relayIp(a.family);
    return publicIp !== undefined && (relay === undefined || relay === a.ip) ? publicIp : a.ip;
  };
  const hostPort = (a: SocketAddress, host: string): string =>
    `${a.family === 6 ? `[${host}]` : host}:${a.port}`;
  const uris: string[] = [];
  const unnamed: string[] = [];
  const add = (a: SocketAddress, ...make: ((hp: string) => string)[]) => {
    const host = hostFor(a);
    if (host === undefined) unnamed.push(formatSocketAddress(a));
    else for (const m of make) uris.push(m(hostPort(a, host)));
  };
  for (const a of v.listen) {
    add(
      a,
      (hp) => `turn:${hp}?transport=udp`,
      (hp) => `turn:${hp}?transport=tcp`,
    );
  }
  for (const a of v["tls-listen"]) add(a, (hp) => `turns:${hp}?transport=tcp`);
  if (unnamed.length > 0) {
    notes.push(
      `no URI for ${unnamed.join(", ")}: an unspecified listener names no address clients can reach; set the relay's --public-ip4/--public-ip6 or --relay-ip (flag, ${ENV_PREFIX}* or its config file), or pass --uri`,
    );
  }
  return uris;
}

function credentialsParser(argv: readonly string[]) {
  const parser = commandParser(argv)
    .usage(
      `Usage: ${CREDENTIALS_USAGE}\n\n` +
        `Prints TURN REST API credentials {"username","password","ttl","uris","key"} derived from ${ENV_PREFIX}TOKEN.\n` +
        'With --port the username pins that relay port: "<expiry>:<user>;port=<P>". Hand the\n' +
        "tunnel `key` (TURNPIKE_KEY): username and password in one string, never the token.\n" +
        "With several secrets (rotation) the first mints. --pinned-secret prints the secret pinned\n" +
        "credentials are signed with: give it to a coturn beside Turnpike as one more\n" +
        "static-auth-secret, and it accepts them as plain REST credentials (a dynamic port).",
    )
    .option("pinned-secret", {
      type: "boolean",
      describe: "print the secret pinned credentials are signed with, derived from the first token",
    })
    .option("user", { type: "string", requiresArg: true, describe: "user name to embed" })
    .option("port", {
      type: "number",
      requiresArg: true,
      describe: "relay port to pin (needs --user; within the relay's --pinned-ports)",
    })
    .option("ttl", {
      type: "number",
      requiresArg: true,
      describe: "validity in seconds",
      defaultDescription: String(DEFAULT_TTL),
    })
    .option("uri", {
      type: "string",
      requiresArg: true,
      describe: "TURN URI to include (repeatable)",
      defaultDescription: "turn:/turns: URIs of the configured listeners",
    })
    .option("token", {
      type: "string",
      requiresArg: true,
      describe: `shared secret; with several, the first mints [env: ${ENV_PREFIX}TOKEN]`,
    })
    .option("token-file", {
      type: "string",
      requiresArg: true,
      describe: `file of shared secrets, one per line; the first mints [env: ${envName("token-file")}]`,
    });
  // The relay's own listener options, so default URIs can be computed from flags too.
  for (const name of RELAY_OPTIONS) {
    const s = OPTIONS[name] as OptionSpec<unknown>;
    parser.option(name, {
      type: "string",
      requiresArg: true,
      describe: `${s.describe} (for the default URIs) [env: ${envName(name)}]`,
    });
  }
  return parser;
}
