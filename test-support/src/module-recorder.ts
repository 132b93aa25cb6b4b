// Which modules a CLI loads, read from the outside: MODULE_RECORDER_LAUNCHER is a launcher that
// registers module-recorder-hooks.ts (every URL the main thread resolves, one a line, into
// MODULE_RECORD_FILE) and then imports the launcher in MODULE_RECORD_BIN, as `node BIN` would.
// Used to prove what a process does not load (OpenTelemetry without a collector). At exit it
// adds the main thread's own Node builtins, `builtin:NAME` a line (process.moduleLoadList): the
// hooks see an ES import of node:http, not what Node loads behind it (undici, http2, zlib) nor a
// process.getBuiltinModule.
import { appendFileSync } from "node:fs";
import { register } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

export const MODULE_RECORDER_LAUNCHER = fileURLToPath(import.meta.url);

/** The Node builtins (`http`, `internal/deps/undici/undici`, …) a record says were loaded. */
export function recordedBuiltins(lines: readonly string[]): string[] {
  return lines.filter((l) => l.startsWith("builtin:")).map((l) => l.slice("builtin:".length));
}

/** The environment that makes MODULE_RECORDER_LAUNCHER record into `file` and start `bin`. */
export function moduleRecorderEnv(bin: string, file: string): Record<string, string> {
  return { MODULE_RECORD_BIN: bin, MODULE_RECORD_FILE: file };
}

const bin = process.env.MODULE_RECORD_BIN;
const out = process.env.MODULE_RECORD_FILE;
if (bin !== undefined && out !== undefined && process.argv[1] === MODULE_RECORDER_LAUNCHER) {
  register(new URL("./module-recorder-hooks.js", import.meta.url), { data: { out } });
  process.on("exit", () => {
    // Undocumented but long-standing (Node's own tests read it); not in @types/node.
    const { moduleLoadList } = process as unknown as { moduleLoadList: string[] };
    const builtins = moduleLoadList
      .filter((m) => m.startsWith("NativeModule "))
      .map((m) => `builtin:${m.slice("NativeModule ".length)}\n`);
    appendFileSync(out, builtins.join(""));
  });
  await import(pathToFileURL(bin).href);
}
