#!/usr/bin/env node
// turnpike-relay entry point: wires the real process into runCli (main.ts).
import { exitWhenDone } from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import { runCli } from "./main.js";

exitWhenDone(
  PROGRAM_NAME,
  runCli({
    argv: process.argv.slice(2),
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (line) => process.stderr.write(`${line}\n`),
    // --workers 1 runs the engine on the main thread; more, one per worker thread. Imported here,
    // not at the top: a supervisor of workers never compiles the engine it does not run, and an
    // engine on the main thread never the supervisor (bench/README.md, "Footprint").
    startRelay: async (config, deps) =>
      config.workers > 1
        ? (await import("./workers/pool.js")).startWorkerPool(config, deps)
        : (await import("./engine/driver.js")).startRelay(config, deps),
    events: process,
    exit: (code) => process.exit(code),
  }),
);
