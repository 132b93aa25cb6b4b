import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { optionBlocks } from "@turnpike/test-support/help";
import { describe, expect, it } from "vitest";
import {
  addConfigOption,
  addTableOptions,
  baseParser,
  helpText,
  withHelpWidth,
  yargsMessage,
} from "../src/cli-parser.js";
import { renderCliReference } from "../src/cli-reference.js";
import {
  ConfigError,
  list,
  listNonEmpty,
  parseBoolean,
  parseEnum,
  parseInteger,
} from "../src/option-values.js";
import { type ArgvRecord, OptionSet, type OptionSpec } from "../src/options.js";

// A small table in the shape both CLIs use.
const TABLE = {
  port: {
    group: "Network",
    describe: "port to use",
    placeholder: "N",
    defaultText: "3478",
    default: 3478,
    reload: "restart",
    parse: (raw, where) => parseInteger(raw, where, 1, 65535),
  } satisfies OptionSpec<number>,
  peer: {
    group: "Network",
    describe: "peer | address (repeatable)",
    placeholder: "IP",
    repeatable: true,
    defaultText: "none",
    default: [] as string[],
    parse: (raw) => listNonEmpty(raw),
  } satisfies OptionSpec<string[]>,
  window: {
    group: "Network",
    describe: "a window",
    repeatable: true,
    envSeparator: ";",
    defaultText: "always",
    default: [] as string[],
    parse: (raw) => list(raw),
  } satisfies OptionSpec<string[]>,
  "dry-run": {
    group: "Operations",
    describe: "change nothing",
    boolean: true,
    reload: "live",
    defaultText: "false",
    default: false,
    parse: (raw, where) => parseBoolean(raw, where),
  } satisfies OptionSpec<boolean>,
  "test-hook": {
    group: "Testing",
    describe: "tests only",
    placeholder: "X",
    hidden: true,
    env: "HOOK",
    defaultText: "none",
    default: undefined as string | undefined,
    parse: (raw, where) => parseEnum(raw, where, ["a", "b"] as const),
  } satisfies OptionSpec<string | undefined>,
};
const OPTIONS = new OptionSet(TABLE, "KIT_");

function configFile(content: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "runtime-kit-")), "config.json");
  writeFileSync(path, content);
  return path;
}

function parse(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const parser = addTableOptions(addConfigOption(baseParser(argv, "kit"), OPTIONS), OPTIONS);
  const args = parser.parseSync() as ArgvRecord;
  const layers = [OPTIONS.flagLayer(args), OPTIONS.envLayer(env)];
  const file = OPTIONS.configPath(args, env);
  if (file !== undefined) layers.push(OPTIONS.fileLayer(file[0], file[1]));
  return OPTIONS.resolve(layers);
}

describe("OptionSet", () => {
  it("takes a flag over the environment over the config file over the default", () => {
    const path = configFile(JSON.stringify({ port: 3, "dry-run": true, peer: ["10.0.0.1"] }));
    const env = { KIT_PORT: "2", KIT_CONFIG: path };
    expect(parse(["--port", "1"], env).port).toBe(1);
    expect(parse([], env).port).toBe(2);
    expect(parse([], { KIT_CONFIG: path })).toMatchObject({ port: 3, "dry-run": true });
    expect(parse([]).port).toBe(3478);
  });

  it("splits environment lists on the spec's separator and drops empty items", () => {
    const v = parse([], { KIT_PEER: "10.0.0.1, ,10.0.0.2,", KIT_WINDOW: "Mon, Tue;Wed" });
    expect(v.peer).toEqual(["10.0.0.1", "10.0.0.2"]);
    expect(v.window).toEqual(["Mon, Tue", "Wed"]);
  });

  it("hands empty environment list items to parse where the spec keeps them", () => {
    const secrets = new OptionSet(
      {
        secret: {
          group: "Network",
          describe: "secrets (repeatable)",
          repeatable: true,
          keepEmptyEnvItems: true,
          defaultText: "none",
          default: [] as string[],
          parse: (raw) => list(raw),
        } satisfies OptionSpec<string[]>,
      },
      "KIT_",
    );
    expect(secrets.resolve([secrets.envLayer({ KIT_SECRET: "a,,b," })]).secret).toEqual([
      "a",
      "",
      "b",
      "",
    ]);
  });

  it("names the source of a bad value in a one-line ConfigError", () => {
    expect(() => parse(["--port", "70000"])).toThrow('--port must be 1..65535, got "70000"');
    expect(() => parse([], { KIT_PORT: "x" })).toThrow('KIT_PORT must be 1..65535, got "x"');
    expect(() => parse([], { HOOK: "c" })).toThrow('HOOK must be one of a|b, got "c"');
    const path = configFile('{"dryRun": "maybe"}');
    expect(() => parse(["--config", path])).toThrow(
      `"dry-run" in ${path} must be true or false, got "maybe"`,
    );
  });

  it("rejects config files that are missing, not JSON objects or name unknown options", () => {
    expect(() => parse(["--config", "/nonexistent/kit.json"])).toThrow(
      '--config must be a readable file, got "/nonexistent/kit.json" (ENOENT)',
    );
    const notJson = configFile("{nope");
    expect(() => parse([], { KIT_CONFIG: notJson })).toThrow(
      new RegExp(`^KIT_CONFIG file "${notJson}" is not valid JSON: `),
    );
    expect(() => parse(["--config", configFile("[1]")])).toThrow("must hold a JSON object");
    expect(() => parse(["--config", configFile('{"prot": 1}')])).toThrow(
      'has an unknown option "prot"',
    );
  });

  it("turns yargs' unknown-flag and missing-value errors into our wording", () => {
    expect(() => parse(["--prot", "1"])).toThrow(
      new ConfigError("unknown option --prot (see --help)"),
    );
    expect(() => parse(["--port"])).toThrow("--port needs a value");
    expect(yargsMessage("Not enough arguments following: dryRun")).toBe("--dry-run needs a value");
  });

  it("warns once per unknown variable under the prefix", () => {
    const env = { KIT_PORT: "1", KIT_CONFIG: "x", KIT_PROT: "1", HOOK: "a", OTHER: "1" };
    expect(OPTIONS.unknownEnvWarnings(env)).toEqual([
      "ignoring unknown environment variable KIT_PROT",
    ]);
  });

  it("renders the README table with every option, the hidden ones included", () => {
    expect(OPTIONS.renderTable()).toBe(
      [
        "| option | env var | default | meaning |",
        "|---|---|---|---|",
        "| `--port N` | `KIT_PORT` | 3478 | port to use |",
        "| `--peer IP` | `KIT_PEER` | none | peer \\| address (repeatable) |",
        "| `--window VALUE` | `KIT_WINDOW` | always | a window |",
        "| `--dry-run` | `KIT_DRY_RUN` | false | change nothing |",
        "| `--test-hook X` | `HOOK` | none | tests only |",
        "| `--config FILE` | `KIT_CONFIG` | none | JSON file with options (keys as flag names or camelCase) |",
        "",
      ].join("\n"),
    );
  });

  it("lists options under their groups in --help and leaves hidden ones out", () => {
    const text = helpText(
      addTableOptions(addConfigOption(baseParser([], "kit"), OPTIONS), OPTIONS),
    );
    expect(text).toMatch(
      /Network:\n\s+--port\s+port to use\n\s+\[number\] \[default: 3478\] \[env: KIT_PORT\]\n/,
    );
    expect(text).toContain("Operations:");
    expect(text).toMatch(/General:\n\s+--config/);
    expect(text).not.toContain("test-hook");
  });

  it("puts each option's type, default and variable below its description, never glued to it", () => {
    // Narrow, so that descriptions fill their column (where yargs' own layout glued them).
    const table = {
      ...TABLE,
      mode: {
        group: "Operations",
        describe: "a description long enough to fill the whole description column of this help",
        placeholder: "fast|safe",
        defaultText: "safe",
        default: "safe",
        parse: (raw, where) => parseEnum(raw, where, ["fast", "safe"] as const),
      } satisfies OptionSpec<string>,
    };
    const options = new OptionSet(table, "KIT_");
    const parser = addTableOptions(addConfigOption(baseParser([], "kit"), options), options);
    const text = helpText(parser.wrap(60));
    const blocks = optionBlocks(text);
    expect(blocks.get("--port")).toBe("port to use [number] [default: 3478] [env: KIT_PORT]");
    expect(blocks.get("--peer")).toBe(
      "peer | address (repeatable) [string] [default: none] [env: KIT_PEER]",
    );
    expect(blocks.get("--dry-run")).toBe(
      "change nothing [boolean] [default: false] [env: KIT_DRY_RUN]",
    );
    expect(blocks.get("--mode")).toMatch(/ \[fast\|safe\] \[default: safe\] \[env: KIT_MODE\]$/);
    expect(blocks.get("--config")).toBe(
      "JSON file with options (keys as flag names or camelCase) [string] [env: KIT_CONFIG]",
    );
    expect(blocks.get("--help")).toBe("show this help");
    // No type, default or variable tag right after other text.
    for (const line of text.split("\n")) {
      expect(line).not.toMatch(/\S\[(string|number|boolean|fast|default:|env:)/);
    }
  });

  it("shows an option declared as a number as one, and hands over the text typed", () => {
    const parser = baseParser(["--ttl", "12x"], "kit").option("ttl", {
      type: "number",
      requiresArg: true,
      describe: "validity in seconds",
    });
    expect(optionBlocks(helpText(parser)).get("--ttl")).toBe("validity in seconds [number]");
    expect((parser.parseSync() as ArgvRecord).ttl).toBe("12x");
  });
});

describe("the reference page", () => {
  const page = (reload?: string) =>
    renderCliReference({
      program: "kit",
      regenerate: "node kit-docs.mjs",
      summary: "Kit does things.",
      usage: ["kit [options]", "kit probe [--deep]"],
      options: OPTIONS,
      ...(reload !== undefined ? { reload } : {}),
      subcommands: [
        {
          name: "probe",
          help: withHelpWidth(60, () =>
            helpText(baseParser([], "kit probe").usage("Usage: kit probe [--deep]")),
          ),
        },
      ],
      exitCodes: [["2", "a | bad option"]],
      signals: [["SIGHUP", "reload"]],
      files: [],
      environment: [["OTEL_SERVICE_NAME", "service.name"]],
    });

  it("lists every option by group with env var, type, default, reload and meaning", () => {
    const text = page("SIGHUP");
    expect(text).toContain(
      "### Network\n\n| option | env var | type | default | reload | meaning |",
    );
    expect(text).toContain("| `--port N` | `KIT_PORT` | number | 3478 | restart | port to use |");
    expect(text).toContain(
      "| `--peer IP` | `KIT_PEER` | string (repeatable) | none | restart | peer \\| address (repeatable) |",
    );
    expect(text).toContain(
      "| `--dry-run` | `KIT_DRY_RUN` | boolean | false | live | change nothing |",
    );
    // Hidden options are documented too, apart.
    expect(text).toContain("### Test hooks (not in --help)");
    expect(text).toContain("| `--test-hook X` | `HOOK` |");
    expect(text).toContain(
      "## Subcommands\n\n### `kit probe`\n\n```text\nUsage: kit probe [--deep]",
    );
    expect(text).toContain("| 2 | a \\| bad option |");
    expect(text).not.toContain("## Files");
    expect(text.startsWith("<!-- generated from the option table by `node kit-docs.mjs`")).toBe(
      true,
    );
  });

  it("has no reload column for a program without a reload", () => {
    expect(page()).toContain("| `--port N` | `KIT_PORT` | number | 3478 | port to use |");
    expect(page()).not.toContain("| default | reload |");
  });

  it("wraps help text at the width asked for, whatever the terminal", () => {
    const long = () =>
      helpText(
        baseParser([], "kit").option("deep", {
          type: "boolean",
          describe: "look at every layer of every thing there is, slowly and with great care",
        }),
      );
    const narrow = withHelpWidth(40, long);
    expect(Math.max(...narrow.split("\n").map((l) => l.length))).toBeLessThanOrEqual(40);
    expect(withHelpWidth(100, long)).not.toBe(narrow);
  });
});
