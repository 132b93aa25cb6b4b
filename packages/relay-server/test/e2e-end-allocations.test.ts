// End to end: the operator ends allocations of a real turnpike-relay on two workers, with the
// discovery API's DELETE and with `turnpike-relay allocations --end-user/--end`: every
// allocation of the user named, on whichever worker it lives, or one by the id GET shows (ids
// are unique across workers); the credentials stay valid, so the user may allocate again.
import { spawnSync } from "node:child_process";
import { restCredentials } from "@turnpike/test-support/credentials";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, TURNPIKE_BIN, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AllocationRow } from "../src/discovery.js";

const TOKEN = "e2e-end-allocations-token";
const ADMIN = "e2e-end-allocations-admin";

describe("ending allocations on a relay with two workers", () => {
  let range: PortRange;
  let relay: TurnpikeHandle;
  const clients: TurnClientLite[] = [];

  beforeAll(async () => {
    range = reservePortRange(40);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      logLevel: "info",
      extraArgs: ["--workers", "2"],
      env: { TURNPIKE_ADMIN_TOKEN: ADMIN },
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  async function allocate(user: string): Promise<TurnClientLite> {
    const creds = restCredentials(TOKEN, user);
    const c = await TurnClientLite.open({
      port: relay.port,
      username: creds.username,
      password: creds.credential,
    });
    clients.push(c);
    expect((await c.allocate()).code).toBe(0);
    return c;
  }

  async function rows(): Promise<AllocationRow[]> {
    const r = await fetch(`http://127.0.0.1:${relay.healthPort}/v1/allocations`, {
      headers: { authorization: `Bearer ${ADMIN}` },
    });
    expect(r.status).toBe(200);
    return ((await r.json()) as { allocations: AllocationRow[] }).allocations;
  }

  /** `turnpike-relay allocations ...` next to the relay, as an operator runs it. */
  function cli(...args: string[]) {
    return spawnSync(process.execPath, [TURNPIKE_BIN, "allocations", ...args], {
      env: {
        PATH: process.env.PATH,
        TURNPIKE_ADMIN_TOKEN: ADMIN,
        TURNPIKE_HEALTH_LISTEN: `127.0.0.1:${relay.healthPort}`,
      },
      encoding: "utf8",
      timeout: 20_000,
    });
  }

  it("ends every allocation of a user on every worker, leaves the others, and lets the user allocate again", async () => {
    // UDP clients on their own ports: the kernel spreads them over both workers.
    const acme = [];
    for (let i = 0; i < 6; i++) acme.push(await allocate("acme"));
    const globex = [await allocate("globex"), await allocate("globex")];
    const before = await rows();
    expect(before).toHaveLength(8);
    expect(new Set(before.map((r) => r.id)).size).toBe(8);
    for (const r of before) expect(r.id).toMatch(/^[01]-\d+$/);

    const r = cli("--end-user", "acme");
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("ended 6 allocations\n");
    expect((await rows()).map((x) => x.user)).toEqual(["globex", "globex"]);
    for (const c of acme) expect((await c.refresh(600)).code).toBe(437);
    for (const c of globex) expect((await c.refresh(600)).code).toBe(0);
    expect(relay.stderr).toContain("allocation ended by the operator");

    // Not revoked: the same user allocates again.
    await allocate("acme");
    expect((await rows()).filter((x) => x.user === "acme")).toHaveLength(1);
  });

  it("ends one allocation by the id GET shows, over HTTP and with --end", async () => {
    const list = (await rows()).filter((x) => x.user === "globex");
    expect(list).toHaveLength(2);
    const first = await fetch(
      `http://127.0.0.1:${relay.healthPort}/v1/allocations/${list[0]!.id}`,
      { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } },
    );
    expect(first.status).toBe(200);
    expect(await first.json()).toEqual({ ended: 1 });
    const r = cli("--end", list[1]!.id);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toBe("ended 1 allocation\n");
    const again = cli("--end", list[1]!.id);
    expect(again.status).toBe(1);
    expect(again.stderr).toContain(`HTTP 404: no live allocation ${list[1]!.id}`);
    expect((await rows()).map((x) => x.user)).toEqual(["acme"]);
  });
});
