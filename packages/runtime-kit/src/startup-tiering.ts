// V8's optimizing compilers (TurboFan, and Maglev where the build has it), held off while a CLI
// loads its modules and starts, and let go once it is up.
//
// Why: loading the relay's ES modules calls Node's own module-path helpers thousands of
// times (normalizeString, isPosixPathSeparator, getPathFromURLPosix, URL's protocol getter and
// #ensureSearchParamsUpdated: `--trace-opt` lists exactly these five at start). That makes them
// hot, and V8 compiles them: about 10 ms of a compiler thread, and every idle process keeps the
// compiler's own code paged in, plus its zone memory, for functions that are never called again
// once loading is over. Measured on an idle `--workers 1` relay (bench/README.md, "Footprint"):
// TurboFan is 5.5 MB of the node executable on Node 22.23 (63.9-64.3 MB RSS, 57.8-58.0 held);
// on Node 26.12, whose V8 also tiers up through Maglev, Maglev is 4.8 MB more (65.8 MB with
// TurboFan held, 61.0 with both). Traffic is optimized as before: both are back on as soon as
// the relay or the tunnel is up, so the first busy second compiles the data path (and pages the
// compilers in then, where they earn their place).
//
// How, TurboFan: V8 flags are process-wide and Node leaves them writable after start (it builds
// V8 with --no-freeze-flags-after-init for v8.setFlagsFromString). The tiering manager reads
// the `turbofan` flag at each decision, so turning it off and on again changes which functions
// are compiled from then on, nothing else: interpreted and baseline code run as usual, and
// worker threads started meanwhile load their modules the same way.
//
// How, Maglev: from a module it is too late. Node's bootstrap resolves the launcher's own path
// before any of its lines runs, and that alone makes isPosixPathSeparator hot enough for one
// Maglev compilation, which pages in nearly all of Maglev's code (an in-process hold saves 1.6
// of the 4.8 MB). So the launchers start node with `--nomaglev` (LAUNCHER_MAGLEV_OFF: V8's
// other spelling of --no-maglev, chosen so that it is told apart from an operator's flag), and
// the release turns Maglev on again where the build has it (`process.config.variables.
// v8_enable_maglev`: 1 on Node 24 and 26, 0 on Node 22, whose V8 runs without Maglev). A
// function made hot while both are off is compiled as usual afterwards: it is only interpreted
// and baseline code that ran meanwhile (the unit test watches it). One difference between the
// Node lines remains: on Node 26 (V8 14) a function that Maglev had compiled while TurboFan was
// held stays at Maglev; with Maglev held too there are none of those left from the start.
//
// An operator's own V8 tiering flags win: with any of them on the command line or in
// NODE_OPTIONS, TurboFan is not held; Maglev, which the launcher turned off, is turned on again
// at the release unless the operator turned it off (`--no-maglev`) or the JIT (`--jitless`)
// themselves. A hold that nobody lets go (a start that waits longer than expected) ends by
// itself after HOLD_LIMIT_MS.

const HOLD_LIMIT_MS = 30_000;

/** The launchers' (bin/*.js shebang, the container's ENTRYPOINT) flag that holds Maglev. */
export const LAUNCHER_MAGLEV_OFF = "--nomaglev";

/** Flags by which the operator chose the tiers; then TurboFan is not held. */
const OPERATOR_TIERING =
  /^--(no-)?(opt|turbofan|maglev|sparkplug|jitless|always-turbofan|always-opt|max-lazy)\b/;

/** Flags by which the operator turned Maglev off for the process's life. */
const OPERATOR_NO_MAGLEV = /^--(no-maglev|jitless)\b/;

interface Hold {
  limit: ReturnType<typeof setTimeout>;
  turbofan: boolean;
  maglev: boolean;
}

let held: Hold | undefined;

/**
 * Hold TurboFan (unless the operator chose the tiers), and take over the launcher's hold on
 * Maglev, until releaseOptimizingCompiler() or `limitMs`, whichever comes first.
 */
export function holdOptimizingCompiler(limitMs = HOLD_LIMIT_MS): void {
  if (held !== undefined) return;
  const flags = operatorFlags();
  const turbofan = !flags.some((flag) => OPERATOR_TIERING.test(flag));
  const maglev =
    process.execArgv.includes(LAUNCHER_MAGLEV_OFF) &&
    buildHasMaglev() &&
    !flags.some((flag) => OPERATOR_NO_MAGLEV.test(flag));
  if (!turbofan && !maglev) return;
  if (turbofan) v8().setFlagsFromString("--no-turbofan");
  const limit = setTimeout(releaseOptimizingCompiler, limitMs);
  limit.unref();
  held = { limit, turbofan, maglev };
}

/** Turn what was held back on (a no-op when nothing was). */
export function releaseOptimizingCompiler(): void {
  if (held === undefined) return;
  const { limit, turbofan, maglev } = held;
  clearTimeout(limit);
  held = undefined;
  if (turbofan) v8().setFlagsFromString("--turbofan");
  if (maglev) v8().setFlagsFromString("--maglev");
}

/** Is TurboFan or Maglev held now? */
export function optimizingCompilerHeld(): boolean {
  return held !== undefined;
}

/** The node flags the operator passed: the command line's (but the launcher's --nomaglev) and NODE_OPTIONS'. */
function operatorFlags(): string[] {
  return [...process.execArgv, ...(process.env.NODE_OPTIONS ?? "").split(/\s+/)]
    .filter((flag) => flag !== LAUNCHER_MAGLEV_OFF)
    .map((flag) => flag.replaceAll("_", "-"));
}

/** Does this node's V8 have Maglev? (Node 24's and 26's do; Node 22's is built without it.) */
export function buildHasMaglev(): boolean {
  // Not in @types/node's ProcessConfig, but in every build's config.gypi variables.
  const variables: Record<string, unknown> = process.config.variables;
  return Number(variables.v8_enable_maglev) === 1;
}

// Not an ES import: node:v8's namespace would load its heap-snapshot and serializer parts at
// start (node-builtins.ts says why the relay takes Node's modules this way).
function v8(): typeof import("node:v8") {
  return process.getBuiltinModule("node:v8");
}
