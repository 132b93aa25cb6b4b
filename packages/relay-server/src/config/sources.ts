// Where a command's values come from: its flags, then the environment (TURNPIKE_*), then the
// config file (`--config FILE` or TURNPIKE_CONFIG), then the table's defaults. The relay and
// both subcommands read the same sources, so `credentials` and `allocations` run next to a
// relay find its listeners, token and health address without flags.

import {
  type ArgvRecord,
  addConfigOption,
  baseParser,
  ConfigError,
  helpText,
  type Layer,
  type OptionValues,
} from "@turnpike/runtime-kit";
import { OPTION_SET, type OPTIONS, type OptionName, PROGRAM_NAME } from "./options.js";
import type { InfoCommand } from "./types.js";

/** The yargs parser every command starts from: runtime-kit's, with --config. */
export function commandParser(argv: readonly string[]) {
  return addConfigOption(baseParser(argv, PROGRAM_NAME), OPTION_SET);
}

export interface Sources {
  readonly values: OptionValues<typeof OPTIONS>;
  /** The flags layer, to tell a value given on the command line (visible in `ps`). */
  readonly flags: Layer<OptionName>;
  /** The config file that was read, if any. */
  readonly configFile: string | undefined;
}

/** Every option's value from its sources; `flags` limits the flags a subcommand accepts. */
export function readSources(
  args: ArgvRecord,
  env: NodeJS.ProcessEnv,
  flags?: readonly OptionName[],
): Sources {
  const flagLayer = OPTION_SET.flagLayer(args, flags);
  const layers = [flagLayer, OPTION_SET.envLayer(env)];
  const file = OPTION_SET.configPath(args, env);
  if (file !== undefined) layers.push(OPTION_SET.fileLayer(file[0], file[1]));
  return { values: OPTION_SET.resolve(layers), flags: flagLayer, configFile: file?.[0] };
}

/**
 * A subcommand's arguments and values: its --help, or its flags (no positional argument) with
 * every option resolved from its sources, `flags` being the table's options it accepts.
 */
export function readSubcommand(
  parser: { parseSync(): unknown; showHelp(print: (s: string) => void): unknown },
  name: string,
  env: NodeJS.ProcessEnv,
  flags: readonly OptionName[],
): { readonly args: ArgvRecord; readonly values: Sources["values"] } | InfoCommand {
  const args = parser.parseSync() as ArgvRecord;
  if (args.help === true) return { command: "help", text: helpText(parser) };
  refusePositionals(args, (first) => `${name} takes no arguments, got ${first}`);
  return { args, values: readSources(args, env, flags).values };
}

/** Refuses positional arguments: `message` says it for the first one (JSON-quoted). */
export function refusePositionals(args: ArgvRecord, message: (first: string) => string): void {
  const positional = (args._ as unknown[] | undefined) ?? [];
  if (positional.length > 0) {
    throw new ConfigError(message(JSON.stringify(String(positional[0]))));
  }
}
