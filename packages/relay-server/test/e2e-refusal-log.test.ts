// End to end: why a real turnpike-relay refused a request, in its log at --log-level debug (and
// nowhere on the wire): an authentication failure with its reason and the USERNAME (never the
// password), a peer its policy refused with the option that would allow it, an Allocate past a
// quota; and a flood of refusals is a few lines per reason, not one per request.
import { restCredentials } from "@turnpike/test-support/credentials";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { Method, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-refusal-log-token";

describe("turnpike-relay says why it refused, at debug", () => {
  let range: PortRange;
  let relay: TurnpikeHandle;
  const clients: TurnClientLite[] = [];

  beforeAll(async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      logLevel: "debug",
      // The default policy: loopback peers are refused.
      allowLoopbackPeers: false,
      extraArgs: ["--max-allocations-per-user", "1"],
    });
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  async function client(user: string, password?: string): Promise<TurnClientLite> {
    const creds = restCredentials(TOKEN, user);
    const c = await TurnClientLite.open({
      port: relay.port,
      username: creds.username,
      password: password ?? creds.credential,
    });
    clients.push(c);
    return c;
  }

  /** The log lines containing every one of `parts`, once the relay had a moment to write them. */
  async function lines(...parts: string[]): Promise<string[]> {
    await sleep(300);
    return relay.stderr.split("\n").filter((l) => parts.every((p) => l.includes(p)));
  }

  it("logs a wrong password with its reason and the username, never the password", async () => {
    const c = await client("mallory", "guessed-password-123");
    expect((await c.allocate()).code).toBe(401);
    const [line] = await lines("authentication failed", "reason=bad-integrity");
    expect(line).toMatch(/ DEBUG authentication failed /);
    expect(line).toContain("code=401");
    expect(line).toContain("method=allocate");
    expect(line).toMatch(/client=udp:127\.0\.0\.1:\d+/);
    expect(line).toMatch(/username=\d+:mallory/);
    expect(relay.stderr).not.toContain("guessed-password-123");
  });

  it("logs a permission its peer policy refused with the peer and the option that would allow it", async () => {
    const c = await client("loopback");
    expect((await c.allocate()).code).toBe(0);
    const r = await c.createPermission({ family: 4, address: "127.0.0.1", port: 0 });
    expect(r.code).toBe(403);
    const [line] = await lines("peer refused by the relay's peer policy");
    expect(line).toContain("peer=127.0.0.1");
    expect(line).toContain("policy=loopback");
    expect(line).toContain("--allow-loopback-peers");
    expect(line).toContain("--allow-peer 127.0.0.1");
    expect(line).toMatch(/username=\d+:loopback/);
  });

  it("logs an Allocate past the user's quota", async () => {
    const first = await client("quota");
    expect((await first.allocate()).code).toBe(0);
    const second = await client("quota");
    expect((await second.allocate()).code).toBe(486);
    const [line] = await lines("request refused", "reason=user-quota");
    expect(line).toContain("code=486");
    expect(line).toMatch(/username=\d+:quota/);
  });

  it("logs a flood of refusals as a few lines per reason", async () => {
    const c = await client("flood");
    expect((await c.allocate()).code).toBe(0);
    const before = (await lines("reason=no-allocation")).length;
    const strangers = await client("stranger");
    for (let i = 0; i < 200; i++) {
      // Refresh without an allocation: 437, each one refused.
      expect((await strangers.request(Method.Refresh)).code).toBe(437);
    }
    const after = (await lines("reason=no-allocation")).length;
    expect(after - before).toBeGreaterThan(0);
    expect(after - before).toBeLessThanOrEqual(10 * Number(process.env.TEST_WORKERS ?? "1"));
  });
});
