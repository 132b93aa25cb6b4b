import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { fillReadmeTables } from "../src/readme-tables.js";

describe("README", () => {
  it("carries the configuration and metrics tables generated from the code", () => {
    const readme = readFileSync(new URL("../../../README.md", import.meta.url), "utf8");
    // Stale? run: pnpm exec tsc -b && node packages/relay-server/scripts/config-table.mjs --write
    expect(readme).toBe(fillReadmeTables(readme));
  });
});
