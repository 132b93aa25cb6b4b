// SIGHUP in-process (main.ts, reload.ts): the configuration read again from the same command
// line and environment and the files they name, its live settings handed to the relay as a new
// generation, the restart-only changes named in one line, and a bad configuration refused
// whole. The relay is a fake here (cli-harness.ts); e2e-reload*.test.ts run the real one.
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import { planReload } from "../src/config/reload.js";
import type { RelayConfig } from "../src/config/types.js";
import { runCli } from "../src/main.js";
import type { RelayDeps } from "../src/types.js";
import { type FakeRelay, harness, RUN_ARGS, until } from "./cli-harness.js";

let dir: string;
let configFile: string;
let revokeFile: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "turnpike-reload-"));
  configFile = join(dir, "relay.json");
  revokeFile = join(dir, "revoked");
  writeFileSync(configFile, JSON.stringify({ maxAllocations: 10, logLevel: "info" }));
  writeFileSync(revokeFile, "# revoked customers\nglobex\n");
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A relay run with --config and --revoke-file, and what it logged (JSON lines). */
async function running(env: NodeJS.ProcessEnv = { TURNPIKE_TOKEN: "t" }, args: string[] = []) {
  const h = harness(
    [...RUN_ARGS, "--config", configFile, "--revoke-file", revokeFile, ...args],
    env,
  );
  const done = runCli(h.io);
  await until(() => h.running() !== undefined);
  const lines = () => h.err.map((l) => JSON.parse(l) as Record<string, unknown>);
  const readyz = async () => {
    const port = h.running()!.health!.address().port;
    return (await fetch(`http://127.0.0.1:${port}/readyz`)).json();
  };
  /** SIGHUP, and the line that ends that reload. */
  const hup = async () => {
    const before = lines().length;
    h.events.emit("SIGHUP");
    await until(() =>
      lines()
        .slice(before)
        .some((l) => /^reload: (applied|kept)/.test(`${l.msg}`)),
    );
    return lines().slice(before);
  };
  const stop = async () => {
    h.events.emit("SIGINT");
    expect(await done).toBe(0);
  };
  return { h, lines, readyz, hup, stop };
}

describe("SIGHUP", () => {
  it("applies the live settings of the files read again as a new generation, and names the rest", async () => {
    const r = await running();
    expect(await r.readyz()).toMatchObject({ configGeneration: 1 });
    writeFileSync(revokeFile, "globex\nacme-pg   # leaked key\nacme web\n");
    writeFileSync(
      configFile,
      JSON.stringify({ maxAllocations: 20, logLevel: "debug", realm: "elsewhere", maxChannels: 8 }),
    );
    const logged = await r.hup();
    expect(r.h.relay.reloads).toHaveLength(1);
    const { config, generation } = r.h.relay.reloads[0]!;
    expect(generation).toBe(2);
    expect(config).toMatchObject({
      revokeFileEntries: ["globex", "acme-pg"],
      maxAllocations: 20,
      logLevel: "debug",
      // Restart-only: kept as they were.
      realm: "turnpike",
      maxChannels: 64,
    });
    expect(logged.map((l) => [l.level, l.msg])).toEqual([
      [
        "warn",
        `--revoke-file "${revokeFile}" line 3 ignored: an entry has no blanks inside (a comment starts with ' #'), got "acme web"`,
      ],
      ["warn", "reload: these need a restart: --realm, --max-channels"],
      ["info", "reload: applied"],
    ]);
    expect(logged.at(-1)).toMatchObject({
      generation: 2,
      changed: ["--revoke-file", "--log-level", "--max-allocations"],
      revocationEntries: 2,
      allocationsEnded: 1,
    });
    expect(r.h.running()!.logger.enabled("debug")).toBe(true);
    expect(await r.readyz()).toMatchObject({ configGeneration: 2, lastReload: "applied" });
    // The restart-only changes are still pending: named again, nothing else changed.
    const again = await r.hup();
    expect(again.map((l) => l.msg)).toEqual([
      expect.stringContaining("line 3 ignored"),
      "reload: these need a restart: --realm, --max-channels",
      "reload: applied",
    ]);
    expect(again.at(-1)).toMatchObject({ generation: 3, changed: "nothing" });
    await r.stop();
  });

  it("keeps the running configuration entirely when the new one is wrong, in one line naming the option", async () => {
    const r = await running();
    writeFileSync(revokeFile, "globex\ninitech\n");
    writeFileSync(configFile, JSON.stringify({ maxAllocations: "lots", logLevel: "debug" }));
    const logged = await r.hup();
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({
      level: "error",
      msg: "reload: kept the previous configuration",
      error: `"max-allocations" in ${configFile} must be 1..10000000, got "lots"`,
    });
    expect(r.h.relay.reloads).toEqual([]);
    expect(r.h.running()!.logger.enabled("debug")).toBe(false);
    expect(await r.readyz()).toMatchObject({ configGeneration: 1, lastReload: "refused" });
    // A revocation list that cannot be read is refused the same way: nothing is lost.
    writeFileSync(configFile, JSON.stringify({ maxAllocations: 10 }));
    rmSync(revokeFile);
    expect((await r.hup())[0]).toMatchObject({
      error: `--revoke-file must be a readable file, got "${revokeFile}" (ENOENT)`,
    });
    expect(r.h.relay.reloads).toEqual([]);
    await r.stop();
  });

  it("re-reads --token-file, keeps a generated token, and never logs a secret", async () => {
    const tokens = join(dir, "tokens");
    writeFileSync(tokens, "secret-a\n");
    const r = await running({}, ["--token-file", tokens]);
    writeFileSync(tokens, "# rotating\nsecret-b\nsecret-a\n");
    const logged = await r.hup();
    expect(r.h.relay.reloads[0]!.config.tokens).toEqual(["secret-b", "secret-a"]);
    expect(logged.at(-1)).toMatchObject({ changed: ["--token-file"] });
    writeFileSync(tokens, "secret-b\nsecret-b\n");
    expect((await r.hup())[0]).toMatchObject({
      error: `--token-file "${tokens}" lists one secret twice (lines 1 and 2)`,
    });
    expect(r.h.err.join("\n")).not.toMatch(/secret-[ab]/);
    await r.stop();

    const generated = await running({});
    const [token] = generated.h.started.config!.tokens;
    await generated.hup();
    expect(generated.h.relay.reloads[0]!.config.tokens).toEqual([token]);
    await generated.stop();
  });

  it("hands a reload that arrives while the relay starts to it once it runs", async () => {
    let started: (relay: FakeRelay) => void = () => {};
    let deps: RelayDeps | undefined;
    const h = harness(
      [...RUN_ARGS, "--revoke-file", revokeFile],
      { TURNPIKE_TOKEN: "t" },
      (_, d) => {
        deps = d;
        return new Promise((resolve) => {
          started = resolve;
        });
      },
    );
    const done = runCli(h.io);
    await until(() => deps !== undefined);
    writeFileSync(revokeFile, "initech\n");
    h.events.emit("SIGHUP");
    await until(() => h.err.some((l) => l.includes("reload: applied")));
    expect(deps!.configGeneration).toBe(1);
    started(h.relay);
    await until(() => h.relay.reloads.length > 0);
    expect(h.relay.reloads[0]).toMatchObject({
      generation: 2,
      config: { revokeFileEntries: ["initech"] },
    });
    h.events.emit("SIGINT");
    expect(await done).toBe(0);
  });
});

describe("planReload", () => {
  const parse = (...argv: string[]) =>
    parseRelayArgs(argv, { TURNPIKE_TOKEN: "t" }, { networkInterfaces: () => ({}) }) as RelayConfig;

  it("treats an option it does not know as restart-only: named, and kept at its running value", () => {
    const running = parse();
    const next = { ...running, optionValues: { ...running.optionValues, "max-bps": 5 } };
    const plan = planReload(running, next);
    expect(plan.restartOnly).toEqual(["--max-bps"]);
    expect(plan.changed).toEqual([]);
    expect(plan.config.optionValues["max-bps"]).toBeUndefined();
  });

  it("takes the live settings and keeps the rest, so a later reload compares with the start", () => {
    const running = parse("--min-port", "50000", "--max-allocations", "5");
    const next = parse("--min-port", "51000", "--max-allocations", "6", "--revoke", "mallory");
    const plan = planReload(running, next);
    expect(plan.config).toMatchObject({ minPort: 50000, maxAllocations: 6, revoke: ["mallory"] });
    expect(plan.changed).toEqual(["--revoke", "--max-allocations"]);
    expect(plan.restartOnly).toEqual(["--min-port"]);
    expect(planReload(plan.config, next)).toMatchObject({
      changed: [],
      restartOnly: ["--min-port"],
    });
  });
});

describe("turnpike-relay credentials --pinned-secret", () => {
  it("prints the secret pinned credentials are signed with, derived from the first token", async () => {
    const h = harness(["credentials", "--pinned-secret"], { TURNPIKE_TOKEN: "new,old" });
    expect(await runCli(h.io)).toBe(0);
    expect(h.out.join("")).toBe(
      `${createHmac("sha256", "new").update("turnpike pinned-port credentials v1").digest("hex")}\n`,
    );
  });
});
