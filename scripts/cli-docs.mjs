#!/usr/bin/env node
// The documents generated from the CLIs' option tables, so that they cannot drift from the code:
// docs/turnpike-relay.md and docs/turnpike-tunnel.md (every option, variable, type, default and
// reload behaviour; subcommands, exit codes, signals, files) and the tables in README.md.
// Needs a build (`pnpm exec tsc -b`); tests fail when a committed document is stale.
//   node scripts/cli-docs.mjs           say which documents are stale (exit 1 if any)
//   node scripts/cli-docs.mjs --write   rewrite them
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { fillReadmeTables, renderRelayReference } from "@turnpike/relay-server";
import { renderTunnelReference } from "@turnpike/tunnel-client";

const at = (path) => fileURLToPath(new URL(`../${path}`, import.meta.url));
const read = (path) => readFileSync(at(path), "utf8");
const documents = {
  "docs/turnpike-relay.md": () => renderRelayReference(),
  "docs/turnpike-tunnel.md": () => renderTunnelReference(),
  "README.md": () => fillReadmeTables(read("README.md")),
};

let stale = 0;
for (const [path, render] of Object.entries(documents)) {
  const text = render();
  let current = "";
  try {
    current = read(path);
  } catch {
    // a page not written yet
  }
  if (current === text) continue;
  if (process.argv[2] === "--write") {
    writeFileSync(at(path), text);
    process.stdout.write(`wrote ${path}\n`);
  } else {
    process.stdout.write(`${path} is stale: node scripts/cli-docs.mjs --write\n`);
    stale++;
  }
}
process.exitCode = stale > 0 ? 1 : 0;
