// A CLI's reference page (docs/<program>.md), generated from the same option table as --help and
// the README tables, so that it cannot drift from the code: every option with its environment
// variable, value type, default and what a reload does with it, then the subcommands (their own
// --help text), exit codes, signals, files and the other environment variables the program
// reads. Each CLI describes the prose parts as data next to its option table; a test compares the
// committed page with this rendering, and a script writes it.

import { type OptionSet, type OptionSpec, type OptionTable, optionType } from "./options.js";

/** Rows of a two-column table: what, and what it means. */
export type Rows = readonly (readonly [string, string])[];

export interface CliSubcommand {
  /** As typed after the program name: `credentials`. */
  readonly name: string;
  /** Its `--help` text, as the program prints it. */
  readonly help: string;
}

export interface CliReference<O extends OptionTable> {
  readonly program: string;
  /** The command that rewrites the page, named in its header. */
  readonly regenerate: string;
  /** What the program is, one paragraph of Markdown. */
  readonly summary: string;
  /** The synopsis, one line per form (`turnpike-relay [options]`, ...). */
  readonly usage: readonly string[];
  readonly options: OptionSet<O>;
  /**
   * What a reload is for this program (`SIGHUP`), when it has one: the options table then says
   * per option whether a reload applies a new value ("live") or it needs a restart.
   */
  readonly reload?: string;
  readonly subcommands: readonly CliSubcommand[];
  /** The HTTP API the program serves (request, what it answers). */
  readonly endpoints?: Rows;
  readonly exitCodes: Rows;
  readonly signals: Rows;
  readonly files: Rows;
  /** Environment variables besides the options' own (OTEL_*, ...). */
  readonly environment: Rows;
}

/** The reference page as Markdown. */
export function renderCliReference<O extends OptionTable>(ref: CliReference<O>): string {
  const out: string[] = [
    `<!-- generated from the option table by \`${ref.regenerate}\`; a test keeps it current: edit the table, not this page -->`,
    "",
    `# \`${ref.program}\``,
    "",
    ref.summary.trim(),
    "",
    "```text",
    ...ref.usage,
    "```",
    "",
    "## Options",
    "",
    `Every option is also read from its environment variable (lists comma-separated) and from \`--config FILE\` (JSON, keys as flag names or camelCase). Precedence: flag > environment > config file > default. A wrong value stops ${ref.program} at start with one line naming the option (exit 2).`,
  ];
  if (ref.reload !== undefined) {
    out.push(
      "",
      `Reload: ${ref.reload}. "live" options are read again from their sources and applied to the running process; "restart" ones keep the value they had at start until the next start.`,
    );
  }
  out.push(...optionTables(ref.options, ref.reload !== undefined));
  if (ref.subcommands.length > 0) {
    out.push("", "## Subcommands");
    for (const sub of ref.subcommands) {
      out.push("", `### \`${ref.program} ${sub.name}\``, "", "```text", sub.help.trimEnd(), "```");
    }
  }
  for (const [title, rows, head] of [
    ["HTTP endpoints", ref.endpoints ?? [], "request"],
    ["Exit codes", ref.exitCodes, "code"],
    ["Signals", ref.signals, "signal"],
    ["Files", ref.files, "file"],
    ["Other environment variables", ref.environment, "variable"],
  ] as const) {
    if (rows.length === 0) continue;
    out.push("", `## ${title}`, "", `| ${head} | meaning |`, "|---|---|");
    for (const [what, meaning] of rows) out.push(`| ${cell(what)} | ${cell(meaning)} |`);
  }
  return `${out.join("\n")}\n`;
}

/** One table per option group, in table order; hidden options (test hooks) in their own. */
function optionTables<O extends OptionTable>(options: OptionSet<O>, withReload: boolean): string[] {
  const groups = new Map<string, string[]>();
  for (const name of options.names) {
    const s = options.table[name] as OptionSpec<unknown>;
    const group = s.hidden ? "Test hooks (not in --help)" : s.group;
    groups.set(group, [...(groups.get(group) ?? []), name]);
  }
  const head = withReload
    ? ["| option | env var | type | default | reload | meaning |", "|---|---|---|---|---|---|"]
    : ["| option | env var | type | default | meaning |", "|---|---|---|---|---|"];
  const out: string[] = [];
  for (const [group, names] of groups) {
    out.push("", `### ${group}`, "", ...head);
    for (const name of names) {
      const s = options.table[name] as OptionSpec<unknown>;
      const flag = s.boolean ? `--${name}` : `--${name} ${s.placeholder ?? "VALUE"}`;
      const type = `${optionType(s)}${s.repeatable ? " (repeatable)" : ""}`;
      const cells = [
        `\`${flag}\``,
        `\`${options.envName(name)}\``,
        type,
        s.defaultText,
        ...(withReload ? [s.reload ?? "restart"] : []),
        s.describe,
      ];
      out.push(`| ${cells.map(cell).join(" | ")} |`);
    }
  }
  out.push(
    "",
    `\`--config FILE\` (\`${options.configEnv}\`): the JSON file of options, read at start.`,
  );
  return out;
}

function cell(text: string): string {
  return text.replaceAll("|", "\\|").replaceAll("\n", " ");
}
