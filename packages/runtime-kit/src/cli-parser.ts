// yargs, built from an OptionSet: used only to tokenize argv (types, repeats, unknown flags) and
// to render --help. Defaults are not given to yargs so "not on the command line" stays visible
// to the layered resolution in options.ts. Nothing else in a CLI needs to know about yargs
// (ARCHITECTURE.md, "Layers").
//
// --help lists each option in two columns, the flag and its description, with the value's type,
// its default and its environment variable on a line of their own below the description:
//
//       --min-port   lowest relay port
//                    [number] [default: 49152] [env: TURNPIKE_MIN_PORT]
//
// yargs would print type and default in a third, right-aligned column, which it glues to a
// description that fills its width ("[env: TURNPIKE_MAX_PORT][string]"), so that column is
// switched off and every option's description carries them instead (describedOption).

import type { Argv, Options } from "yargs";
import { ConfigError } from "./option-values.js";
import {
  CONFIG_OPTION_DESCRIBE,
  type OptionSet,
  type OptionSpec,
  type OptionTable,
  optionType,
} from "./options.js";
// yargs itself, with its help renderer loaded only when a help text is rendered (yargs-lean.ts).
import { yargs } from "./yargs-lean.js";

/** Set while a reference page is rendered: help text at this width, whatever the terminal. */
let fixedWidth: number | undefined;

/**
 * Runs `render` with every help text wrapped at `width` columns instead of the terminal's, so
 * that a generated page is the same wherever it is generated.
 */
export function withHelpWidth<T>(width: number, render: () => T): T {
  const before = fixedWidth;
  fixedWidth = width;
  try {
    return render();
  } finally {
    fixedWidth = before;
  }
}

/**
 * A strict parser that throws ConfigError instead of printing and exiting; it knows --help and
 * --version (as plain booleans: the caller prints) and nothing else yet.
 */
export function baseParser(argv: readonly string[], programName: string): Argv {
  const parser = yargs([...argv]);
  describeOptionsInline(parser);
  return (
    parser
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
      .wrap(fixedWidth ?? Math.min(120, process.stdout.columns || 100))
      .fail((msg, err) => {
        throw new ConfigError(yargsMessage(msg ?? err?.message ?? "invalid arguments"));
      })
      .option("help", { alias: "h", type: "boolean", describe: "show this help" })
      .option("version", { type: "boolean", describe: "show the version" }) as unknown as Argv
  );
}

/**
 * From now on, every `parser.option(name, spec)` shows its type and default in its description
 * (describedOption), and yargs' own column for them is off. `type: "number"` is listed as
 * [number] but reaches the caller as the text typed (yargs would turn "abc" into NaN): the
 * caller's parser judges it and names it in its error.
 */
function describeOptionsInline(parser: Argv): void {
  const option = parser.option.bind(parser) as (key: string, spec: Options) => Argv;
  const patched = parser as unknown as { option: (key: unknown, spec?: Options) => Argv };
  patched.option = (key, spec) =>
    typeof key === "string" && spec !== undefined
      ? option(key, describedOption(spec))
      : option(key as string, spec as Options);
  (parser as unknown as { usageConfiguration(c: object): Argv }).usageConfiguration({
    "hide-types": true,
  });
}

/**
 * `spec` with its type, default and `[env: NAME]` (moved from the end of the description) on a
 * line below the description. Choices spelled in the placeholder (`json|text`) stand for the
 * type.
 */
export function describedOption(spec: Options & { placeholder?: string }): Options {
  const { placeholder, ...rest } = spec;
  if (rest.describe === undefined) return rest;
  const numeric = rest.type === "number";
  const env = /\s*(\[env: [^\]]+\])$/.exec(rest.describe);
  const describe = env ? rest.describe.slice(0, env.index) : rest.describe;
  const type =
    placeholder !== undefined && /^[a-z0-9-]+(\|[a-z0-9-]+)+$/.test(placeholder)
      ? placeholder
      : (rest.type ?? "string");
  const shownDefault =
    rest.defaultDescription ?? (rest.default === undefined ? undefined : String(rest.default));
  const extras = [
    // A switch without a default (--help) is a switch: nothing to add.
    ...(type === "boolean" && shownDefault === undefined ? [] : [`[${type}]`]),
    ...(shownDefault !== undefined ? [`[default: ${shownDefault}]`] : []),
    ...(env ? [env[1]] : []),
  ];
  const { defaultDescription: _shown, ...parsed } = rest;
  return {
    ...parsed,
    ...(numeric ? { type: "string" as const } : {}),
    describe: extras.length === 0 ? describe : `${describe}\n${extras.join(" ")}`,
  };
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
      type: s.boolean ? "boolean" : valueType(s),
      requiresArg: !s.boolean,
      hidden: s.hidden === true,
      describe: `${s.describe} [env: ${options.envName(name)}]`,
      defaultDescription: s.defaultText,
      ...(s.placeholder !== undefined ? { placeholder: s.placeholder } : {}),
    } as Options);
    if (!s.hidden) groups.set(s.group, [...(groups.get(s.group) ?? []), name]);
  }
  for (const [group, names] of groups) parser.group(names, `${group}:`);
  parser.group(["config", "help", "version"], "General:");
  return parser;
}

/** What yargs is told a table option's value is (choices and numbers arrive as text). */
function valueType(spec: OptionSpec<unknown>): "number" | "string" {
  return optionType(spec) === "number" ? "number" : "string";
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
