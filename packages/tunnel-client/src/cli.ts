#!/usr/bin/env node
// turnpike-tunnel entry point: wires the real process into runCli (main.ts).
import { exitWhenDone } from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/index.js";
import { runCli } from "./main.js";

exitWhenDone(
  PROGRAM_NAME,
  runCli({
    argv: process.argv.slice(2),
    env: process.env,
    stdout: (text) => process.stdout.write(text),
    stderr: (line) => process.stderr.write(`${line}\n`),
    events: process,
    exit: (code) => process.exit(code),
  }),
);
