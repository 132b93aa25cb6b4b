#!/usr/bin/env node
// Builds the bench's native load generator, setup generator and echo peer (native/*.c) with the
// system's C compiler, at install time and again by the bench when a source is newer than its binary. It
// never fails the install: where they cannot be built (not Linux, no compiler) the bench runs
// its JavaScript generator and says so in the report. `--strict` turns a failure into exit 1.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const native = resolve(dirname(fileURLToPath(import.meta.url)), "../native");
const out = join(native, "build");
const strict = process.argv.includes("--strict");
const PROGRAMS = ["turnpike-loadgen", "turnpike-setupgen", "turnpike-echo"];

function giveUp(reason) {
  const line = `turnpike-bench: native generator not built (${reason}); the bench will use its JavaScript generator`;
  console.error(line);
  process.exit(strict ? 1 : 0);
}

if (process.platform !== "linux") giveUp(`${process.platform} is not Linux`);
if (process.env.TURNPIKE_SKIP_NATIVE === "1") giveUp("TURNPIKE_SKIP_NATIVE=1");
const cc = process.env.CC || "cc";
mkdirSync(out, { recursive: true });
// Every program includes common.h; a header changed rebuilds them all (they are small).
const header = Math.max(
  ...readdirSync(native)
    .filter((f) => f.endsWith(".h"))
    .map((f) => statSync(join(native, f)).mtimeMs),
);
for (const name of PROGRAMS) {
  const source = join(native, `${name}.c`);
  const binary = join(out, name);
  if (
    existsSync(binary) &&
    statSync(binary).mtimeMs >= Math.max(statSync(source).mtimeMs, header)
  ) {
    continue;
  }
  // Built beside the target and renamed over it: a bench starting meanwhile never runs half a file.
  const partial = `${binary}.${process.pid}.tmp`;
  const args = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-o", partial, source, "-lm"];
  const run = spawnSync(cc, args, { stdio: ["ignore", "inherit", "inherit"] });
  if (run.error) giveUp(`${cc}: ${run.error.message}`);
  if (run.status !== 0) giveUp(`${cc} ${name}.c exited with ${run.status ?? run.signal}`);
  renameSync(partial, binary);
}
console.log(`turnpike-bench: native generator built in ${out}`);
