// The packages as npm users get them: packed with `pnpm pack`, installed with npm into
// directories outside the workspace, used from there. relay-core is imported by a strict
// `nodenext` TypeScript file and driven by a fast-check property; turnpike-relay and
// turnpike-tunnel are installed by the README's own commands, run as written (readme-install.ts),
// and serve from there: the relay on its batched UDP path. The same commands fail on a missing
// tarball instead of fetching it, and every other document that installs says the same.
import { execFile } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { stunBinding } from "@turnpike/test-support/stun";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAddress, tcpEcho, tcpRoundTrip } from "../../packages/tunnel-client/test/harness.js";
import { markdownSection, repoText, shellBlocks, unitHeaderCommands } from "./docs.js";
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
import {
  checkScopePinned,
  INSTALL_PREFIX,
  installLines,
  readmeInstallBlock,
  runInstall,
} from "./readme-install.js";

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
// The client entry: the same codec objects, no server module loaded behind it.
import {
  decodeStun as decodeFromClientEntry,
  mintRestCredentials,
  TurnClient,
} from "@turnpike/relay-core/client";

if (decodeFromClientEntry !== decodeStun || typeof TurnClient !== "function") {
  throw new Error("@turnpike/relay-core/client is not the root's client side");
}
const minted = mintRestCredentials("s3cret", 1_700_000_000, 600, "alice");
if (minted.username !== "1700000600:alice") throw new Error(\`minted \${minted.username}\`);

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

describe("the README's install commands", () => {
  const relayBlock = readmeInstallBlock("turnpike-relay");
  const tunnelBlock = readmeInstallBlock("turnpike-tunnel");

  it("install every @turnpike package from a tarball, with the scope pinned to a closed port", () => {
    checkScopePinned(relayBlock, INSTALL_PREFIX["turnpike-relay"]);
    checkScopePinned(tunnelBlock, INSTALL_PREFIX["turnpike-tunnel"]);
    // Each CLI's tarball and those of all its workspace dependencies, dependencies first.
    const named = (lines: string[]) =>
      lines.flatMap((l) =>
        [...l.matchAll(/\.\/(turnpike-[a-z-]+)-\d[\w.-]*\.tgz/g)].map((m) => m[1]),
      );
    const expected = (root: string) =>
      withWorkspaceDependencies([root]).map((p) => p.name.replace("@turnpike/", "turnpike-"));
    expect(named(relayBlock)).toEqual(expected("@turnpike/relay-server"));
    expect(named(tunnelBlock)).toEqual(expected("@turnpike/tunnel-client"));
    // The CLI's own tarball alone in the last npm install: its dependencies are installed by then.
    for (const [block, cli] of [
      [relayBlock, "relay-server"],
      [tunnelBlock, "tunnel-client"],
    ] as const) {
      const installs = block.filter((l) => l.startsWith("npm install"));
      expect(installs.at(-1)).toMatch(
        new RegExp(`^npm install --prefix \\S+ \\./turnpike-${cli}-[^ ]+\\.tgz$`),
      );
    }
  });

  it("are the ones the systemd unit's header and the packages' READMEs give", () => {
    const relay = installLines(relayBlock);
    const tunnel = installLines(tunnelBlock);
    expect(
      installLines(unitHeaderCommands(repoText("deploy/systemd/turnpike-relay.service"))),
    ).toEqual(relay);
    const fromReadme = (path: string) =>
      installLines(shellBlocks(markdownSection(repoText(path), "Install")).flat());
    expect(fromReadme("packages/relay-server/README.md")).toEqual(relay);
    expect(fromReadme("packages/tunnel-client/README.md")).toEqual(tunnel);
  });

  it("fail on a missing tarball instead of fetching the package from a registry", async () => {
    const root = join(scratch, "missing-udp-batch");
    const without = relayBlock.map((l) => l.replace(/ \.\/turnpike-udp-batch-[^ ]+\.tgz/, ""));
    expect(without).not.toEqual(relayBlock);
    const r = await runInstall(without, join(scratch, "tarballs"), root);
    expect(r.code, r.output).not.toBe(0);
    expect(r.output).toMatch(/127\.0\.0\.1:9\/@turnpike%2fudp-batch/);
    expect(r.output).not.toContain("registry.npmjs.org/@turnpike");
    expect(existsSync(join(root, "opt/turnpike/node_modules/@turnpike/relay-server"))).toBe(false);
  });
});

describe("turnpike-relay and turnpike-tunnel installed by the README's commands", () => {
  let prefix: string;
  let tunnelPrefix: string;
  let echo: Awaited<ReturnType<typeof tcpEcho>>;

  beforeAll(async () => {
    const root = join(scratch, "readme");
    for (const cli of ["turnpike-relay", "turnpike-tunnel"] as const) {
      const r = await runInstall(readmeInstallBlock(cli), join(scratch, "tarballs"), root);
      expect(r.code, r.output).toBe(0);
      // The block's last line runs the installed CLI: `--version`.
      expect(r.output).toMatch(/^\d+\.\d+\.\d+$/m);
    }
    prefix = join(root, INSTALL_PREFIX["turnpike-relay"]);
    tunnelPrefix = join(root, INSTALL_PREFIX["turnpike-tunnel"]);
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
        // udp-batch's native module was built by the install and loaded.
        expect(started.proc.stderr).toMatch(/ INFO ready .*\budpIo=batch\b/);
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
        join(tunnelPrefix, "node_modules/.bin/turnpike-tunnel"),
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

  it("without a token prints the command that mints credentials where it is installed, and that command works", async () => {
    const relay = await startRelay(join(prefix, "node_modules/.bin/turnpike-relay"), {
      // An empty variable counts as unset: the relay generates a token for this run.
      TURNPIKE_TOKEN: "",
    });
    try {
      const line = relay.started.proc.stderr
        .split("\n")
        .find((l) => l.includes("mint credentials with: "));
      const command = line?.slice(line.indexOf("mint credentials with: ") + 23) ?? "";
      expect(command).toMatch(
        new RegExp(
          `^TURNPIKE_TOKEN=\\S+ ${prefix}/node_modules/\\.bin/turnpike-relay credentials$`,
        ),
      );
      const minted = await run("sh", ["-c", command], { env: outsideEnv(), cwd: scratch });
      expect(JSON.parse(minted.stdout).username).toMatch(/^\d+$/);
    } finally {
      await signalAndWait(relay.started, "SIGINT").catch(() => undefined);
      killLeftovers(relay.started);
    }
  });

  it("says in one warning that it relays on node:dgram when the native module is missing", async () => {
    const build = join(prefix, "node_modules/@turnpike/udp-batch/build");
    renameSync(build, `${build}.off`);
    let relay: { started: Started } | undefined;
    try {
      relay = await startRelay(join(prefix, "node_modules/.bin/turnpike-relay"), {});
      const warnings = relay.started.proc.stderr
        .split("\n")
        .filter((l) => l.includes(" WARN --udp-io auto: the batched UDP path is unavailable"));
      expect(warnings, relay.started.proc.stderr).toHaveLength(1);
      expect(warnings[0]).toContain("relaying on node:dgram");
      expect(warnings[0]).toContain("reason=");
      expect(relay.started.proc.stderr).toMatch(/ INFO ready .*\budpIo=dgram\b/);
    } finally {
      if (relay !== undefined) {
        await signalAndWait(relay.started, "SIGINT").catch(() => undefined);
        killLeftovers(relay.started);
      }
      renameSync(`${build}.off`, build);
    }
  });
});
