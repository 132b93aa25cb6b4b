// relay-core is sans-IO: no runtime dependencies, no I/O modules, no clock, no ambient randomness.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "..");
const FORBIDDEN_MODULES = [
  "dgram",
  "net",
  "tls",
  "fs",
  "fs/promises",
  "dns",
  "http",
  "https",
  "http2",
  "timers",
  "timers/promises",
  "child_process",
  "worker_threads",
  "cluster",
];
const FORBIDDEN_CALLS = [
  /\bDate\.now\s*\(/,
  /\bnew\s+Date\s*\(/,
  /\bMath\.random\s*\(/,
  /\bperformance\.now\s*\(/,
  /\bprocess\.hrtime\b/,
  /\bsetTimeout\s*\(/,
  /\bsetInterval\s*\(/,
  /\bsetImmediate\s*\(/,
  /\brandomBytes\s*\(/,
  /\brandomUUID\s*\(/,
  /\bgetRandomValues\s*\(/,
];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith(".ts") ? [path] : [];
  });
}

/** Module specifiers of import/export ... from, import(), require(). */
function specifiers(code: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)["']([^"']+)["']/gm;
  for (let m = re.exec(code); m !== null; m = re.exec(code)) out.push(m[1]!);
  return out;
}

/** Code without comments, so a comment that names Date.now does not trip the check. */
function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`])\/\/.*$/gm, "$1");
}

describe("relay-core purity (sans-IO contract)", () => {
  it("has no runtime dependencies in package.json", () => {
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
    for (const field of ["dependencies", "peerDependencies", "optionalDependencies"]) {
      expect(Object.keys(pkg[field] ?? {}), field).toEqual([]);
    }
  });

  const files = sources(join(root, "src"));

  it("finds the sources it checks", () => {
    expect(files.length).toBeGreaterThan(10);
    expect(files.some((f) => f.endsWith("server.ts"))).toBe(true);
  });

  it("imports no I/O module and nothing outside itself but node:crypto", () => {
    for (const file of files) {
      for (const spec of specifiers(stripComments(readFileSync(file, "utf8")))) {
        const bare = spec.replace(/^node:/, "");
        expect(FORBIDDEN_MODULES, `${file} imports ${spec}`).not.toContain(bare);
        if (!spec.startsWith(".")) expect(spec, `${file} imports ${spec}`).toBe("node:crypto");
      }
    }
  });

  it("reads no clock and no ambient randomness and arms no timer", () => {
    for (const file of files) {
      const code = stripComments(readFileSync(file, "utf8"));
      for (const pattern of FORBIDDEN_CALLS) {
        expect(pattern.test(code), `${file} matches ${pattern}`).toBe(false);
      }
    }
  });

  it("catches a forbidden import or call when there is one (the checks can fail)", () => {
    expect(specifiers('import { createSocket } from "node:dgram";')).toEqual(["node:dgram"]);
    expect(specifiers('const t = await import("timers");')).toEqual(["timers"]);
    expect(FORBIDDEN_CALLS.some((p) => p.test(stripComments("const t = Date.now();")))).toBe(true);
    expect(FORBIDDEN_CALLS.some((p) => p.test(stripComments("// Date.now() is banned")))).toBe(
      false,
    );
  });
});
