// The shared secrets TURN REST credentials are signed with (draft-uberti-behave-turn-rest-00
// §2.2): several at once, so that a secret can be rotated without invalidating every credential
// handed out. The first one mints (`turnpike-relay credentials`), every one verifies
// (relay-core's SharedSecretCredentials). They come from exactly one place:
//
//   --token SECRET (repeatable) / TURNPIKE_TOKEN=A,B   read once: a process cannot re-read its
//                                                     own environment, so a change needs a
//                                                     restart (or the config file, re-read on
//                                                     SIGHUP like every file)
//   --token-file FILE                                 one secret per line, '#' comment lines;
//                                                     re-read on SIGHUP (a rotated Kubernetes
//                                                     Secret mounted as a file, a vault agent)
//
// Lists are refused when they hold an empty entry or the same secret twice: a stray comma or a
// doubled line is a mistake worth one line at start, never a silent drop. No message ever
// shows a secret, only its position.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "@turnpike/runtime-kit";
import { ENV_PREFIX, PROGRAM_NAME } from "./options.js";
import { refuseRepeats } from "./values.js";

/** The secrets in a --token-file: one per line, blank lines and '#' lines skipped. */
export function readTokenFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`--token-file ${JSON.stringify(path)} is not readable (${code})`);
  }
  const lines: { secret: string; line: number }[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const secret = raw.trim();
    // Only whole-line comments: a secret may well contain " #".
    if (secret !== "" && !secret.startsWith("#")) lines.push({ secret, line: i + 1 });
  });
  if (lines.length === 0) {
    throw new ConfigError(`--token-file ${JSON.stringify(path)} holds no secret`);
  }
  refuseRepeats(
    lines.map((l) => l.secret),
    (first, again) =>
      `--token-file ${JSON.stringify(path)} lists one secret twice (lines ${lines[first - 1]!.line} and ${lines[again - 1]!.line})`,
  );
  return lines.map((l) => l.secret);
}

export interface Secrets {
  /** The first mints, every one verifies. */
  readonly tokens: readonly string[];
  readonly tokenFile: string | undefined;
  /** Neither was set: a random secret for this run (tokens holds it alone). */
  readonly tokenGenerated: boolean;
}

/**
 * The secrets from --token/TURNPIKE_TOKEN or --token-file (never both), else a random one for
 * this run: `generate` draws it (a reload passes the one drawn at start, so credentials minted
 * with it stay valid). Warnings: the generated secret, printed once (the one place a secret is
 * logged: without it nobody could mint credentials for this relay).
 */
export function resolveSecrets(
  given: { readonly tokens: readonly string[] | undefined; readonly tokenFile: string | undefined },
  generate: (() => string) | undefined,
  warnings: string[],
  /** How the warning says to run this CLI again (runtime-kit's cliCommand). */
  command = PROGRAM_NAME,
): Secrets {
  const { tokens, tokenFile } = given;
  if (tokens !== undefined && tokenFile !== undefined) {
    throw new ConfigError(
      `--token and --token-file are exclusive: give the secrets either as --token/${ENV_PREFIX}TOKEN or in --token-file`,
    );
  }
  if (tokenFile !== undefined) {
    return { tokens: readTokenFile(tokenFile), tokenFile, tokenGenerated: false };
  }
  if (tokens !== undefined) return { tokens, tokenFile: undefined, tokenGenerated: false };
  const token = (generate ?? (() => randomBytes(32).toString("base64url")))();
  warnings.push(
    `no ${ENV_PREFIX}TOKEN set: generated a random token for this run; mint credentials with: ${ENV_PREFIX}TOKEN=${token} ${command} credentials`,
  );
  return { tokens: [token], tokenFile: undefined, tokenGenerated: true };
}
