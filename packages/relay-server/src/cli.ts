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
    // --workers 1 runs the engine on the main thread; more, a supervisor with engine 0 on the
    // main thread and the others in worker threads. Imported here, not at the top: an engine on
    // its own never compiles the supervisor (bench/README.md, "Footprint").
    startRelay: async (config, deps) =>
      config.workers > 1
        ? (await import("./workers/pool.js")).startWorkerPool(config, deps)
        : (await import("./engine/driver.js")).startRelay(config, deps),
    events: process,
    exit: (code) => process.exit(code),
  }),
);
