// yargs without its help renderer until a help text is rendered.
//
// Why: yargs' Node entry (yargs/index.mjs) imports cliui, string-width and wrap-ansi at start.
// Their Unicode tables (emoji and East Asian width regular expressions) page in ICU data of the
// node binary and fill the heap: measured on Node 22.23, importing yargs takes a bare node from
// 73 to 97 MB RSS, cliui alone +19 MB, yargs' parser +1 MB. A relay or a connector parses its
// command line once and usually never prints help (bench/README.md, "Footprint").
//
// So this is yargs' own factory with yargs' own Node platform shim (lib/platform-shims/esm.mjs,
// field for field), except that cliui and string-width are loaded by the first call that needs
// them: rendering help, which the parser does synchronously, so they are require()d (ES modules
// by require(), Node >= 22.12). Everything yargs needs is resolved from yargs' own directory,
// the dependencies it declares.
//
// Nor are node:assert and node:util imported: an ES import of a builtin makes Node read every
// export of it, lazy ones included (node:util's loads parse_args, diff and worker_threads,
// node:assert's its diff), ~1 MB of RSS in each isolate that imports runtime-kit
// (node-builtins.ts says more). yargs' assertions pass unless yargs has a bug, so node:assert is
// loaded only to throw the AssertionError of one that fails.

import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { basename, dirname, extname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type yargsDefault from "yargs";

// biome-ignore lint/suspicious/noExplicitAny: yargs' internals are untyped
type Loose = any;

let factory: typeof yargsDefault | undefined;

/**
 * yargs (the default export of "yargs"), built on the shim below at the first call: a process
 * that imports runtime-kit and never parses a command line (a relay's worker threads) loads
 * none of yargs.
 */
export const yargs = ((...args: Parameters<typeof yargsDefault>) => {
  factory ??= loadYargs();
  return factory(...args);
}) as typeof yargsDefault;

function loadYargs(): typeof yargsDefault {
  const yargsPackage = createRequire(import.meta.url).resolve("yargs/package.json");
  const yargsDir = dirname(yargsPackage);
  const fromYargs = createRequire(yargsPackage);

  /** A module's function: require() gives the function itself, or a namespace with `default`. */
  const required = (id: string): Loose => {
    const m = fromYargs(id) as Loose;
    return typeof m === "function" ? m : m.default;
  };

  const { YargsFactory } = fromYargs("./build/lib/yargs-factory.js") as Loose;
  const { getProcessArgvBin } = fromYargs("./build/lib/utils/process-argv.js") as Loose;
  const Parser = required("yargs-parser");
  const findUp = required("escalade/sync");
  const y18n = required("y18n");
  const getCallerFile = required("get-caller-file");

  let ui: Loose;
  let width: Loose;

  const platformShim = {
    assert: {
      notStrictEqual: (actual: unknown, expected: unknown, message?: string) => {
        if (Object.is(actual, expected)) failed().notStrictEqual(actual, expected, message);
      },
      strictEqual: (actual: unknown, expected: unknown, message?: string) => {
        if (!Object.is(actual, expected)) failed().strictEqual(actual, expected, message);
      },
    },
    cliui: (opts: unknown) => {
      ui ??= required("cliui");
      return ui(opts);
    },
    findUp,
    getEnv: (key: string) => process.env[key],
    inspect: (value: unknown) => process.getBuiltinModule("node:util").inspect(value),
    getProcessArgvBin,
    mainFilename: yargsDir.slice(0, yargsDir.lastIndexOf("node_modules")) || process.cwd(),
    Parser,
    path: { basename, dirname, extname, relative, resolve, join },
    process: {
      argv: () => process.argv,
      cwd: process.cwd,
      emitWarning: (warning: string, type: string) => process.emitWarning(warning, type),
      execPath: () => process.execPath,
      exit: (code: number) => process.exit(code),
      nextTick: process.nextTick,
      stdColumns: typeof process.stdout.columns !== "undefined" ? process.stdout.columns : null,
    },
    readFileSync,
    readdirSync,
    require: fromYargs,
    getCallerFile: () => {
      const callerFile = getCallerFile(3) as string;
      return callerFile.startsWith("file://") ? fileURLToPath(callerFile) : callerFile;
    },
    stringWidth: (text: string) => {
      width ??= required("string-width");
      return width(text) as number;
    },
    y18n: y18n({ directory: join(yargsDir, "locales"), updateFiles: false }),
  };

  return YargsFactory(platformShim);
}

/** node:assert, to throw the AssertionError of an assertion that failed. */
function failed(): {
  notStrictEqual(...args: unknown[]): void;
  strictEqual(...args: unknown[]): void;
} {
  return process.getBuiltinModule("node:assert");
}
