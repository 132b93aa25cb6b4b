// docs/turnpike-relay.md is generated from the option table and the subcommands' --help: this
// fails when the committed page is stale (run `node scripts/cli-docs.mjs --write` after a build).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { envName, OPTIONS } from "../src/config/options.js";
import { renderRelayReference } from "../src/config/reference.js";
import { LIVE_OPTIONS } from "../src/config/reload.js";

const PAGE = new URL("../../../docs/turnpike-relay.md", import.meta.url);

describe("docs/turnpike-relay.md", () => {
  const page = renderRelayReference();

  it("is what the option table and the subcommands render", () => {
    // Stale? pnpm exec tsc -b && node scripts/cli-docs.mjs --write
    expect(readFileSync(PAGE, "utf8")).toBe(page);
  });

  it("has a row for every option, hidden ones included, with its variable and what SIGHUP does", () => {
    for (const [name, spec] of Object.entries(OPTIONS)) {
      const row = page.split("\n").find((l) => l.startsWith(`| \`--${name}`));
      expect(row, name).toBeDefined();
      expect(row).toContain(`| \`${envName(name)}\` |`);
      expect(row).toContain(`| ${spec.reload} |`);
    }
    expect(page).toContain("### `turnpike-relay credentials`");
    expect(page).toContain("--end-user");
  });

  it("says an option reloads live exactly when a reload applies it (config/reload.ts)", () => {
    const live = Object.entries(OPTIONS)
      .filter(([, spec]) => spec.reload === "live")
      .map(([name]) => name);
    expect(live.sort()).toEqual([...LIVE_OPTIONS].sort());
  });
});
