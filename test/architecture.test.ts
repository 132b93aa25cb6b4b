// The architecture (ARCHITECTURE.md), enforced on the sources as text:
// - layers: which workspace package may import which (nothing runs upward, so nothing cycles),
//   and every workspace package a package's sources import is one it declares;
// - no import reaches into another package by relative path ("../../relay-core/src/...");
// - the sans-IO contract of relay-core (no runtime dependencies, no I/O module, nothing outside
//   itself but node:crypto, no clock, no ambient randomness, no timer) and of the tunnel's
//   lifecycle machine (tunnel-client's lifecycle.ts and the pure modules it uses);
// - the rooms of relay-server (ARCHITECTURE.md, "The call order", "Workers"): what each
//   directory under its src/ may import of the others.
// Each check is also run against a violation made up here, so none of them can pass vacuously.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");

/** Every workspace package with sources, and the workspace packages it may import, bottom up. */
const LAYERS: Record<string, { readonly dir: string; readonly may: readonly string[] }> = {
  "@turnpike/relay-core": { dir: "packages/relay-core", may: [] },
  "@turnpike/udp-batch": { dir: "packages/udp-batch", may: [] },
  "@turnpike/kernel-path": { dir: "packages/kernel-path", may: [] },
  "@turnpike/runtime-kit": { dir: "packages/runtime-kit", may: [] },
  "@turnpike/relay-server": {
    dir: "packages/relay-server",
    may: [
      "@turnpike/relay-core",
      "@turnpike/runtime-kit",
      "@turnpike/udp-batch",
      "@turnpike/kernel-path",
    ],
  },
  "@turnpike/tunnel-client": {
    dir: "packages/tunnel-client",
    may: ["@turnpike/relay-core", "@turnpike/runtime-kit", "@turnpike/udp-batch"],
  },
  "@turnpike/test-support": { dir: "test-support", may: ["@turnpike/relay-core"] },
  "@turnpike/bench": {
    dir: "bench",
    may: ["@turnpike/relay-core", "@turnpike/udp-batch", "@turnpike/test-support"],
  },
};

/** Tests may also use the shared helpers, except relay-core's, which stand on relay-core alone. */
const TEST_HELPERS = "@turnpike/test-support";

/** What a sans-IO module must not import (with or without the node: prefix). */
const IO_MODULES = [
  "dgram",
  "net",
  "tls",
  "fs",
  "fs/promises",
  "dns",
  "dns/promises",
  "http",
  "https",
  "http2",
  "timers",
  "timers/promises",
  "child_process",
  "worker_threads",
  "cluster",
];

/** What a sans-IO module must not call: the clock, ambient randomness, timers. */
const IMPURE_CALLS = [
  /\bDate\.now\s*\(/,
  /\bnew\s+Date\s*\(/,
  /\bMath\.random\s*\(/,
  /\bperformance\.now\s*\(/,
  /\bprocess\.hrtime\b/,
  /\bsetTimeout\s*\(/,
  /\bsetInterval\s*\(/,
  /\bsetImmediate\s*\(/,
  /\brandomBytes\s*\(/,
  /\brandomInt\s*\(/,
  /\brandomUUID\s*\(/,
  /\bgetRandomValues\s*\(/,
];

const TUNNEL_SRC = join(ROOT, "packages/tunnel-client/src");

/**
 * The tunnel's lifecycle machine, every part of it (the whole lifecycle/ room), and the modules
 * it takes values from.
 */
const TUNNEL_LIFECYCLE = [
  "lifecycle.ts",
  ...readdirSync(join(TUNNEL_SRC, "lifecycle")).map((f) => `lifecycle/${f}`),
  "backoff.ts",
  "windows.ts",
  "redirects.ts",
].map((f) => join(TUNNEL_SRC, f));

/**
 * relay-server's rooms and what each may import of the package's own modules (paths below
 * src/; a trailing slash is a whole room). The traffic rooms know the engine only through its
 * host interface; what a worker shares imports nothing of the rooms that use it.
 */
const ROOMS: Record<string, readonly string[]> = {
  "config/": ["config/", "version.ts"],
  "shared/": ["shared/"],
  "udp/": ["udp/", "engine/host.ts", "config/types.ts", "stats.ts"],
  "stream/": ["stream/", "engine/host.ts", "shared/", "config/types.ts", "stats.ts"],
  // The kernel data path: relay-core's offload outputs into the kernel's maps, and for the
  // workers the maps they share (the engine and the supervisor use it; it uses neither).
  "kernel/": [
    "kernel/",
    "shared/",
    "config/types.ts",
    "config/values.ts",
    "config/host-addresses.ts",
    "stats.ts",
  ],
  "engine/": [
    "engine/",
    "stream/",
    "udp/",
    "kernel/",
    "shared/",
    "config/types.ts",
    "config/values.ts",
    "stats.ts",
    "types.ts",
    "discovery.ts",
    "preflight.ts",
  ],
  // An engine as the supervisor sees it, on whichever thread: the engine, and of the
  // supervisor's room only what the two sides say to each other and the counters it posts;
  // the worker thread's entry runs it (both listed before "workers/": first match).
  "workers/engine-host.ts": [
    "workers/messages.ts",
    "workers/stats-sync.ts",
    "engine/driver.ts",
    "shared/",
    "stats.ts",
  ],
  "workers/worker.ts": ["workers/engine-host.ts", "workers/messages.ts"],
  // The supervisor binds the workers' UDP listeners as the udp room binds one engine's, with
  // the buffers that room asks for (udp/listener-buffers.ts: a constant and the host's caps,
  // importing nothing of the rooms).
  "workers/": [
    "workers/",
    "engine/driver.ts",
    "kernel/share.ts",
    "udp/listener-buffers.ts",
    "shared/",
    "config/types.ts",
    "stats.ts",
    "types.ts",
    "discovery.ts",
    "preflight.ts",
  ],
};
const RELAY_SERVER_SRC = join(ROOT, "packages/relay-server/src");

interface Import {
  readonly spec: string;
  /** `import type` / `export type`: erased, no module is loaded. */
  readonly typeOnly: boolean;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    if (name === "node_modules" || name === "dist") return [];
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sources(path) : path.endsWith(".ts") ? [path] : [];
  });
}

/** Code without comments, so a comment that names Date.now or an import does not count. */
function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, "").replace(/(^|[^:"'`\\])\/\/.*$/gm, "$1");
}

/** import/export ... from, bare import, import(), require(). */
function imports(code: string): Import[] {
  const out: Import[] = [];
  const re =
    /(?:^\s*(import|export)\s+(type\s+)?[^"';]*?\bfrom\s*|^\s*import\s+|\bimport\s*\(\s*|\brequire\s*\(\s*)["']([^"']+)["']/gm;
  for (let m = re.exec(code); m !== null; m = re.exec(code)) {
    out.push({ spec: m[3]!, typeOnly: m[2] !== undefined });
  }
  return out;
}

/** The workspace package a bare specifier names ("@turnpike/test-support/ports" -> ...). */
function workspacePackage(spec: string): string | undefined {
  const m = /^(@turnpike\/[^/]+)/.exec(spec);
  return m?.[1];
}

/** What is wrong with `file`'s imports for package `name`, as messages. */
function layerViolations(name: string, file: string, code: string): string[] {
  const layer = LAYERS[name]!;
  const pkgDir = join(ROOT, layer.dir);
  const isTest = !relative(pkgDir, file).startsWith("src");
  const allowed = new Set([name, ...layer.may]);
  if (isTest && name !== "@turnpike/relay-core") allowed.add(TEST_HELPERS);
  const out: string[] = [];
  for (const { spec } of imports(stripComments(code))) {
    if (spec.startsWith(".")) {
      const target = resolve(dirname(file), spec);
      if (relative(pkgDir, target).startsWith("..")) {
        out.push(`${relative(ROOT, file)} reaches outside ${layer.dir} by path: ${spec}`);
      }
      continue;
    }
    const other = workspacePackage(spec);
    if (other !== undefined && !allowed.has(other)) {
      out.push(`${relative(ROOT, file)} (${name}) imports ${other}`);
    }
  }
  return out;
}

/** What breaks the sans-IO contract in `code`; `valueImportOk` decides module by module. */
function impurities(
  file: string,
  code: string,
  valueImportOk: (spec: string, file: string) => boolean,
): string[] {
  const clean = stripComments(code);
  const out: string[] = [];
  for (const { spec, typeOnly } of imports(clean)) {
    if (IO_MODULES.includes(spec.replace(/^node:/, ""))) {
      out.push(`${relative(ROOT, file)} imports ${spec}`);
    } else if (!typeOnly && !valueImportOk(spec, file)) {
      out.push(`${relative(ROOT, file)} takes values from ${spec}`);
    }
  }
  for (const pattern of IMPURE_CALLS) {
    if (pattern.test(clean)) out.push(`${relative(ROOT, file)} matches ${pattern}`);
  }
  return out;
}

/** What relay-server source `file` imports of its own package against its room's rules. */
function roomViolations(file: string, code: string): string[] {
  const at = relative(RELAY_SERVER_SRC, file);
  const room = Object.keys(ROOMS).find((r) => at.startsWith(r));
  if (room === undefined) return [];
  const out: string[] = [];
  for (const { spec } of imports(stripComments(code))) {
    if (!spec.startsWith(".")) continue;
    const target = relative(RELAY_SERVER_SRC, resolve(dirname(file), spec)).replace(/\.js$/, ".ts");
    if (!ROOMS[room]!.some((ok) => (ok.endsWith("/") ? target.startsWith(ok) : target === ok))) {
      out.push(`relay-server/src/${at} (${room}) imports ${target}`);
    }
  }
  return out;
}

/** relay-core: itself and node:crypto (HMAC, hashes: pure computation), nothing else. */
const relayCoreImport = (spec: string) => spec.startsWith(".") || spec === "node:crypto";

/** The tunnel lifecycle: relay-core (pure), and values only from the other pure modules. */
const lifecycleImport = (spec: string, file: string) =>
  spec === "@turnpike/relay-core" ||
  spec === "@turnpike/relay-core/client" ||
  (spec.startsWith(".") &&
    TUNNEL_LIFECYCLE.includes(resolve(dirname(file), spec.replace(/\.js$/, ".ts"))));

describe("layers: no import runs upward", () => {
  const packages = Object.entries(LAYERS).map(([name, l]) => ({
    name,
    dir: join(ROOT, l.dir),
    files: sources(join(ROOT, l.dir)),
  }));

  it("finds the sources of every package", () => {
    for (const p of packages) {
      expect(
        p.files.some((f) => f.includes(`${p.dir}/src/`)),
        p.name,
      ).toBe(true);
    }
  });

  it("imports only packages below, and never another package's files by path", () => {
    const violations = packages.flatMap((p) =>
      p.files.flatMap((f) => layerViolations(p.name, f, readFileSync(f, "utf8"))),
    );
    expect(violations).toEqual([]);
  });

  it("declares every workspace package its sources import", () => {
    for (const p of packages) {
      const manifest = JSON.parse(readFileSync(join(p.dir, "package.json"), "utf8"));
      expect(manifest.name).toBe(p.name);
      const declared = Object.keys(manifest.dependencies ?? {});
      const used = new Set(
        p.files
          .filter((f) => f.includes(`${p.dir}/src/`))
          .flatMap((f) => imports(stripComments(readFileSync(f, "utf8"))))
          .map((i) => workspacePackage(i.spec))
          .filter((n): n is string => n !== undefined && n !== p.name),
      );
      for (const n of used) expect(declared, `${p.name} uses ${n}`).toContain(n);
    }
  });

  it("catches an upward import, a reach into another package and an undeclared helper", () => {
    const at = (dir: string, f: string) => join(ROOT, dir, f);
    expect(
      layerViolations(
        "@turnpike/runtime-kit",
        at("packages/runtime-kit", "src/log.ts"),
        'import { startRelay } from "@turnpike/relay-server";',
      ),
    ).toHaveLength(1);
    expect(
      layerViolations(
        "@turnpike/relay-core",
        at("packages/relay-core", "src/index.ts"),
        'export { Logger } from "@turnpike/runtime-kit";',
      ),
    ).toHaveLength(1);
    expect(
      layerViolations(
        "@turnpike/test-support",
        at("test-support", "src/turn-client-lite.ts"),
        'import { decodeStun } from "../../packages/relay-core/src/index.js";',
      ),
    ).toHaveLength(1);
    // Tests may use the shared helpers; sources may not, and relay-core's tests may not either.
    const helper = 'import { freePort } from "@turnpike/test-support/ports";';
    expect(
      layerViolations("@turnpike/relay-server", at("packages/relay-server", "test/x.ts"), helper),
    ).toEqual([]);
    expect(
      layerViolations("@turnpike/relay-server", at("packages/relay-server", "src/x.ts"), helper),
    ).toHaveLength(1);
    expect(
      layerViolations("@turnpike/relay-core", at("packages/relay-core", "test/x.ts"), helper),
    ).toHaveLength(1);
    // Its own sources by path are fine.
    expect(
      layerViolations(
        "@turnpike/tunnel-client",
        at("packages/tunnel-client", "test/x.ts"),
        'import { Tunnel } from "../src/tunnel.js";',
      ),
    ).toEqual([]);
  });
});

describe("relay-server: each room imports only what it may", () => {
  const files = sources(RELAY_SERVER_SRC);

  it("finds every room", () => {
    for (const room of Object.keys(ROOMS)) {
      expect(
        files.some((f) => relative(RELAY_SERVER_SRC, f).startsWith(room)),
        room,
      ).toBe(true);
    }
  });

  it("keeps every room's imports to what it may import", () => {
    const found = files.flatMap((f) => roomViolations(f, readFileSync(f, "utf8")));
    expect(found).toEqual([]);
  });

  it("catches the shared room reaching into the engine and a UDP path past the host interface", () => {
    const at = (f: string) => join(RELAY_SERVER_SRC, f);
    expect(
      roomViolations(
        at("shared/worker-link.ts"),
        'import { startRelay } from "../engine/driver.js";',
      ),
    ).toEqual(["relay-server/src/shared/worker-link.ts (shared/) imports engine/driver.ts"]);
    expect(
      roomViolations(
        at("udp/batch-path.ts"),
        'import type { OutputRooms } from "../engine/outputs.js";',
      ),
    ).toHaveLength(1);
    expect(
      roomViolations(
        at("udp/batch-path.ts"),
        'import type { EngineHost } from "../engine/host.js";',
      ),
    ).toEqual([]);
  });

  it("catches the worker thread loading the supervisor's modules", () => {
    const at = (f: string) => join(RELAY_SERVER_SRC, f);
    expect(
      roomViolations(at("workers/worker.ts"), 'import { spawnWorker } from "./spawn.js";'),
    ).toEqual(["relay-server/src/workers/worker.ts (workers/worker.ts) imports workers/spawn.ts"]);
    expect(
      roomViolations(at("workers/worker.ts"), 'import type { WorkerInit } from "./messages.js";'),
    ).toEqual([]);
  });
});

describe("sans-IO: relay-core", () => {
  const files = sources(join(ROOT, "packages/relay-core/src"));

  it("has no runtime dependencies in package.json", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "packages/relay-core/package.json"), "utf8"));
    for (const field of ["dependencies", "peerDependencies", "optionalDependencies"]) {
      expect(Object.keys(pkg[field] ?? {}), field).toEqual([]);
    }
  });

  it("finds the sources it checks", () => {
    expect(files.length).toBeGreaterThan(10);
    expect(files.some((f) => f.endsWith("server.ts"))).toBe(true);
  });

  it("imports no I/O module and nothing outside itself but node:crypto, reads no clock, draws no ambient randomness, arms no timer", () => {
    const found = files.flatMap((f) => impurities(f, readFileSync(f, "utf8"), relayCoreImport));
    expect(found).toEqual([]);
  });
});

describe("sans-IO: the tunnel's lifecycle machine", () => {
  it("takes values only from relay-core and the other pure modules, and reads no clock, draws no randomness, arms no timer", () => {
    const found = TUNNEL_LIFECYCLE.flatMap((f) =>
      impurities(f, readFileSync(f, "utf8"), lifecycleImport),
    );
    expect(found).toEqual([]);
  });
});

describe("the checks can fail", () => {
  const core = join(ROOT, "packages/relay-core/src/x.ts");
  const lifecycle = TUNNEL_LIFECYCLE[0]!;

  it("catches an I/O module, a dependency, a clock, randomness and a timer", () => {
    expect(imports('import { createSocket } from "node:dgram";')).toEqual([
      { spec: "node:dgram", typeOnly: false },
    ]);
    expect(imports('const t = await import("timers");')).toEqual([
      { spec: "timers", typeOnly: false },
    ]);
    expect(impurities(core, 'import { x } from "yargs";', relayCoreImport)).toHaveLength(1);
    expect(impurities(core, "const t = Date.now();", relayCoreImport)).toHaveLength(1);
    expect(impurities(core, "// Date.now() is banned", relayCoreImport)).toEqual([]);
    expect(impurities(lifecycle, "setTimeout(f, 10);", lifecycleImport)).toHaveLength(1);
    expect(impurities(lifecycle, "const r = Math.random();", lifecycleImport)).toHaveLength(1);
  });

  it("lets the lifecycle take types from anywhere but values only from pure modules", () => {
    expect(
      impurities(
        lifecycle,
        'import type { TurnCredentials } from "./credentials.js";',
        lifecycleImport,
      ),
    ).toEqual([]);
    expect(
      impurities(
        lifecycle,
        'import { createCredentialSource } from "./credentials.js";',
        lifecycleImport,
      ),
    ).toHaveLength(1);
    expect(
      impurities(lifecycle, 'import { Backoff } from "./backoff.js";', lifecycleImport),
    ).toEqual([]);
    expect(
      impurities(lifecycle, 'import { lookup } from "node:dns/promises";', lifecycleImport),
    ).toHaveLength(1);
  });
});

// An ES import of node:http makes Node build its namespace, reading every export, and its lazy
// WebSocket/CloseEvent/MessageEvent load undici, http2 and zlib (~11 MB of an idle relay);
// node:tls belongs to TURNS and turns: relays. The product takes all three from
// runtime-kit/src/node-builtins.ts where a configured feature uses them; types are free.
const LOADED_WHERE_USED = ["http", "https", "tls"];

/** The value imports of node:http, node:https or node:tls in `file`, as messages. */
function eagerBuiltins(file: string, code: string): string[] {
  return imports(stripComments(code))
    .filter((i) => !i.typeOnly && LOADED_WHERE_USED.includes(i.spec.replace(/^node:/, "")))
    .map((i) => `${relative(ROOT, file)} imports ${i.spec} as a value`);
}

describe("Node's http, https and tls: loaded where used, never imported as ES modules", () => {
  const product = Object.values(LAYERS)
    .filter((l) => l.dir.startsWith("packages/"))
    .flatMap((l) => sources(join(ROOT, l.dir, "src")))
    .filter((f) => !f.endsWith(".test.ts"));

  it("finds the modules that serve or dial HTTP and TLS", () => {
    for (const f of ["relay-server/src/health.ts", "tunnel-client/src/tunnel/tls-trust.ts"]) {
      expect(product).toContain(join(ROOT, "packages", f));
    }
  });

  it("imports node:http, node:https and node:tls for their types only", () => {
    expect(product.flatMap((f) => eagerBuiltins(f, readFileSync(f, "utf8")))).toEqual([]);
  });

  it("catches a value import and a dynamic import, and lets a type import pass", () => {
    const f = join(ROOT, "packages/relay-server/src/health.ts");
    expect(eagerBuiltins(f, 'import { createServer } from "node:http";')).toHaveLength(1);
    expect(eagerBuiltins(f, 'const { connect } = await import("tls");')).toHaveLength(1);
    expect(eagerBuiltins(f, 'import type { Server } from "node:http";')).toEqual([]);
    expect(eagerBuiltins(f, '// import { get } from "node:https";')).toEqual([]);
  });
});
