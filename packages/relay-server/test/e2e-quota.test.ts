// End to end: the quota flags of a real turnpike-relay process. --max-allocations (508 beyond,
// RFC 8656 §7.2), --max-allocations-per-user (486 beyond, counted per TURN REST user, not per
// username string) and --max-connections (TCP connections beyond are closed).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { restCredentials } from "@turnpike/test-support/credentials";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { Method, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-quota-token";

describe("turnpike-relay quotas", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  const clients: TurnClientLite[] = [];

  beforeAll(async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: [
        "--max-allocations",
        "3",
        "--max-allocations-per-user",
        "2",
        "--max-connections",
        "2",
      ],
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  /** A new UDP client for REST user `user`; `ttl` varies the username's timestamp. */
  async function client(user: string, ttl = 3600, transport: "udp" | "tcp" = "udp") {
    const creds = restCredentials(TOKEN, user, ttl);
    const c = await TurnClientLite.open({
      port: relay!.port,
      transport,
      username: creds.username,
      password: creds.credential,
    });
    clients.push(c);
    return c;
  }

  it("answers 486 past the per-user limit and 508 past the total, and frees both on delete", async () => {
    // Two usernames of one REST user (different expiry timestamps): one quota.
    const alice1 = await client("alice", 3600);
    const alice2 = await client("alice", 3601);
    const alice3 = await client("alice", 3602);
    expect((await alice1.allocate()).code).toBe(0);
    expect((await alice2.allocate()).code).toBe(0);
    const over = await alice3.allocate();
    expect(over.code, over.reason).toBe(486);

    // Another user is not held to alice's quota...
    const bob = await client("bob");
    expect((await bob.allocate()).code).toBe(0);
    // ...but the relay-wide limit of 3 now is reached, for everyone.
    const carol = await client("carol");
    const full = await carol.allocate();
    expect(full.code, full.reason).toBe(508);

    // Deleting an allocation (Refresh lifetime 0) gives its slot back at once.
    expect((await bob.refresh(0)).code).toBe(0);
    expect((await carol.allocate()).code).toBe(0);
    expect((await alice1.refresh(0)).code).toBe(0);
    expect((await (await client("dave")).allocate()).code).toBe(0);
    // alice has one allocation left, but the relay is full again.
    expect((await alice3.allocate()).code).toBe(508);
  });

  it("closes TCP connections beyond --max-connections and accepts again once one ends", async () => {
    const binding = async (c: TurnClientLite) =>
      (await c.request(Method.Binding, () => {}, { auth: false })).code;
    const first = await client("tcp1", 3600, "tcp");
    const second = await client("tcp2", 3600, "tcp");
    expect(await binding(first)).toBe(0);
    expect(await binding(second)).toBe(0);

    const third = await client("tcp3", 3600, "tcp");
    expect(await third.waitClosedByPeer(2000)).toBe(true);
    await expect(binding(third)).rejects.toThrow(/closed/);

    first.close();
    await sleep(100); // the relay sees the close
    const fourth = await client("tcp4", 3600, "tcp");
    expect(await binding(fourth)).toBe(0);
    expect(fourth.closedByPeer).toBe(false);
    expect(await binding(second)).toBe(0);
  });
});

describe("turnpike-relay quota settings from the environment and a config file", () => {
  it("takes TURNPIKE_MAX_ALLOCATIONS over the config file, and the file over the default", async () => {
    const dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-quota-"));
    const range = reservePortRange(20);
    const config = join(dir, "relay.json");
    writeFileSync(config, JSON.stringify({ "max-allocations": 1, maxAllocationsPerUser: 1 }));
    const relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--config", config],
      env: { TURNPIKE_MAX_ALLOCATIONS: "2" },
    });
    const open: TurnClientLite[] = [];
    const allocate = async (user: string, ttl = 3600) => {
      const creds = restCredentials(TOKEN, user, ttl);
      const c = await TurnClientLite.open({
        port: relay.port,
        username: creds.username,
        password: creds.credential,
      });
      open.push(c);
      return (await c.allocate()).code;
    };
    try {
      expect(await allocate("alice")).toBe(0);
      expect(await allocate("alice", 3601)).toBe(486); // per user 1: the file
      expect(await allocate("bob")).toBe(0); // total 2: the environment, not the file's 1
      expect(await allocate("carol")).toBe(508);
    } finally {
      for (const c of open) c.close();
      expect((await relay.stop("SIGINT", 5000)).code).toBe(0);
      range.release();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
