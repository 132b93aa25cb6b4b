#!/usr/bin/env node
// Prints the README's configuration and metrics tables, generated from the same descriptions
// the CLI uses (src/config.ts OPTIONS, src/metrics.ts METRIC_DOCS). Needs a build (dist/).
//   node packages/relay-server/scripts/config-table.mjs            both tables
//   node packages/relay-server/scripts/config-table.mjs config     configuration only
//   node packages/relay-server/scripts/config-table.mjs metrics    metrics only
import { renderConfigTable } from "../dist/config.js";
import { renderMetricsTable } from "../dist/metrics.js";

const which = process.argv[2] ?? "all";
if (which === "all" || which === "config") process.stdout.write(renderConfigTable());
if (which === "all") process.stdout.write("\n");
if (which === "all" || which === "metrics") process.stdout.write(renderMetricsTable());
