#!/usr/bin/env node
// Builds the native module at install time with node-gyp, against the headers of the Node that
// runs this script (--nodedir at its installation: nothing is downloaded). It never fails the
// install: where the module cannot be built (not Linux, no compiler, no headers) the relay runs
// on node:dgram and says so at start. `--strict` (used by the tests) turns a failure into exit 1.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const strict = process.argv.includes("--strict");

function give_up(reason) {
  const line = `@turnpike/udp-batch: native module not built (${reason}); the relay will use node:dgram`;
  if (strict) {
    console.error(line);
    process.exit(1);
  }
  console.warn(line);
  process.exit(0);
}

if (process.platform !== "linux") give_up(`${process.platform} is not Linux`);
if (process.env.TURNPIKE_SKIP_NATIVE === "1") give_up("TURNPIKE_SKIP_NATIVE=1");

// The Node installation this script runs on: <prefix>/bin/node and <prefix>/include/node.
const nodedir = resolve(dirname(process.execPath), "..");
if (!existsSync(join(nodedir, "include", "node", "node_api.h"))) {
  give_up(`no headers at ${join(nodedir, "include", "node")}`);
}

// node-gyp: the one pnpm or npm puts on PATH for install scripts, else npm's bundled copy.
function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const npmExec = process.env.npm_execpath;
  if (npmExec) {
    candidates.push(join(dirname(npmExec), "node_modules", "node-gyp", "bin", "node-gyp.js"));
    candidates.push(join(dirname(npmExec), "..", "node_modules", "node-gyp", "bin", "node-gyp.js"));
  }
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    candidates.push(
      join(
        dir,
        "..",
        "lib",
        "node_modules",
        "npm",
        "node_modules",
        "node-gyp",
        "bin",
        "node-gyp.js",
      ),
    );
    candidates.push(
      join(
        dir,
        "..",
        "lib",
        "node_modules",
        "pnpm",
        "dist",
        "node_modules",
        "node-gyp",
        "bin",
        "node-gyp.js",
      ),
    );
  }
  return candidates.find((c) => c.endsWith(".js") && existsSync(c));
}

const gyp = findNodeGyp();
if (!gyp) give_up("node-gyp not found");
const args = [gyp, "rebuild", `--nodedir=${nodedir}`, "--loglevel=warn"];
const run = spawnSync(process.execPath, args, { cwd: root, stdio: "inherit" });
if (run.status !== 0) give_up(`node-gyp exited with ${run.status ?? run.signal}`);
console.log(`@turnpike/udp-batch: built against ${nodedir} (Node ${process.version})`);
