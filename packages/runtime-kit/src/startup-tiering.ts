// V8's optimizing compiler (TurboFan), held off while a CLI loads its modules and starts, and
// let go once it is up.
//
// Why: loading the relay's ES modules calls Node's own module-path helpers thousands of
// times (normalizeString, isPosixPathSeparator, getPathFromURLPosix, URL's protocol getter and
// #ensureSearchParamsUpdated: `--trace-opt` lists exactly these five at start). That makes them
// hot, and V8 runs TurboFan on them: about 10 ms of a compiler thread, and every idle process
// keeps the compiler's own code paged in, 5.5 MB of the node executable, plus its zone memory,
// for functions that are never called again once loading is over. Measured on Node 22.23, an
// idle `--workers 1` relay: 63.9-64.3 MB RSS, 57.8-58.0 with TurboFan held (bench/README.md,
// "Footprint"). Traffic is optimized as before: TurboFan is back on as soon as the relay or
// the tunnel is up, so the first busy second compiles the data path (and pages the compiler in
// then, where it earns its place).
//
// How: V8 flags are process-wide and Node leaves them writable after start (it builds V8 with
// --no-freeze-flags-after-init for v8.setFlagsFromString). The tiering manager reads the
// `turbofan` flag at each decision, so turning it off and on again changes which functions
// are compiled from then on, nothing else: interpreted and baseline code run as usual, and
// worker threads started meanwhile load their modules the same way. One difference between
// the Node lines: on Node 26 (V8 14) a function that reached a tier-up point while TurboFan
// was held stays in the tier it had then, where Node 22 compiles it at its next tier-up. With
// the relay and the tunnel those are the ~40 functions Maglev compiles during the start on Node
// 26 (`--trace-opt`: Node's module loader, URL and path helpers, yargs), which stay at Maglev;
// the data path runs only after the hold, and relay-server's startup-tiering test checks that
// TurboFan compiles it on both lines.
//
// An operator's own V8 tiering flags win: with any of them on the command line or in
// NODE_OPTIONS, nothing is held. A hold that nobody lets go (a start that waits longer than
// expected) ends by itself after HOLD_LIMIT_MS.

const HOLD_LIMIT_MS = 30_000;

/** Flags by which the operator chose the tiers; then the CLI leaves V8 as it was started. */
const OPERATOR_TIERING =
  /^--(no-)?(opt|turbofan|maglev|sparkplug|jitless|always-turbofan|always-opt|max-lazy)\b/;

let held: ReturnType<typeof setTimeout> | undefined;

/** Turn TurboFan off until releaseOptimizingCompiler() or `limitMs`, whichever comes first. */
export function holdOptimizingCompiler(limitMs = HOLD_LIMIT_MS): void {
  if (held !== undefined || operatorChoseTiers()) return;
  v8().setFlagsFromString("--no-turbofan");
  held = setTimeout(releaseOptimizingCompiler, limitMs);
  held.unref();
}

/** Turn TurboFan back on (a no-op when it was not held). */
export function releaseOptimizingCompiler(): void {
  if (held === undefined) return;
  clearTimeout(held);
  held = undefined;
  v8().setFlagsFromString("--turbofan");
}

/** Is TurboFan held now? */
export function optimizingCompilerHeld(): boolean {
  return held !== undefined;
}

function operatorChoseTiers(): boolean {
  const flags = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)];
  return flags.some((flag) => OPERATOR_TIERING.test(flag.replaceAll("_", "-")));
}

// Not an ES import: node:v8's namespace would load its heap-snapshot and serializer parts at
// start (node-builtins.ts says why the relay takes Node's modules this way).
function v8(): typeof import("node:v8") {
  return process.getBuiltinModule("node:v8");
}
