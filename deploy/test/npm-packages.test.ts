// The packages as npm users get them: packed with `pnpm pack`, installed with npm into
// directories outside the workspace, used from there. relay-core is imported by a strict
// `nodenext` TypeScript file and driven by a fast-check property; turnpike-relay and
// turnpike-tunnel run from an npm install and serve; the systemd unit passes
// `systemd-analyze verify` and its ExecStart, pointed at that install, stops cleanly on
// systemd's KillSignal.
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { stunBinding } from "@turnpike/test-support/stun";
import { requireTool, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAddress, tcpEcho, tcpRoundTrip } from "../../packages/tunnel-client/test/harness.js";
import {
  busyPorts,
  killLeftovers,
  outsideEnv,
  REPO,
  type Started,
  signalAndWait,
  startUntilReady,
} from "./launch.js";
import {
  npmInstall,
  pack,
  tarballFiles,
  tarballManifest,
  type WorkspacePackage,
  withWorkspaceDependencies,
} from "./pack.js";

const run = promisify(execFile);
const TOKEN = "npm-packages-test-token";
const rootManifest = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
  devDependencies: Record<string, string>;
};

let scratch: string;
let packages: WorkspacePackage[];
let tarballs: Map<string, string>;
let range: PortRange;

beforeAll(async () => {
  // Outside the workspace: nothing of it (node_modules, tsconfig, pnpm) is found by walking up.
  scratch = mkdtempSync(join(tmpdir(), "turnpike-npm-"));
  range = reservePortRange(20);
  packages = withWorkspaceDependencies(["@turnpike/relay-server", "@turnpike/tunnel-client"]);
  mkdirSync(join(scratch, "tarballs"));
  const files = await pack(packages, join(scratch, "tarballs"));
  tarballs = new Map(packages.map((p, i) => [p.name, files[i]!]));
});

afterAll(() => {
  range?.release();
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

describe("pnpm pack tarballs", () => {
  it("hold dist with types, README and LICENSE, and no tests, sources, maps or build info", async () => {
    expect(packages.map((p) => p.name)).toEqual(
      expect.arrayContaining([
        "@turnpike/relay-core",
        "@turnpike/runtime-kit",
        "@turnpike/relay-server",
        "@turnpike/tunnel-client",
      ]),
    );
    for (const pkg of packages) {
      const files = await tarballFiles(tarballs.get(pkg.name)!);
      expect(files, pkg.name).toEqual(
        expect.arrayContaining([
          "package/package.json",
          "package/README.md",
          "package/LICENSE",
          "package/dist/index.js",
          "package/dist/index.d.ts",
        ]),
      );
      const unwanted = files.filter((f) =>
        /(^package\/(test|src)\/|\.test\.|\.map$|tsbuildinfo|tsconfig)/.test(f),
      );
      expect(unwanted, pkg.name).toEqual([]);
      expect(readFileSync(join(pkg.dir, "LICENSE"), "utf8")).toBe(
        readFileSync(join(REPO, "LICENSE"), "utf8"),
      );
      const manifest = await tarballManifest(tarballs.get(pkg.name)!);
      // pnpm pack replaced workspace: ranges with the versions npm can resolve.
      expect(JSON.stringify(manifest.dependencies ?? {})).not.toContain("workspace:");
      expect(manifest.engines?.node).toBe(pkg.manifest.engines?.node);
    }
  });
});

describe("@turnpike/relay-core from its tarball, in a strict TypeScript project", () => {
  it("type-checks under module nodenext and runs a fast-check property against it", async () => {
    const dir = join(scratch, "core-user");
    mkdirSync(dir);
    writeFileSync(
      join(dir, "package.json"),
      JSON.stringify({ name: "core-user", private: true, type: "module" }),
    );
    await npmInstall(dir, [
      tarballs.get("@turnpike/relay-core")!,
      `fast-check@${rootManifest.devDependencies["fast-check"]}`,
      `typescript@${rootManifest.devDependencies.typescript}`,
    ]);
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          target: "ES2022",
          module: "nodenext",
          moduleResolution: "nodenext",
          strict: true,
          noUncheckedIndexedAccess: true,
          outDir: "out",
          types: [],
          lib: ["ES2023"],
        },
        files: ["property.ts"],
      }),
    );
    writeFileSync(
      join(dir, "property.ts"),
      `import fc from "fast-check";
import {
  decodeStun,
  MessageClass,
  Method,
  StunMessageBuilder,
  type StunDecodeResult,
} from "@turnpike/relay-core";

// Any bytes decode to a result, never an exception; a Binding request we build decodes back.
fc.assert(
  fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
    const r: StunDecodeResult = decodeStun(bytes);
    return typeof r.ok === "boolean";
  }),
  { numRuns: 500 },
);
fc.assert(
  fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), (tid) => {
    const bytes = new StunMessageBuilder(Method.Binding, MessageClass.Request, tid).build();
    const r = decodeStun(bytes);
    return r.ok && r.message.method === Method.Binding &&
      r.message.transactionId.every((b: number, i: number) => b === tid[i]);
  }),
  { numRuns: 200 },
);
`,
    );
    const env = outsideEnv();
    const tsc = await run(
      process.execPath,
      [join(dir, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"],
      { cwd: dir, env },
    ).catch((e: { stdout: string; stderr: string }) => ({ stdout: e.stdout, stderr: e.stderr }));
    expect(`${tsc.stdout}${tsc.stderr}`).toBe("");
    // fc.assert throws on a counterexample: the run rejects with it. (types: [] above: the
    // tarball's declarations type-check without @types/node.)
    const prop = await run(process.execPath, [join(dir, "out/property.js")], { cwd: dir, env });
    expect(`${prop.stdout}${prop.stderr}`).toBe("");
  });
});

describe("turnpike-relay and turnpike-tunnel from an npm install", () => {
  // Where the README (and the systemd unit) install the CLIs; mapped into the scratch dir.
  const OPT = "/opt/turnpike";
  let prefix: string;
  let echo: Awaited<ReturnType<typeof tcpEcho>>;

  beforeAll(async () => {
    prefix = join(scratch, OPT);
    mkdirSync(prefix, { recursive: true });
    writeFileSync(
      join(prefix, "package.json"),
      JSON.stringify({ name: "turnpike-install", private: true }),
    );
    await npmInstall(prefix, [...tarballs.values()]);
    echo = await tcpEcho();
  });
  afterAll(async () => {
    await echo?.close();
  });

  async function startRelay(
    command: string,
    env: Record<string, string>,
    args: string[] = [],
  ): Promise<{ started: Started; port: number; health: number }> {
    const port = await freePort();
    const health = await freePort();
    const started = await startUntilReady(command, args, {
      env: outsideEnv({
        TURNPIKE_TOKEN: TOKEN,
        TURNPIKE_LISTEN: `127.0.0.1:${port}`,
        TURNPIKE_HEALTH_LISTEN: `127.0.0.1:${health}`,
        TURNPIKE_MIN_PORT: String(range.min),
        TURNPIKE_MAX_PORT: String(range.min + 9),
        TURNPIKE_ALLOW_LOOPBACK_PEERS: "true",
        ...env,
      }),
      cwd: scratch,
      healthPort: health,
    });
    return { started, port, health };
  }

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it(`serves STUN and stops on ${signal} to the PID of node_modules/.bin/turnpike-relay, exit 0`, async () => {
      const { started, port, health } = await startRelay(
        join(prefix, "node_modules/.bin/turnpike-relay"),
        {},
      );
      try {
        for (const transport of ["udp", "tcp"] as const) {
          const r = await stunBinding({ port, transport });
          expect(r.mapped?.address, transport).toBe("127.0.0.1");
          expect(r.software).toMatch(/^turnpike\//);
        }
        const stopped = await signalAndWait(started, signal);
        expect(stopped.exit).toEqual({ code: 0, signal: null });
        expect(stopped.output).toContain(
          signal === "SIGTERM" ? "SIGTERM received: draining" : "SIGINT received: closing",
        );
        expect(stopped.output).toContain("INFO stopped");
        expect(await busyPorts({ tcp: [port, health], udp: [port] })).toEqual([]);
      } finally {
        killLeftovers(started);
      }
    });
  }

  it("turnpike-tunnel exposes a TCP service through the installed relay and releases it on SIGTERM", async () => {
    const relay = await startRelay(join(prefix, "node_modules/.bin/turnpike-relay"), {
      TURNPIKE_MIN_PORT: String(range.min + 10),
      TURNPIKE_MAX_PORT: String(range.max),
    });
    let tunnel: Started | undefined;
    try {
      const admin = await freePort();
      let relayed = "";
      tunnel = await startUntilReady(
        join(prefix, "node_modules/.bin/turnpike-tunnel"),
        [
          "--relay",
          `turn:127.0.0.1:${relay.port}?transport=tcp`,
          "--expose",
          `echo=tcp://127.0.0.1:${echo.port}`,
          "--allow-peer",
          "127.0.0.1",
          "--admin-listen",
          `127.0.0.1:${admin}`,
        ],
        {
          // A TCP admin API needs its token (turnpike-tunnel refuses to start without one).
          env: outsideEnv({ TURNPIKE_TOKEN: TOKEN, TURNPIKE_ADMIN_TOKEN: TOKEN }),
          cwd: scratch,
          ready: async () => {
            const r = await fetch(`http://127.0.0.1:${admin}/list`, {
              headers: { authorization: `Bearer ${TOKEN}` },
            }).catch(() => undefined);
            if (r?.status !== 200) return false;
            const rows = (await r.json()) as { state: string; relayedAddress: string | null }[];
            relayed = rows[0]?.state === "ready" ? (rows[0].relayedAddress ?? "") : "";
            return relayed !== "";
          },
        },
      );
      const payload = Buffer.from("through an npm-installed tunnel and relay");
      expect(await tcpRoundTrip(parseAddress(relayed), payload, 10_000)).toEqual(payload);
      const stopped = await signalAndWait(tunnel, "SIGTERM");
      expect(stopped.exit).toEqual({ code: 0, signal: null });
      expect(await busyPorts({ tcp: [admin] })).toEqual([]);
    } finally {
      killLeftovers(tunnel);
      await signalAndWait(relay.started, "SIGINT").catch(() => undefined);
      killLeftovers(relay.started);
    }
  });

  describe.skipIf(skipUnlessTools("systemd-analyze"))(
    "deploy/systemd/turnpike-relay.service",
    () => {
      const unitText = readFileSync(join(REPO, "deploy/systemd/turnpike-relay.service"), "utf8");
      const service = unitSection(unitText, "Service");

      it("sandboxes the relay: dynamic user, no new privileges, no capabilities, read-only system", () => {
        expect(service.get("DynamicUser")).toEqual(["yes"]);
        expect(service.get("NoNewPrivileges")).toEqual(["yes"]);
        // Empty: the relay's ports are all above 1023 (3478, the relay range, 8080).
        expect(service.get("CapabilityBoundingSet")).toEqual([""]);
        expect(service.get("AmbientCapabilities")).toEqual([""]);
        expect(service.get("ProtectSystem")).toEqual(["strict"]);
        expect(service.get("Restart")).toEqual(["on-failure"]);
        expect(service.get("EnvironmentFile")?.[0]).toMatch(/^\/etc\/turnpike\//);
        // Longer than the default --drain-timeout (30 s) plus the relay's 10 s shutdown guard.
        expect(Number.parseInt(service.get("TimeoutStopSec")?.[0] ?? "0", 10)).toBeGreaterThan(40);
        expect(service.get("ExecStart")?.[0]?.startsWith(`${OPT}/`)).toBe(true);
      });

      it("passes systemd-analyze verify and its ExecStart drains and exits 0 on KillSignal", async () => {
        requireTool("systemd-analyze");
        // The unit as shipped, with /opt/turnpike mapped to this test's npm install (verify
        // checks that ExecStart exists) and the EnvironmentFile to one written here.
        const envFile = join(scratch, "relay.env");
        const port = await freePort();
        const health = await freePort();
        writeFileSync(
          envFile,
          [
            `TURNPIKE_TOKEN=${TOKEN}`,
            `TURNPIKE_LISTEN=127.0.0.1:${port}`,
            `TURNPIKE_HEALTH_LISTEN=127.0.0.1:${health}`,
            `TURNPIKE_MIN_PORT=${range.min}`,
            `TURNPIKE_MAX_PORT=${range.min + 9}`,
            "",
          ].join("\n"),
        );
        const mapped = unitText
          .replaceAll(OPT, prefix)
          .replace(/^EnvironmentFile=.*$/m, `EnvironmentFile=${envFile}`);
        const unitPath = join(scratch, "turnpike-relay.service");
        writeFileSync(unitPath, mapped);
        const verify = await run("systemd-analyze", ["verify", unitPath]).catch(
          (e: { stdout: string; stderr: string; code: number }) => e,
        );
        expect(`${verify.stdout}${verify.stderr}`.trim()).toBe("");

        const unit = unitSection(mapped, "Service");
        const env: Record<string, string> = parseEnvFile(readFileSync(envFile, "utf8"));
        for (const assignment of unit.get("Environment") ?? []) {
          const [k, v] = splitOnce(assignment, "=");
          env[k] = v;
        }
        const [command, ...args] = (unit.get("ExecStart")?.[0] ?? "").split(/\s+/);
        const started = await startUntilReady(command!, args, {
          env: outsideEnv(env),
          cwd: "/",
          healthPort: health,
        });
        try {
          const signal = (unit.get("KillSignal")?.[0] ?? "SIGTERM") as NodeJS.Signals;
          const stopped = await signalAndWait(started, signal, {
            timeoutMs: Number.parseInt(unit.get("TimeoutStopSec")?.[0] ?? "90", 10) * 1000,
          });
          expect(stopped.exit).toEqual({ code: 0, signal: null });
          expect(stopped.output).toContain("SIGTERM received: draining");
          expect(await busyPorts({ tcp: [port, health], udp: [port] })).toEqual([]);
        } finally {
          killLeftovers(started);
        }
      });
    },
  );
});

/** Key -> values (in order) of one [Section] of a systemd unit; comments and blanks skipped. */
function unitSection(text: string, section: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = header[1]!;
      continue;
    }
    if (current !== section) continue;
    const [k, v] = splitOnce(line, "=");
    out.set(k, [...(out.get(k) ?? []), v]);
  }
  return out;
}

function parseEnvFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const [k, v] = splitOnce(line, "=");
    env[k] = v;
  }
  return env;
}

function splitOnce(s: string, sep: string): [string, string] {
  const i = s.indexOf(sep);
  return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
}
