import { spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { decodeTunnelKey } from "@turnpike/runtime-kit";
import { describe, expect, it } from "vitest";
import type { AllocationRow } from "../src/discovery.js";
import { startHealthServer } from "../src/health.js";
import { runCli } from "../src/main.js";
import { harness, RUN_ARGS, until } from "./cli-harness.js";

describe("turnpike-relay credentials", () => {
  it("prints TURN REST API credentials whose password is HMAC-SHA1(token, username)", async () => {
    const h = harness(["credentials", "--user", "alice", "--ttl", "3600"], {
      TURNPIKE_TOKEN: "shared-secret",
      TURNPIKE_LISTEN: "127.0.0.1:3478",
    });
    expect(await runCli(h.io)).toBe(0);
    const creds = JSON.parse(h.out.join(""));
    expect(Object.keys(creds)).toEqual(["username", "password", "ttl", "uris", "key"]);
    expect(creds.username).toBe("1800003600:alice");
    expect(creds.password).toBe(
      createHmac("sha1", "shared-secret").update("1800003600:alice").digest("base64"),
    );
    expect(creds.ttl).toBe(3600);
    expect(creds.uris).toEqual([
      "turn:127.0.0.1:3478?transport=udp",
      "turn:127.0.0.1:3478?transport=tcp",
    ]);
  });
});

describe("turnpike-relay credentials without an address for the URIs", () => {
  it("prints the credentials without those URIs and says on stderr what to set", async () => {
    const h = harness(["credentials", "--user", "alice"], { TURNPIKE_TOKEN: "shared-secret" });
    expect(await runCli(h.io)).toBe(0);
    expect(JSON.parse(h.out.join("")).uris).toEqual([]);
    expect(h.err).toHaveLength(1);
    expect(h.err[0]).toMatch(
      /^turnpike-relay credentials: no URI for 0\.0\.0\.0:3478: .* set the relay's --public-ip4\/--public-ip6 or --relay-ip /,
    );
  });
});

describe("turnpike-relay credentials --port (pinned)", () => {
  it("prints a username that pins the port, signed with the pinned secret derived from the token, and a key holding both", async () => {
    const h = harness(["credentials", "--user", "acme-pg", "--port", "40007", "--ttl", "60"], {
      TURNPIKE_TOKEN: "shared-secret",
      TURNPIKE_LISTEN: "127.0.0.1:3478",
      TURNPIKE_PINNED_PORTS: "40000-40099",
    });
    expect(await runCli(h.io)).toBe(0);
    const creds = JSON.parse(h.out.join(""));
    expect(creds.username).toBe("1800000060:acme-pg;port=40007");
    // relay-core's pinned-username.ts: a key of its own, so no generic REST minting service
    // holding the token signs a pin.
    const pinnedSecret = createHmac("sha256", "shared-secret")
      .update("turnpike pinned-port credentials v1")
      .digest("hex");
    expect(creds.password).toBe(
      createHmac("sha1", pinnedSecret).update(creds.username).digest("base64"),
    );
    expect(decodeTunnelKey(creds.key)).toEqual({
      username: creds.username,
      password: creds.password,
    });
  });

  it("refuses a port outside the relay's --pinned-ports, a port without a user, and a user with the pin marker", async () => {
    const env = { TURNPIKE_TOKEN: "k", TURNPIKE_PINNED_PORTS: "40000-40099" };
    let h = harness(["credentials", "--user", "acme", "--port", "50000"], env);
    expect(await runCli(h.io)).toBe(2);
    expect(h.err).toEqual([
      `turnpike-relay: --port must be a port in the relay's --pinned-ports 40000-40099, got "50000"`,
    ]);
    h = harness(["credentials", "--port", "40001"], env);
    expect(await runCli(h.io)).toBe(2);
    expect(h.err.join("")).toContain("--port needs --user");
    h = harness(["credentials", "--user", "acme;port=40001"], env);
    expect(await runCli(h.io)).toBe(2);
    expect(h.err.join("")).toContain("pin a port with --port");
  });
});

describe("turnpike-relay allocations", () => {
  const row: AllocationRow = {
    id: "0-3",
    user: "acme-pg",
    pinnedPort: 40007,
    transport: "tcp",
    relayedAddress: "198.51.100.7:40007",
    relayedAddresses: ["198.51.100.7:40007"],
    clientTransport: "tcp",
    clientAddress: "203.0.113.5:53422",
    peers: ["203.0.113.10"],
    createdAt: "2026-11-30T08:00:00.000Z",
    expiresAt: "2026-11-30T08:10:00.000Z",
  };

  it("prints the discovery API's allocations as a table, filtered by --user", async () => {
    const health = await startHealthServer(
      { ip: "127.0.0.1", port: 0, family: 4 },
      () => ({ ready: true, draining: false }),
      {
        discovery: {
          token: "admin-secret",
          allocations: () => [row, { ...row, user: "globex", pinnedPort: null }],
        },
      },
    );
    try {
      const url = `http://127.0.0.1:${health.address().port}`;
      const h = harness(["allocations", "--url", url, "--user", "acme-pg"], {
        TURNPIKE_ADMIN_TOKEN: "admin-secret",
      });
      expect(await runCli(h.io)).toBe(0);
      const lines = h.out.join("").trimEnd().split("\n");
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^ID +USER +PIN +TRANSPORT +RELAYED ADDRESS +CLIENT +PEERS/);
      expect(lines[1]).toMatch(
        /^0-3 +acme-pg +40007 +tcp +198\.51\.100\.7:40007 +tcp:203\.0\.113\.5:53422 +203\.0\.113\.10 /,
      );
      const json = harness(["allocations", "--url", url, "--json"], {
        TURNPIKE_ADMIN_TOKEN: "admin-secret",
      });
      expect(await runCli(json.io)).toBe(0);
      expect(JSON.parse(json.out.join("")).allocations).toHaveLength(2);
      const wrong = harness(["allocations", "--url", url], { TURNPIKE_ADMIN_TOKEN: "nope" });
      expect(await runCli(wrong.io)).toBe(1);
      expect(wrong.err).toEqual([
        `turnpike-relay allocations: ${url}/v1/allocations: HTTP 401: unauthorized`,
      ]);
    } finally {
      await health.close();
    }
  });

  it("ends a user's allocations or one by id with --end-user and --end, and says how many", async () => {
    const asked: unknown[] = [];
    const health = await startHealthServer(
      { ip: "127.0.0.1", port: 0, family: 4 },
      () => ({ ready: true, draining: false }),
      {
        discovery: {
          token: "admin-secret",
          allocations: () => [row],
          end: (which) => {
            asked.push(which);
            return "user" in which ? 3 : 0;
          },
        },
      },
    );
    try {
      const url = `http://127.0.0.1:${health.address().port}`;
      const env = { TURNPIKE_ADMIN_TOKEN: "admin-secret" };
      const user = harness(["allocations", "--url", url, "--end-user", "rest:acme-pg"], env);
      expect(await runCli(user.io)).toBe(0);
      expect(user.out.join("")).toBe("ended 3 allocations\n");
      const gone = harness(["allocations", "--url", url, "--end", "1-9"], env);
      expect(await runCli(gone.io)).toBe(1);
      expect(gone.err).toEqual([
        `turnpike-relay allocations: ${url}/v1/allocations/1-9: HTTP 404: no live allocation 1-9`,
      ]);
      expect(asked).toEqual([{ user: "rest:acme-pg" }, { id: "1-9" }]);
      const bad = harness(["allocations", "--url", url, "--end", "acme"], env);
      expect(await runCli(bad.io)).toBe(2);
      expect(bad.err).toEqual([
        'turnpike-relay: --end must be an allocation id as the ID column shows it, like 0-17, got "acme"',
      ]);
      const both = harness(["allocations", "--url", url, "--end", "0-1", "--user", "x"], env);
      expect(await runCli(both.io)).toBe(2);
      expect(asked).toHaveLength(2);
    } finally {
      await health.close();
    }
  });

  it("needs the admin token", async () => {
    const h = harness(["allocations"], {});
    expect(await runCli(h.io)).toBe(2);
    expect(h.err.join("")).toContain("TURNPIKE_ADMIN_TOKEN");
  });
});

describe("turnpike-relay process lifecycle", () => {
  it("exits 2 with one line naming the option on a bad value", async () => {
    const h = harness(["--min-port", "70000"], {});
    expect(await runCli(h.io)).toBe(2);
    expect(h.err).toEqual(['turnpike-relay: --min-port must be 1024..65535, got "70000"']);
  });

  it("logs listening, reports ready on /readyz, and drains on SIGTERM before exiting 0", async () => {
    const h = harness([...RUN_ARGS, "--drain-timeout", "7"], { TURNPIKE_TOKEN: "t" });
    const done = runCli(h.io);
    await until(() => h.running() !== undefined);
    const lines = h.err.map((l) => JSON.parse(l));
    expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(["starting", "listening"]));
    expect(lines.find((l) => l.msg === "listening")).toMatchObject({
      udp: "127.0.0.1:3478",
      tcp: "127.0.0.1:3478",
    });
    expect(h.err.join("\n")).not.toContain('"t"');
    expect(h.started.deps?.metrics.telemetry).toBeDefined();
    const port = h.running()!.health!.address().port;
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(200);

    h.events.emit("SIGTERM");
    await until(() => h.relay.calls.length > 0);
    expect(h.relay.calls).toEqual(["drain 7000"]);
    const during = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(during.status).toBe(503);
    expect(await during.json()).toMatchObject({ status: "draining" });

    h.relay.releaseDrain();
    expect(await done).toBe(0);
    expect(h.relay.calls).toEqual(["drain 7000", "close"]);
    expect(h.exits).toEqual([]);
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    expect(h.events.listenerCount("SIGTERM")).toBe(0);
  });

  it("closes at once on SIGINT and exits 0", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" });
    const done = runCli(h.io);
    await until(() => h.running() !== undefined);
    h.events.emit("SIGINT");
    expect(await done).toBe(0);
    expect(h.relay.calls).toEqual(["close"]);
  });

  it("exits at once on a second SIGTERM while draining", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" });
    void runCli(h.io);
    await until(() => h.running() !== undefined);
    h.events.emit("SIGTERM");
    await until(() => h.relay.calls.length > 0);
    h.events.emit("SIGTERM");
    expect(h.exits).toEqual([1]);
    h.relay.releaseDrain();
  });

  it("closes at once, cleanly, on SIGINT while draining (Ctrl-C under pnpm exec sends both)", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" });
    const done = runCli(h.io);
    await until(() => h.running() !== undefined);
    h.events.emit("SIGTERM");
    await until(() => h.relay.calls.length > 0);
    h.events.emit("SIGINT");
    // The drain never finished by itself (the fake holds it): SIGINT did not wait for it.
    expect(await done).toBe(0);
    expect(h.exits).toEqual([]);
    expect(h.relay.calls).toEqual(["drain 30000", "close"]);
  });

  it("finishes a clean close when a launcher repeats the signal (Ctrl-C under pnpm)", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" });
    const done = runCli(h.io);
    await until(() => h.running() !== undefined);
    h.events.emit("SIGINT");
    h.events.emit("SIGINT");
    h.events.emit("SIGTERM");
    expect(await done).toBe(0);
    expect(h.exits).toEqual([]);
    expect(h.relay.calls).toEqual(["close"]);
  });

  it("logs an uncaught exception and exits non-zero", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" });
    void runCli(h.io);
    await until(() => h.running() !== undefined);
    h.events.emit("uncaughtException", new Error("kaboom"));
    expect(h.exits).toEqual([1]);
    const line = JSON.parse(h.err.at(-1) ?? "{}");
    expect(line).toMatchObject({
      level: "error",
      msg: "uncaught exception",
      err: { message: "kaboom" },
    });
    h.events.emit("SIGINT");
  });

  it("exits 1 and frees the health port when the relay fails to start", async () => {
    const h = harness(RUN_ARGS, { TURNPIKE_TOKEN: "t" }, async () => {
      throw new Error("EADDRINUSE 127.0.0.1:3478");
    });
    expect(await runCli(h.io)).toBe(1);
    const line = JSON.parse(h.err.at(-1) ?? "{}");
    expect(line).toMatchObject({
      level: "error",
      msg: "failed to start",
      err: { message: "EADDRINUSE 127.0.0.1:3478" },
    });
    expect(h.events.listenerCount("uncaughtException")).toBe(0);
  });
});

// The committed launcher runs dist/cli.js; `pnpm test` builds first (tsc -b).
const BIN = fileURLToPath(new URL("../bin/turnpike-relay.js", import.meta.url));
const BUILT = existsSync(fileURLToPath(new URL("../dist/cli.js", import.meta.url)));

describe.skipIf(!BUILT)("the turnpike-relay executable", () => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnSync(process.execPath, [BIN, ...args], {
      env: { PATH: process.env.PATH, ...env },
      encoding: "utf8",
      timeout: 20_000,
    });

  it("exits 2 with one stderr line on a bad flag", () => {
    const r = run(["--max-port", "0"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toBe('turnpike-relay: --max-port must be 1024..65535, got "0"\n');
  });

  it("mints credentials from TURNPIKE_TOKEN", () => {
    const r = run(["credentials", "--ttl", "60"], {
      TURNPIKE_TOKEN: "k",
      TURNPIKE_LISTEN: "127.0.0.1:3478",
    });
    expect(r.status).toBe(0);
    const creds = JSON.parse(r.stdout);
    expect(creds.password).toBe(createHmac("sha1", "k").update(creds.username).digest("base64"));
    expect(Number(creds.username) - Math.floor(Date.now() / 1000)).toBeGreaterThan(50);
  });
});
