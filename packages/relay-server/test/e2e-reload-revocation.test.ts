// Revocation held in one place: a user revoked with --revoke-file and SIGHUP is refused by
// every worker, also by one restarted after a crash, and a SIGHUP that arrives while a worker
// restarts reaches it too. Each try is a fresh UDP client 5-tuple: first a control user
// allocates from it (its relayed port names the worker, which owns that slice of the range),
// then the revoked user tries from the very same 5-tuple, which the kernel hands to the same
// worker. (The relay-server project runs two workers, relay-server-dgram one engine.)
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintRestCredentials } from "@turnpike/relay-core";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const TOKEN = "e2e-reload-revocation-token";
const WORKERS = Number(process.env.TEST_WORKERS ?? "1");
const TRIES = 16;

const creds = (user: string) => {
  const c = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 600, user);
  return { username: c.username, password: c.password };
};

let relay: TurnpikeHandle | undefined;
let range: PortRange | undefined;
let dir: string;
let revokeFile: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "turnpike-reload-revoke-"));
  revokeFile = join(dir, "revoked");
  writeFileSync(revokeFile, "# nobody yet\n");
});

afterEach(async () => {
  await relay?.stop("SIGINT", 5000);
  relay = undefined;
  range?.release();
  rmSync(dir, { recursive: true, force: true });
});

async function start(extraArgs: string[] = []): Promise<void> {
  range = reservePortRange(100);
  relay = await startTurnpike({
    minPort: range.min,
    maxPort: range.max,
    token: TOKEN,
    logLevel: "info",
    extraArgs: ["--revoke-file", revokeFile, ...extraArgs],
  });
}

/** The worker that owns relay port `port` (workers own equal slices, in order). */
function workerOf(port: number): number {
  const span = range!.max - range!.min + 1;
  return Math.floor(((port - range!.min) * WORKERS) / span);
}

/**
 * TRIES fresh 5-tuples: which worker each reaches (a control user's allocation, deleted again)
 * and what `user` gets there.
 */
async function triesOf(user: string): Promise<{ worker: number; code: number }[]> {
  const results: { worker: number; code: number }[] = [];
  for (let i = 0; i < TRIES; i++) {
    const probe = await TurnClientLite.open({ port: relay!.port, ...creds(`probe-${i}`) });
    const placed = await probe.allocate();
    expect(placed.code, placed.reason).toBe(0);
    const localPort = probe.localAddress().port;
    expect((await probe.refresh(0)).code).toBe(0);
    probe.close();
    const tried = await TurnClientLite.open({ port: relay!.port, localPort, ...creds(user) });
    const r = await tried.allocate();
    tried.close();
    results.push({ worker: workerOf(placed.relayed[0]!.port), code: r.code });
  }
  return results;
}

async function readyz(): Promise<{ status: string; configGeneration?: number }> {
  return JSON.parse((await httpGet(relay!.healthPort, "/readyz")).body);
}

/** Waits (bounded) for a log line. */
async function logged(pattern: RegExp, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(relay!.stderr)) {
    if (Date.now() > deadline) throw new Error(`no log line ${pattern} within ${ms} ms`);
    await sleep(20);
  }
}

/** SIGUSR2 crashes worker 1 (--test-crash-worker); resolves once it is back. */
async function crashWorker1(onDegraded: () => void = () => {}): Promise<void> {
  process.kill(relay!.pid, "SIGUSR2");
  const deadline = Date.now() + 15_000;
  let degraded = false;
  for (;;) {
    const { status } = await readyz();
    if (status === "degraded" && !degraded) {
      degraded = true;
      onDegraded();
    }
    if (degraded && status === "ready") return;
    if (Date.now() > deadline) throw new Error(`worker 1 never came back: ${status}`);
    await sleep(10);
  }
}

function expectRefusedEverywhere(results: { worker: number; code: number }[]): void {
  // Every try reached a worker; all of them refuse (403), worker 1 (the one that crashes and
  // restarts) included.
  expect(results.map((r) => r.code)).toEqual(results.map(() => 403));
  if (WORKERS > 1) expect(new Set(results.map((r) => r.worker))).toContain(1);
}

describe("revocation through --revoke-file and SIGHUP", () => {
  it("refuses the revoked user on every try, whichever worker it reaches", async () => {
    await start();
    expect((await triesOf("mallory")).map((r) => r.code)).toEqual(Array(TRIES).fill(0));
    writeFileSync(revokeFile, "mallory   # leaked key\n");
    process.kill(relay!.pid, "SIGHUP");
    await logged(/reload: applied .*revocationEntries=1/);
    expectRefusedEverywhere(await triesOf("mallory"));
  });

  it.skipIf(WORKERS < 2)("still refuses it on a worker restarted after a crash", async () => {
    await start(["--test-crash-worker"]);
    writeFileSync(revokeFile, "mallory\n");
    process.kill(relay!.pid, "SIGHUP");
    await logged(/reload: applied .*revocationEntries=1/);
    await crashWorker1();
    expect(relay!.stderr).toMatch(/worker restarted/);
    expectRefusedEverywhere(await triesOf("mallory"));
  });

  it.skipIf(WORKERS < 2)(
    "reaches a worker that is restarting when the SIGHUP arrives",
    async () => {
      await start(["--test-crash-worker"]);
      await crashWorker1(() => {
        writeFileSync(revokeFile, "mallory\n");
        process.kill(relay!.pid, "SIGHUP");
      });
      await logged(/reload: applied .*revocationEntries=1/);
      expectRefusedEverywhere(await triesOf("mallory"));
      expect((await readyz()).configGeneration).toBe(2);
    },
  );
});
