#!/usr/bin/env node
// The README's configuration and metrics tables, generated from the same descriptions the CLI
// uses (src/config/options.ts OPTIONS, src/metric-docs.ts METRIC_DOCS), so docs and code cannot
// drift. Needs a build (dist/).
//   node packages/relay-server/scripts/config-table.mjs            print both tables
//   node packages/relay-server/scripts/config-table.mjs --write    refresh them in README.md
// (test/readme.test.ts fails when README.md is stale.)
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { renderConfigTable } from "../dist/config/options.js";
import { renderMetricsTable } from "../dist/metric-docs.js";
import { fillReadmeTables } from "../dist/readme-tables.js";

if (process.argv[2] === "--write") {
  const readme = fileURLToPath(new URL("../../../README.md", import.meta.url));
  writeFileSync(readme, fillReadmeTables(readFileSync(readme, "utf8")));
} else {
  process.stdout.write(`${renderConfigTable()}\n${renderMetricsTable()}`);
}
