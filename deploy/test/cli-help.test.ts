// Both CLIs' --help as an operator reads it: every option in two columns (flag, description) with its type, default and variable on a line below, nothing
// glued together, and the type each option's value really has, as the README's configuration
// tables (generated from the same option tables) give its placeholder and default.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { optionBlocks } from "@turnpike/test-support/help";
import { TURNPIKE_BIN } from "@turnpike/test-support/turnpike";
import { describe, expect, it } from "vitest";
import { repoText } from "./docs.js";
import { REPO } from "./launch.js";

const run = promisify(execFile);

const CLIS = [
  { name: "turnpike-relay", bin: TURNPIKE_BIN, readme: "README.md" },
  {
    name: "turnpike-tunnel",
    bin: join(REPO, "packages/tunnel-client/bin/turnpike-tunnel.js"),
    readme: "packages/tunnel-client/README.md",
  },
] as const;

/** One of the type, default or variable tags right after other text. */
const GLUED = /\S\[(string|number|boolean|array|default:|env:)/;

/** The README table's rows: flag -> the type --help should show for its value. */
function expectedTypes(readme: string): Map<string, string> {
  const types = new Map<string, string>();
  for (const row of readme.matchAll(/^\| `(--[\w-]+)(?: ([^`]+))?` \| `\w+` \| ([^|]*) \|/gm)) {
    const [, flag, placeholder, defaultText] = row;
    const type =
      placeholder === undefined
        ? "boolean"
        : /^[a-z0-9-]+(\\\|[a-z0-9-]+)+$/.test(placeholder)
          ? placeholder.replaceAll("\\|", "|")
          : /^(N|SECONDS|BYTES)$/.test(placeholder) || /^\d+(\.\d+)?$/.test(defaultText!.trim())
            ? "number"
            : "string";
    types.set(flag!, type);
  }
  return types;
}

describe.each(CLIS)("$name --help", ({ bin, readme }) => {
  const types = expectedTypes(repoText(readme));

  it("lists every option in two columns, nothing glued, with the type of its value", async () => {
    const { stdout } = await run(process.execPath, [bin, "--help"]);
    for (const line of stdout.split("\n")) {
      expect(line.length, line).toBeLessThanOrEqual(120);
      // yargs glued its "[string] [default: ...]" column to a description filling its width.
      expect(line, line).not.toMatch(GLUED);
    }
    const blocks = optionBlocks(stdout);
    expect(types.size).toBeGreaterThan(10);
    let listed = 0;
    for (const [flag, type] of types) {
      const block = blocks.get(flag);
      if (block === undefined) continue; // a test hook, hidden from --help
      listed++;
      expect(block, flag).toContain(` [${type}] `);
      expect(block, flag).toMatch(/ \[env: TURNPIKE_\w+\]$/);
    }
    expect(listed).toBeGreaterThan(types.size - 4);
  });
});
