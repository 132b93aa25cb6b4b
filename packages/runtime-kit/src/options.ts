// The option-table engine behind turnpike-relay's and turnpike-tunnel's configuration: each CLI
// describes its options ONCE (a table of OptionSpec) and this module derives the TURNPIKE_*
// environment names, the layered sources, `--help` (through cli-parser.ts) and the README table
// from it, so names, defaults and docs cannot drift apart (ARCHITECTURE.md, "Layers").
//
// Precedence: command-line flag > environment <PREFIX><OPTION> > `--config FILE` (JSON) >
// default. Every value is validated by its spec's parse(); a wrong one becomes a ConfigError
// whose message is one line naming where the value came from
// (`--min-port must be 1024..65535, got "70000"`; the parsers are in option-values.ts).
// Cross-field rules stay with each CLI.

import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "./log.js";
import {
  ConfigError,
  fail,
  parseEnum,
  type RawValue,
  readJsonFile,
  type Scalar,
} from "./option-values.js";

/**
 * What a running process does with a changed value of an option on reload (the relay's
 * SIGHUP): "live" = read again and applied, "restart" = read once at start.
 */
export type OptionReload = "live" | "restart";

export interface OptionSpec<T, G extends string = string> {
  /** Heading the option is listed under in `--help`. */
  readonly group: G;
  readonly describe: string;
  /** Value placeholder for help/docs, e.g. "ADDR:PORT". */
  readonly placeholder?: string;
  /** A switch: `--flag` alone means true (env/config: true|false|1|0|yes|no). */
  readonly boolean?: boolean;
  readonly repeatable?: boolean;
  /** Left out of `--help` (still in the README table): test hooks. */
  readonly hidden?: boolean;
  /** Environment variable name; default <PREFIX><UPPER_SNAKE>. */
  readonly env?: string;
  /** What separates a repeatable option's items in its environment variable; default ",". */
  readonly envSeparator?: string;
  /**
   * Hand empty items of the environment variable (`a,,b`, a trailing comma) to parse() instead
   * of dropping them, so it can refuse them: for secrets, where a stray comma must be told.
   */
  readonly keepEmptyEnvItems?: boolean;
  /** Text for help/docs where the default is not a literal. */
  readonly defaultText: string;
  /** What a reload does with it (the reference page says so); absent means "restart". */
  readonly reload?: OptionReload;
  /** Value when no source sets the option. */
  readonly default: T;
  /**
   * Turns a raw value (a string from a flag or env var, or any JSON value from the file) into
   * T; throws ConfigError naming `where` on a bad value. Repeatable options get an array.
   */
  parse(raw: RawValue, where: string): T;
}

export type OptionTable = Readonly<Record<string, OptionSpec<unknown>>>;

/** The parsed value of every option of a table. */
export type OptionValues<O extends OptionTable> = {
  -readonly [K in keyof O]: O[K] extends OptionSpec<infer T> ? T : never;
};

/** What the `--config` option and the README row say about the config file. */
export const CONFIG_OPTION_DESCRIBE = "JSON file with options (keys as flag names or camelCase)";

/** option name -> camelCase (`min-port` -> `minPort`), as yargs and config files spell it. */
export function camel(option: string): string {
  return option.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** --log-format and --log-level, alike in every CLI: spread them into a table under `group`. */
export function logOptions<G extends string>(
  group: G,
): { "log-format": OptionSpec<LogFormat, G>; "log-level": OptionSpec<LogLevel, G> } {
  return {
    "log-format": {
      group,
      describe: "log line format",
      placeholder: LOG_FORMATS.join("|"),
      defaultText: "text",
      default: "text",
      parse: (raw, where) => parseEnum(raw, where, LOG_FORMATS),
    },
    "log-level": {
      group,
      describe: "least severe level logged",
      placeholder: LOG_LEVELS.join("|"),
      defaultText: "info",
      default: "info",
      parse: (raw, where) => parseEnum(raw, where, LOG_LEVELS),
    },
  };
}

/**
 * An option's value type as `--help` and the reference page name it: `boolean` for a switch,
 * the choices a placeholder spells (`json|text`), `number` where the default or placeholder is
 * one, else `string`.
 */
export function optionType(spec: OptionSpec<unknown>): string {
  if (spec.boolean) return "boolean";
  if (spec.placeholder !== undefined && /^[a-z0-9-]+(\|[a-z0-9-]+)+$/.test(spec.placeholder)) {
    return spec.placeholder;
  }
  return typeof spec.default === "number" || /^(N|SECONDS|BYTES)$/.test(spec.placeholder ?? "")
    ? "number"
    : "string";
}

// ---------------------------------------------------------------------------------------------
// Sources

/** One source of raw values (flags, environment or config file). */
export interface Layer<N extends string> {
  readonly values: Partial<Record<N, Scalar | Scalar[]>>;
  /** How an error names the source of `option` (`--min-port`, `TURNPIKE_MIN_PORT`, ...). */
  where(option: N): string;
}

/** yargs' parsed argv. */
export type ArgvRecord = Record<string, unknown>;

/** One CLI's option table plus its environment prefix: everything derived from the table. */
export class OptionSet<O extends OptionTable> {
  /** Option names in table order (help, README and resolution order). */
  readonly names: readonly (keyof O & string)[];

  constructor(
    readonly table: O,
    /** e.g. "TURNPIKE_". */
    readonly envPrefix: string,
  ) {
    this.names = Object.keys(table) as (keyof O & string)[];
  }

  /** The environment variable for an option (`min-port` -> TURNPIKE_MIN_PORT). */
  envName(option: string): string {
    const s = (this.table as Record<string, OptionSpec<unknown>>)[option];
    return s?.env ?? `${this.envPrefix}${option.toUpperCase().replaceAll("-", "_")}`;
  }

  /** The variable naming the config file (TURNPIKE_CONFIG). */
  get configEnv(): string {
    return `${this.envPrefix}CONFIG`;
  }

  /** The options given on the command line (yargs output), restricted to `names`. */
  flagLayer(
    args: ArgvRecord,
    names: readonly (keyof O & string)[] = this.names,
  ): Layer<keyof O & string> {
    const values: Partial<Record<keyof O & string, Scalar | Scalar[]>> = {};
    for (const name of names) {
      const v = args[camel(name)] ?? args[name];
      if (v === undefined) continue;
      values[name] = v as Scalar | Scalar[];
    }
    return { values, where: (name) => `--${name}` };
  }

  envLayer(env: NodeJS.ProcessEnv): Layer<keyof O & string> {
    const values: Partial<Record<keyof O & string, Scalar | Scalar[]>> = {};
    for (const name of this.names) {
      const text = env[this.envName(name)];
      // An empty variable counts as unset (docker-compose style `TURNPIKE_X=`).
      if (text === undefined || text.trim() === "") continue;
      const s = this.table[name] as OptionSpec<unknown>;
      values[name] = s.repeatable
        ? text
            .split(s.envSeparator ?? ",")
            .map((v) => v.trim())
            .filter((v) => v !== "" || s.keepEmptyEnvItems === true)
        : text;
    }
    return { values, where: (name) => this.envName(name) };
  }

  /**
   * The config file at `path` (`where` names how it was given: --config or TURNPIKE_CONFIG).
   * Keys are flag names or their camelCase; null values count as unset.
   */
  fileLayer(
    path: string,
    where: string,
    read: (path: string, where: string) => unknown = readJsonFile,
  ): Layer<keyof O & string> {
    const data = read(path, where);
    if (typeof data !== "object" || data === null || Array.isArray(data)) {
      throw new ConfigError(`${where} file ${JSON.stringify(path)} must hold a JSON object`);
    }
    const byKey = new Map<string, keyof O & string>();
    for (const name of this.names) {
      byKey.set(name, name);
      byKey.set(camel(name), name);
    }
    const values: Partial<Record<keyof O & string, Scalar | Scalar[]>> = {};
    for (const [key, value] of Object.entries(data)) {
      if (value === null) continue;
      const name = byKey.get(key);
      if (name === undefined) {
        throw new ConfigError(
          `${where} file ${JSON.stringify(path)} has an unknown option "${key}"`,
        );
      }
      const ok =
        typeof value === "string" ||
        typeof value === "number" ||
        typeof value === "boolean" ||
        (Array.isArray(value) &&
          value.every((v) => typeof v === "string" || typeof v === "number"));
      if (!ok) fail(`"${key}" in ${path}`, "a string, number, boolean or array of strings", value);
      values[name] = value as Scalar | Scalar[];
    }
    return { values, where: (name) => `"${name}" in ${path}` };
  }

  /** Every option's value from the first layer that sets it, else its default. */
  resolve(layers: readonly Layer<keyof O & string>[]): OptionValues<O> {
    const out = {} as Record<string, unknown>;
    for (const name of this.names) {
      const s = this.table[name] as OptionSpec<unknown>;
      const layer = layers.find((l) => l.values[name] !== undefined);
      out[name] =
        layer === undefined ? s.default : s.parse(layer.values[name] as Scalar, layer.where(name));
    }
    return out as OptionValues<O>;
  }

  /** The `--config FILE` path and how it was given (flag, else TURNPIKE_CONFIG), if any. */
  configPath(args: ArgvRecord, env: NodeJS.ProcessEnv): [string, string] | undefined {
    const flag = args.config;
    if (flag !== undefined) {
      const text = Array.isArray(flag) ? flag[flag.length - 1] : flag;
      return [String(text), "--config"];
    }
    const fromEnv = env[this.configEnv];
    if (fromEnv !== undefined && fromEnv.trim() !== "") return [fromEnv.trim(), this.configEnv];
    return undefined;
  }

  /** One warning per <PREFIX>* variable that names no option (a typo would otherwise be silent). */
  unknownEnvWarnings(env: NodeJS.ProcessEnv): string[] {
    const known = new Set(this.names.map((n) => this.envName(n)));
    known.add(this.configEnv);
    // The workspace's Node line switch (tools/node-lines), not an option of ours.
    known.add(`${this.envPrefix}NODE_LINE`);
    const warnings: string[] = [];
    for (const name of Object.keys(env)) {
      if (name.startsWith(this.envPrefix) && !known.has(name)) {
        warnings.push(`ignoring unknown environment variable ${name}`);
      }
    }
    return warnings;
  }

  /** How `--help` and the reference page name an option's value type. */
  typeOf(option: keyof O & string): string {
    return optionType(this.table[option] as OptionSpec<unknown>);
  }

  /** The README configuration table (Markdown): option, env var, default, meaning. */
  renderTable(): string {
    const cell = (text: string) => text.replaceAll("|", "\\|");
    const rows = [
      "| option | env var | default | meaning |",
      "|---|---|---|---|",
      ...this.names.map((name) => {
        const s = this.table[name] as OptionSpec<unknown>;
        const flag = s.boolean ? `--${name}` : `--${name} ${s.placeholder ?? "VALUE"}`;
        return `| ${cell(`\`${flag}\``)} | \`${this.envName(name)}\` | ${cell(s.defaultText)} | ${cell(s.describe)} |`;
      }),
      `| \`--config FILE\` | \`${this.configEnv}\` | none | ${CONFIG_OPTION_DESCRIBE} |`,
    ];
    return `${rows.join("\n")}\n`;
  }
}
