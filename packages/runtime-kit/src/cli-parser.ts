// yargs, built from an OptionSet: used only to tokenize argv (types, repeats, unknown flags) and
// to render --help. Defaults are not given to yargs so "not on the command line" stays visible
// to the layered resolution in options.ts. Nothing else in a CLI needs to know about yargs
// (ARCHITECTURE.md, "Layers").

import yargs, { type Argv } from "yargs";
import {
  CONFIG_OPTION_DESCRIBE,
  ConfigError,
  type OptionSet,
  type OptionSpec,
  type OptionTable,
} from "./options.js";

/**
 * A strict parser that throws ConfigError instead of printing and exiting; it knows --help and
 * --version (as plain booleans: the caller prints) and nothing else yet.
 */
export function baseParser(argv: readonly string[], programName: string): Argv {
  return (
    yargs([...argv])
      .scriptName(programName)
      .parserConfiguration({
        "duplicate-arguments-array": true,
        "strip-dashed": true,
        "strip-aliased": true,
        "boolean-negation": true,
        "parse-numbers": false,
        "parse-positional-numbers": false,
      })
      .help(false)
      .version(false)
      .exitProcess(false)
      // Unknown flags are errors; positionals are checked by the caller (a clearer message).
      .strictOptions()
      .wrap(Math.min(120, process.stdout.columns || 100))
      .fail((msg, err) => {
        throw new ConfigError(yargsMessage(msg ?? err?.message ?? "invalid arguments"));
      })
      .option("help", { alias: "h", type: "boolean", describe: "show this help" })
      .option("version", { type: "boolean", describe: "show the version" }) as unknown as Argv
  );
}

/** Adds `--config FILE` (also read from <PREFIX>CONFIG). */
export function addConfigOption<O extends OptionTable>(parser: Argv, options: OptionSet<O>): Argv {
  return parser.option("config", {
    type: "string",
    requiresArg: true,
    describe: `${CONFIG_OPTION_DESCRIBE} [env: ${options.configEnv}]`,
  });
}

/**
 * Adds every option of the table, grouped under "<group>:" headings in table order (hidden
 * options are accepted but not listed), then config/help/version under "General:".
 */
export function addTableOptions<O extends OptionTable>(parser: Argv, options: OptionSet<O>): Argv {
  const groups = new Map<string, string[]>();
  for (const name of options.names) {
    const s = options.table[name] as OptionSpec<unknown>;
    parser.option(name, {
      type: s.boolean ? "boolean" : "string",
      requiresArg: !s.boolean,
      hidden: s.hidden === true,
      describe: `${s.describe} [env: ${options.envName(name)}]`,
      defaultDescription: s.defaultText,
    });
    if (!s.hidden) groups.set(s.group, [...(groups.get(s.group) ?? []), name]);
  }
  for (const [group, names] of groups) parser.group(names, `${group}:`);
  parser.group(["config", "help", "version"], "General:");
  return parser;
}

// yargs words its errors for its own audience ("Unknown argument: min-prot"); say it with the
// flag spelled as the user typed it, on one line.
export function yargsMessage(text: string): string {
  const flags = (list: string) =>
    list
      .split(",")
      .map((f) => f.trim())
      .filter((f) => f !== "")
      // yargs may report the camelCase form it derived; show what the user typed.
      .map((f) => f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`))
      .filter((f, i, all) => all.indexOf(f) === i)
      .map((f) => (f.length === 1 ? `-${f}` : `--${f}`))
      .join(", ");
  const unknown = /^Unknown arguments?: (.*)$/s.exec(text);
  if (unknown) return `unknown option ${flags(unknown[1] ?? "")} (see --help)`;
  const missing = /^Not enough arguments following: (.*)$/s.exec(text);
  if (missing) return `${flags(missing[1] ?? "")} needs a value`;
  return text.replace(/\s*\n\s*/g, "; ");
}

/** The `--help` text a parser would print. */
export function helpText(parser: { showHelp(print: (s: string) => void): unknown }): string {
  let text = "";
  parser.showHelp((s) => {
    text = s;
  });
  return text;
}
