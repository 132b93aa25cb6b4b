#!/usr/bin/env node
// Builds the two native parts of @turnpike/kernel-path:
//   - the BPF object (bpf/kernel_path.bpf.o) with `clang -O2 -g -target bpf`, when clang and
//     the libbpf headers are there. `npm pack` runs this with --object-only (prepack), so the
//     tarball carries the object and a target machine needs no clang;
//   - the loader addon with node-gyp against the headers of the Node that runs this script
//     (--nodedir at its installation: nothing is downloaded), linking libbpf.
// It never fails an install: what cannot be built is reported in one line and the relay runs
// without the kernel path, saying why (kernelPathAvailability()). `--strict` (prepack, tests)
// turns a failure into exit 1. An object that exists and is newer than its sources is kept.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const strict = process.argv.includes("--strict");
const objectOnly = process.argv.includes("--object-only");
const OBJECT = join(root, "bpf", "kernel_path.bpf.o");
// The program is one compilation unit: kernel_path.bpf.c and the headers of bpf/ it includes.
const PROGRAM = join(root, "bpf", "kernel_path.bpf.c");
const SOURCES = existsSync(join(root, "bpf"))
  ? readdirSync(join(root, "bpf"))
      .filter((f) => f.endsWith(".c") || f.endsWith(".h"))
      .map((f) => join(root, "bpf", f))
  : [];

let failed = false;
function report(part, reason) {
  failed = true;
  console.warn(
    `@turnpike/kernel-path: ${part} not built (${reason}); the relay runs without the kernel data path`,
  );
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: "utf8", ...options });
  if (r.error) return { ok: false, why: r.error.message };
  if (r.status !== 0) {
    const tail = `${r.stderr ?? ""}`.trim().split("\n").slice(-3).join(" | ");
    return {
      ok: false,
      why: `${cmd} exited with ${r.status ?? r.signal}${tail ? `: ${tail}` : ""}`,
    };
  }
  return { ok: true };
}

function objectIsFresh() {
  if (!existsSync(OBJECT)) return false;
  const built = statSync(OBJECT).mtimeMs;
  return SOURCES.every((s) => !existsSync(s) || statSync(s).mtimeMs <= built);
}

function buildObject() {
  if (objectIsFresh()) return;
  if (!existsSync(PROGRAM)) {
    report("BPF object", "neither the object nor its source is in the package");
    return;
  }
  // Debian keeps <asm/types.h> under the multiarch directory, which -target bpf does not search.
  const multiarch = spawnSync("cc", ["-print-multiarch"], { encoding: "utf8" }).stdout?.trim();
  const includes = multiarch ? ["-I", `/usr/include/${multiarch}`] : [];
  const r = run("clang", [
    "-O2",
    "-g",
    "-Wall",
    "-mcpu=v3",
    "-target",
    "bpf",
    // Without CAP_PERFMON the verifier refuses a stack slot that held a pointer being reused
    // for a smaller number ("attempt to corrupt spilled pointer"): no slot sharing.
    "-mllvm",
    "-no-stack-slot-sharing",
    ...includes,
    "-c",
    PROGRAM,
    "-o",
    OBJECT,
  ]);
  if (!r.ok) report("BPF object", r.why.includes("ENOENT") ? "clang not found" : r.why);
}

// node-gyp: the one the package manager running this install names (npm and pnpm both set
// npm_config_node_gyp), else the copy a global npm or pnpm bundles.
function findNodeGyp() {
  const bundled = (prefix) =>
    ["npm/node_modules", "pnpm/dist/node_modules"].map((dir) =>
      join(prefix, "lib", "node_modules", dir, "node-gyp", "bin", "node-gyp.js"),
    );
  const prefixes = (process.env.PATH ?? "")
    .split(":")
    .filter(Boolean)
    .map((dir) => resolve(dir, ".."));
  return [process.env.npm_config_node_gyp, ...prefixes.flatMap(bundled)].find(
    (c) => c?.endsWith(".js") && existsSync(c),
  );
}

function buildAddon() {
  const nodedir = resolve(dirname(process.execPath), "..");
  if (!existsSync(join(nodedir, "include", "node", "node_api.h"))) {
    report("loader", `no Node headers at ${join(nodedir, "include", "node")}`);
    return;
  }
  if (!existsSync("/usr/include/bpf/libbpf.h")) {
    report("loader", "no libbpf headers (/usr/include/bpf/libbpf.h: install libbpf-dev)");
    return;
  }
  const gyp = findNodeGyp();
  if (!gyp) {
    report("loader", "node-gyp not found");
    return;
  }
  const r = run(process.execPath, [gyp, "rebuild", `--nodedir=${nodedir}`, "--loglevel=warn"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  if (!r.ok) report("loader", r.why);
}

if (process.platform !== "linux") {
  report("kernel path", `${process.platform} is not Linux`);
} else if (process.env.TURNPIKE_SKIP_NATIVE === "1") {
  report("kernel path", "TURNPIKE_SKIP_NATIVE=1");
} else {
  buildObject();
  if (!objectOnly) buildAddon();
}
if (failed && strict) process.exit(1);
if (!failed) {
  console.log(
    `@turnpike/kernel-path: built ${objectOnly ? "the BPF object" : `the BPF object and the loader (Node ${process.version})`}`,
  );
}
