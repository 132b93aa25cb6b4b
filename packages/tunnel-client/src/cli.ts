#!/usr/bin/env node
// turnpike-tunnel entry point: wires the real process into runCli (main.ts).
import { runCli } from "./main.js";

runCli({
  argv: process.argv.slice(2),
  env: process.env,
  stdout: (text) => process.stdout.write(text),
  stderr: (line) => process.stderr.write(`${line}\n`),
  events: process,
  exit: (code) => process.exit(code),
}).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `turnpike-tunnel: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exit(1);
  },
);
