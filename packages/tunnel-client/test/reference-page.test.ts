// docs/turnpike-tunnel.md is generated from the option table and `list --help`: this fails when
// the committed page is stale (run `node scripts/cli-docs.mjs --write` after a build).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { envName, OPTIONS } from "../src/config/options.js";
import { renderTunnelReference } from "../src/config/reference.js";

const PAGE = new URL("../../../docs/turnpike-tunnel.md", import.meta.url);

describe("docs/turnpike-tunnel.md", () => {
  const page = renderTunnelReference();

  it("is what the option table and `list --help` render", () => {
    // Stale? pnpm exec tsc -b && node scripts/cli-docs.mjs --write
    expect(readFileSync(PAGE, "utf8")).toBe(page);
  });

  it("has a row for every option, hidden ones included, with its variable", () => {
    for (const name of Object.keys(OPTIONS)) {
      const row = page.split("\n").find((l) => l.startsWith(`| \`--${name}`));
      expect(row, name).toBeDefined();
      expect(row).toContain(`| \`${envName(name)}\` |`);
    }
    expect(page).toContain("### `turnpike-tunnel list`");
  });
});
