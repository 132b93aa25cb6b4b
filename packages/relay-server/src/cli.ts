#!/usr/bin/env node
// turnpike-relay entry point: wires the real process into runCli (main.ts).
import { exitWhenDone } from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import { startRelay } from "./engine/driver.js";
import { runCli } from "./main.js";
import { startWorkerPool } from "./workers/pool.js";

exitWhenDone(
  PROGRAM_NAME,
  runCli({
    argv: process.argv.slice(2),
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (line) => process.stderr.write(`${line}\n`),
    // --workers 1 runs the engine on the main thread; more, one per worker thread.
    startRelay: (config, deps) =>
      config.workers > 1 ? startWorkerPool(config, deps) : startRelay(config, deps),
    events: process,
    exit: (code) => process.exit(code),
  }),
);
