// The hold on TurboFan and Maglev, watched from V8's own trace (--trace-opt) in a child node of
// the same binary: what is compiled while it is held, after it is let go, and when the operator
// set the tiers. The child imports the built module (`pnpm test` runs tsc -b first); where it
// is started with the launchers' --nomaglev, it runs as the relay and the tunnel do.

import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { buildHasMaglev, LAUNCHER_MAGLEV_OFF } from "../src/startup-tiering.js";

const MODULE = fileURLToPath(new URL("../dist/startup-tiering.js", import.meta.url));

/**
 * A child that makes a fresh function hot in each phase and prints the phase's name after it:
 * `held` (after holdOptimizingCompiler), `released` (after releaseOptimizingCompiler, or after
 * the hold's own limit when `waitForLimitMs` is given).
 */
function traceChild(opts: { nodeFlags?: string[]; waitForLimitMs?: number } = {}): string {
  const script = `
    import { holdOptimizingCompiler, optimizingCompilerHeld, releaseOptimizingCompiler } from ${JSON.stringify(MODULE)};
    const data = new Float64Array(1000).fill(1);
    const hotFunction = (name) => new Function("a", "/*" + name + "*/ let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * 3; return s;");
    const warm = (name) => { const f = hotFunction(name); let s = 0; for (let i = 0; i < 20000; i++) s += f(data); return s; };
    const phase = (name) => { warm(name); console.log("phase " + name + " held=" + optimizingCompilerHeld()); };
    holdOptimizingCompiler(${opts.waitForLimitMs ?? 30_000});
    phase("held");
    ${opts.waitForLimitMs === undefined ? "releaseOptimizingCompiler();" : `await new Promise((r) => setTimeout(r, ${opts.waitForLimitMs + 50}));`}
    phase("released");
  `;
  return execFileSync(
    process.execPath,
    [...(opts.nodeFlags ?? []), "--trace-opt", "--input-type=module", "-e", script],
    { encoding: "utf8", timeout: 30_000 },
  );
}

const TURBOFAN = /^\[completed optimizing .*target TURBOFAN/;
const MAGLEV = /^\[completed compiling .*target MAGLEV/;
const BUILD_HAS_MAGLEV = buildHasMaglev();

/** Compilations by `tier` reported in each phase (the lines before each `phase` line). */
function compiledByPhase(trace: string, tier: RegExp): Record<string, number> {
  const counts: Record<string, number> = {};
  let n = 0;
  for (const line of trace.split("\n")) {
    if (tier.test(line)) n++;
    const phase = /^phase (\w+)/.exec(line);
    if (phase) {
      counts[phase[1]!] = n;
      n = 0;
    }
  }
  return counts;
}

describe.skipIf(!existsSync(MODULE))("holding the optimizing compilers while a CLI starts", () => {
  it("compiles nothing with TurboFan while held, and compiles hot code again once let go", () => {
    const trace = traceChild();
    expect(trace).toContain("phase held held=true");
    expect(trace).toContain("phase released held=false");
    const counts = compiledByPhase(trace, TURBOFAN);
    expect(counts.held).toBe(0);
    expect(counts.released).toBeGreaterThan(0);
  });

  it("lets go by itself when nobody releases it within its limit", () => {
    const trace = traceChild({ waitForLimitMs: 200 });
    expect(trace).toContain("phase released held=false");
    expect(compiledByPhase(trace, TURBOFAN).released).toBeGreaterThan(0);
  });

  it("leaves the tiers alone when the operator chose them with a V8 flag", () => {
    // --turbofan is V8's default: the same tiers, but named by the operator, so nothing is held.
    const trace = traceChild({ nodeFlags: ["--turbofan"] });
    expect(trace).toContain("phase held held=false");
    expect(compiledByPhase(trace, TURBOFAN).held).toBeGreaterThan(0);
  });

  describe.skipIf(!BUILD_HAS_MAGLEV)("where the build has Maglev and the launcher held it", () => {
    it("compiles nothing with Maglev or TurboFan while held, and with both once let go", () => {
      const trace = traceChild({ nodeFlags: [LAUNCHER_MAGLEV_OFF] });
      expect(trace).toContain("phase held held=true");
      expect(compiledByPhase(trace, MAGLEV).held).toBe(0);
      expect(compiledByPhase(trace, TURBOFAN).held).toBe(0);
      expect(compiledByPhase(trace, MAGLEV).released).toBeGreaterThan(0);
      expect(compiledByPhase(trace, TURBOFAN).released).toBeGreaterThan(0);
    });

    it("turns Maglev on again when the operator chose other tiers, and holds TurboFan no more", () => {
      const trace = traceChild({ nodeFlags: [LAUNCHER_MAGLEV_OFF, "--turbofan"] });
      expect(trace).toContain("phase held held=true");
      expect(compiledByPhase(trace, MAGLEV).held).toBe(0);
      expect(compiledByPhase(trace, TURBOFAN).held).toBeGreaterThan(0);
      expect(compiledByPhase(trace, MAGLEV).released).toBeGreaterThan(0);
    });

    it("leaves Maglev off when the operator turned it off too", () => {
      const trace = traceChild({ nodeFlags: [LAUNCHER_MAGLEV_OFF, "--no-maglev"] });
      expect(trace).toContain("phase held held=false");
      expect(trace).toContain("phase released held=false");
      expect(compiledByPhase(trace, MAGLEV).released).toBe(0);
    });
  });
});
