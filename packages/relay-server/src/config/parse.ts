// The command line and the environment into one command: the relay itself (relay-command.ts)
// or one of its subcommands (credentials-command.ts, allocations-command.ts). Nothing outside
// config/, runtime-kit and cli.ts knows about yargs (ARCHITECTURE.md, "Layers").

import { parseAllocations } from "./allocations-command.js";
import { parseCredentials } from "./credentials-command.js";
import { parseRelay } from "./relay-command.js";
import type { ParsedCommand, ParseOptions } from "./types.js";

/**
 * Parses argv (without the node and script paths) and the environment into a command.
 * Throws ConfigError (one line naming the option) on any invalid value.
 */
export function parseRelayArgs(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  options: ParseOptions = {},
): ParsedCommand {
  if (argv[0] === "credentials") return parseCredentials(argv.slice(1), env);
  if (argv[0] === "allocations") return parseAllocations(argv.slice(1), env);
  return parseRelay(argv, env, options);
}
