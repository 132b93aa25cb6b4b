// The container image without a container engine (none runs here): the Dockerfile is read, the
// `pnpm deploy` line its build stage runs is run into a temporary directory (the exact payload
// the runtime stage copies to its WORKDIR), and the image's ENTRYPOINT + CMD start from there
// with the image's ENV, as `docker run` would. Then /readyz, a STUN Binding over UDP and TCP,
// the HEALTHCHECK command, and SIGTERM to the entrypoint's PID (what `docker stop` sends).
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { stunBinding } from "@turnpike/test-support/stun";
import { httpGet, launcherNodeFlags, TURNPIKE_BIN } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  busyPorts,
  killLeftovers,
  outsideEnv,
  REPO,
  type Started,
  signalAndWait,
  startUntilReady,
} from "./launch.js";

const run = promisify(execFile);
const DOCKERFILE = join(REPO, "packages/relay-server/Dockerfile");

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** FROM-separated stages of a Dockerfile, each a list of instructions (continuations joined). */
function parseDockerfile(text: string): Instruction[][] {
  const logical: string[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    if (pending === "" && (raw.trim() === "" || raw.trimStart().startsWith("#"))) continue;
    if (raw.trimStart().startsWith("#")) continue; // a comment inside a continuation
    if (raw.endsWith("\\")) {
      pending += `${raw.slice(0, -1)} `;
      continue;
    }
    logical.push((pending + raw).trim());
    pending = "";
  }
  const stages: Instruction[][] = [];
  for (const line of logical) {
    const space = line.search(/\s/);
    const keyword = line.slice(0, space).toUpperCase();
    const args = line.slice(space + 1).trim();
    if (keyword === "FROM") stages.push([]);
    stages.at(-1)?.push({ keyword, args });
  }
  return stages;
}

const stages = parseDockerfile(readFileSync(DOCKERFILE, "utf8"));
const runtime = stages.at(-1)!;
const only = (stage: Instruction[], keyword: string): Instruction[] =>
  stage.filter((i) => i.keyword === keyword);
/** The JSON exec form of ENTRYPOINT, CMD or HEALTHCHECK (after its --options and CMD). */
const execForm = (i: Instruction | undefined): string[] =>
  JSON.parse(i === undefined ? "[]" : i.args.slice(i.args.indexOf("["))) as string[];

/** ENV instructions of a stage as a record (`KEY=value` pairs, several per instruction). */
function envOf(stage: Instruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of only(stage, "ENV")) {
    for (const m of i.args.matchAll(/(\w+)=(\S+)/g)) env[m[1]!] = m[2]!;
  }
  return env;
}

describe("packages/relay-server/Dockerfile", () => {
  it("runs as a non-root user with a HEALTHCHECK, and documents the relay ports", () => {
    const user = only(runtime, "USER").at(-1)?.args;
    expect(user).toBeDefined();
    expect(["root", "0", "0:0"]).not.toContain(user);
    const health = only(runtime, "HEALTHCHECK").at(-1);
    expect(health?.args).toMatch(/\bCMD\b/);
    expect(execForm(health).join(" ")).toContain("/healthz");
    const exposed = only(runtime, "EXPOSE").flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(
      expect.arrayContaining(["3478/udp", "3478/tcp", "49152-65535/udp", "49152-65535/tcp"]),
    );
    const text = readFileSync(DOCKERFILE, "utf8");
    expect(text).toContain("--network host");
    expect(text).toMatch(/--stop-timeout \d+/);
  });

  it("starts node with the node flags of the relay's launcher (its #! line)", () => {
    // The launcher's `#!/usr/bin/env -S node FLAGS` is what an executable bin, npm's and
    // pnpm's bin links run; ENTRYPOINT calls node itself, so it has to repeat them.
    const flags = launcherNodeFlags(TURNPIKE_BIN);
    expect(flags).not.toEqual([]);
    const [entry, ...entryArgs] = execForm(only(runtime, "ENTRYPOINT").at(-1));
    expect(entry).toBe("node");
    expect(entryArgs).toEqual([...flags, "bin/turnpike-relay.js"]);
  });

  describe("the payload `pnpm deploy` builds, started as the image starts it", () => {
    let payload: string;
    let range: PortRange;
    let started: Started | undefined;
    let port: number;
    let health: number;
    let containerEnv: NodeJS.ProcessEnv;

    beforeAll(async () => {
      range = reservePortRange(10);
      payload = join(mkdtempSync(join(tmpdir(), "turnpike-image-")), "app");
      // The build stage's deploy line, with its output directory (what the runtime stage
      // copies) swapped for ours.
      const copy = only(runtime, "COPY").find((i) => i.args.startsWith("--from="));
      const [from, to] = copy!.args.split(/\s+/).slice(1);
      expect(only(runtime, "WORKDIR").at(-1)?.args).toBe(to);
      const deploy = stages
        .slice(0, -1)
        .flatMap((s) => only(s, "RUN"))
        .find((i) => /\bpnpm\b.*\bdeploy\b/.test(i.args));
      expect(deploy?.args.split(/\s+/)).toContain(from);
      const argv = deploy!.args.split(/\s+/).map((a) => (a === from ? payload : a));
      expect(argv[0]).toBe("pnpm");
      await run(argv[0]!, argv.slice(1), { cwd: REPO, timeout: 300_000 });

      port = await freePort();
      health = await freePort();
      // `docker run -e ...` on top of the image's ENV.
      containerEnv = outsideEnv({
        ...envOf(runtime),
        TURNPIKE_TOKEN: "container-test-token",
        TURNPIKE_HEALTH_LISTEN: `127.0.0.1:${health}`,
        TURNPIKE_MIN_PORT: String(range.min),
        TURNPIKE_MAX_PORT: String(range.max),
      });
    });
    afterAll(() => {
      killLeftovers(started);
      range?.release();
      if (payload !== undefined) rmSync(join(payload, ".."), { recursive: true, force: true });
    });

    it("holds production dependencies only", () => {
      const modules = readdirSync(join(payload, "node_modules"));
      for (const dev of ["typescript", "vitest", "@types", "@biomejs", "playwright-core"]) {
        expect(modules).not.toContain(dev);
      }
      expect(existsSync(join(payload, "node_modules/@turnpike/relay-core/dist/index.js"))).toBe(
        true,
      );
    });

    it("serves /readyz and STUN from ENTRYPOINT + CMD, and the HEALTHCHECK command passes", async () => {
      const [entry, ...entryArgs] = execForm(only(runtime, "ENTRYPOINT").at(-1));
      // CMD with its 0.0.0.0:3478 moved to a free loopback port, as `docker run IMAGE args` would.
      const cmd = execForm(only(runtime, "CMD").at(-1)).map((a) =>
        a === "0.0.0.0:3478" ? `127.0.0.1:${port}` : a,
      );
      expect(cmd).toContain(`127.0.0.1:${port}`);
      expect(entry).toBe("node");
      started = await startUntilReady(process.execPath, [...entryArgs, ...cmd], {
        env: containerEnv,
        cwd: payload,
        healthPort: health,
      });
      const ready = await httpGet(health, "/readyz");
      expect(ready.status).toBe(200);
      // The batched UDP path, not the node:dgram fallback: the deploy line built udp-batch's
      // native module (the runtime stage has no compiler to build it later).
      expect(started.proc.stderr).toMatch(/ INFO ready .*\budpIo=batch\b/);
      expect(JSON.parse(ready.body).udpIo).toBe("batch");
      for (const transport of ["udp", "tcp"] as const) {
        const r = await stunBinding({ port, transport });
        expect(r.mapped?.address, transport).toBe("127.0.0.1");
      }
      expect(await healthcheck()).toBe(0);
    });

    it("drains on SIGTERM to the entrypoint's PID (docker stop), exits 0, and then fails its HEALTHCHECK", async () => {
      expect(started).toBeDefined();
      const stopped = await signalAndWait(started!, "SIGTERM");
      expect(stopped.exit).toEqual({ code: 0, signal: null });
      expect(stopped.output).toContain("SIGTERM received: draining");
      expect(await busyPorts({ tcp: [port, health], udp: [port] })).toEqual([]);
      expect(await healthcheck()).toBe(1);
    });

    /** The HEALTHCHECK's exec form, `node` being the image's node; resolves its exit code. */
    async function healthcheck(): Promise<number> {
      const [command, ...args] = execForm(only(runtime, "HEALTHCHECK").at(-1));
      expect(command).toBe("node");
      return run(process.execPath, args, { cwd: payload, env: containerEnv, timeout: 10_000 }).then(
        () => 0,
        (e: { code?: number }) => e.code ?? -1,
      );
    }
  });
});
