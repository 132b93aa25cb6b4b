// Process-lifecycle pieces both CLIs share: the config-error exit path, bounded waits at
// shutdown and the bin entry's final exit.

import { ConfigError } from "./option-values.js";

/** Exit code for bad configuration (EX_USAGE-ish: distinct from runtime failure 1). */
export const EXIT_CONFIG = 2;

/**
 * Runs `parse`; a ConfigError is reported as one `<program>: <message>` line on `stderr` and
 * yields undefined (exit with EXIT_CONFIG). Any other error is a bug and propagates.
 */
export function parseOrReport<T>(
  programName: string,
  parse: () => T,
  stderr: (line: string) => void,
): T | undefined {
  try {
    return parse();
  } catch (err) {
    if (err instanceof ConfigError) {
      stderr(`${programName}: ${err.message}`);
      return undefined;
    }
    throw err;
  }
}

/** `--help` / `--version` text as printed: always newline-terminated. */
export function asOutput(text: string): string {
  return text.endsWith("\n") ? text : `${text}\n`;
}

/**
 * Resolves when `p` settles or after `ms`, whichever is first; never rejects. For shutdown steps
 * (a metrics flush to a dead collector) that must not hold the exit. The timer is unref'd.
 */
export function withTimeout(p: Promise<unknown>, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
    const done = () => {
      clearTimeout(t);
      resolve();
    };
    p.then(done, done);
  });
}

/**
 * The bin entry's last step: exit with the code `run` resolves to; a rejection is a fatal bug,
 * printed with its stack as `<program>: fatal: ...`, exit 1.
 */
export function exitWhenDone(programName: string, run: Promise<number>): void {
  run.then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(
        `${programName}: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    },
  );
}
