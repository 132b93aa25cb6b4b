// End to end with real processes on loopback: turnpike-relay + the turnpike-tunnel CLI + a UDP
// echo server as the private target; a "platform" socket reaches the target through the
// relayed address. Bounded: 1,000 datagrams, every wait has a deadline.
import { sleep } from "@turnpike/test-support/process";
import { describe, expect, it } from "vitest";
import {
  adminRequest,
  echoUdp,
  exposeArgs,
  httpRequest,
  type ListRow,
  parseAddress,
  TUNNEL_BIN,
  type TunnelFixtureOptions,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-e2e-secret";
const BACKOFF_MAX_S = 2;

const ready = (rows: ListRow[], n = 1) => rows.filter((r) => r.state === "ready").length >= n;

/** A relay, a UDP echo target and a tunnel exposing it, with keep-alives `keepaliveS` apart. */
const udpEchoTunnel = (keepaliveS: number): TunnelFixtureOptions => ({
  token: TOKEN,
  echo: ["udp"],
  tunnel: (fx) => [
    ...exposeArgs(fx.relayUri, { echo: `udp://127.0.0.1:${fx.udp.port}` }),
    "--keepalive",
    String(keepaliveS),
    "--backoff-base",
    "0.1",
    "--backoff-max",
    String(BACKOFF_MAX_S),
  ],
  ready: 1,
});

describe("turnpike-tunnel exposes a UDP service through turnpike-relay", () => {
  const f = useTunnelFixture(udpEchoTunnel(1));

  it("echoes 1,000 datagrams from an allowed peer through the relayed address", async () => {
    const [row] = await f.tunnel.list();
    expect(row).toMatchObject({
      name: "echo",
      protocol: "udp",
      state: "ready",
      target: `udp://127.0.0.1:${f.udp.port}`,
    });
    const relayed = parseAddress(row!.relayedAddress!);
    expect(relayed.ip).toBe("127.0.0.1");
    expect(relayed.port).toBeGreaterThanOrEqual(f.range.min);
    const platform = await udpPeer("127.0.0.1");
    const t0 = performance.now();
    const echoed = await echoUdp(platform, relayed, 1000);
    const ms = performance.now() - t0;
    platform.close();
    console.log(
      `[tunnel-udp] 1000 x 200 B datagrams echoed through relay+tunnel in ${ms.toFixed(0)} ms`,
    );
    expect(echoed).toBe(1000);
    const after = (await f.tunnel.list())[0]!;
    expect(after.bytesIn).toBeGreaterThanOrEqual(200_000);
    expect(after.bytesOut).toBeGreaterThanOrEqual(200_000);
    expect(after.openConnections).toBe(1);
  });

  it("gives a peer that is not allowed nothing", async () => {
    const [row] = await f.tunnel.list();
    const relayed = parseAddress(row!.relayedAddress!);
    const before = row!.bytesIn;
    const stranger = await udpPeer("127.0.0.3");
    const echoed = await echoUdp(stranger, relayed, 20, { batch: 20, waitMs: 1000 });
    stranger.close();
    expect(echoed).toBe(0);
    expect((await f.tunnel.list())[0]!.bytesIn).toBe(before);
  });

  it("comes back within the backoff cap after the relay is killed and restarted", async () => {
    await f.stopRelay();
    await f.tunnel.waitFor(
      (rows) => rows[0]?.state === "backoff",
      10_000,
      "the tunnel to notice the dead relay",
    );
    await f.startRelay();
    const t0 = performance.now();
    const rows = await f.tunnel.waitFor(
      (r) => ready(r),
      (BACKOFF_MAX_S + 3) * 1000,
      "the tunnel to come back",
    );
    const ms = performance.now() - t0;
    console.log(
      `[tunnel-udp] tunnel ready again ${ms.toFixed(0)} ms after the relay restarted (cap ${BACKOFF_MAX_S} s)`,
    );
    expect(ms).toBeLessThan(BACKOFF_MAX_S * 1000 + 2000);
    expect(rows[0]!.reconnects).toBeGreaterThanOrEqual(1);
    const platform = await udpPeer("127.0.0.1");
    const echoed = await echoUdp(platform, parseAddress(rows[0]!.relayedAddress!), 100);
    platform.close();
    expect(echoed).toBe(100);
  });

  it("exposes and removes services through the admin API", async () => {
    const created = await adminRequest(f.tunnel.adminPort, "POST", "/expose", {
      name: "echo2",
      target: `udp://127.0.0.1:${f.udp.port}`,
      allowPeers: ["127.0.0.1"],
    });
    expect(created.status).toBe(201);
    const svc = JSON.parse(created.body) as { id: string; name: string };
    expect(svc.name).toBe("echo2");
    const rows = await f.tunnel.waitFor(
      (r) => r.some((x) => x.id === svc.id && x.state === "ready"),
      10_000,
      "echo2 ready",
    );
    const relayed = parseAddress(rows.find((x) => x.id === svc.id)!.relayedAddress!);
    const platform = await udpPeer("127.0.0.1");
    expect(await echoUdp(platform, relayed, 50)).toBe(50);
    expect((await adminRequest(f.tunnel.adminPort, "DELETE", `/expose/${svc.id}`)).status).toBe(
      204,
    );
    expect((await f.tunnel.list()).some((x) => x.id === svc.id)).toBe(false);
    // The allocation was released: the relayed address no longer reaches the target.
    await sleep(200);
    expect(await echoUdp(platform, relayed, 10, { batch: 10, waitMs: 500 })).toBe(0);
    platform.close();
    expect((await adminRequest(f.tunnel.adminPort, "DELETE", `/expose/${svc.id}`)).status).toBe(
      404,
    );
    const bad = await adminRequest(f.tunnel.adminPort, "POST", "/expose", {
      name: "x",
      target: "tcp://h:1",
      allowPeers: ["10.0.0.0/8"],
    });
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).error).toMatch(/too large/);
    // Cloud metadata targets, whatever the spelling: 403, and nothing exposed.
    for (const target of [
      "tcp://169.254.169.254:80",
      "tcp://[::ffff:169.254.169.254]:80",
      "udp://[fd00:ec2::254]:80",
    ]) {
      const r = await adminRequest(f.tunnel.adminPort, "POST", "/expose", {
        name: "imds",
        target,
        allowPeers: ["127.0.0.1"],
      });
      expect(r.status, target).toBe(403);
      expect(JSON.parse(r.body).error).toMatch(/--allow-metadata-targets/);
    }
    expect((await f.tunnel.list()).some((x) => x.name === "imds")).toBe(false);
  });
  it("refuses what a web page could send: Origin, text/plain, a rebound Host without the token", async () => {
    const port = f.tunnel.adminPort;
    const bearer = `Bearer ${f.tunnel.adminToken}`;
    const body = JSON.stringify({
      name: "sneaky",
      target: `udp://127.0.0.1:${f.udp.port}`,
      allowPeers: ["127.0.0.1"],
    });
    // A form-like cross-site POST needs no CORS preflight with text/plain (refused even if the
    // page had the token).
    const plain = await httpRequest(
      port,
      "POST",
      "/expose",
      { "content-type": "text/plain", authorization: bearer },
      body,
    );
    expect(plain.status).toBe(415);
    const origin = await httpRequest(
      port,
      "POST",
      "/expose",
      { "content-type": "application/json", origin: "https://attacker.example" },
      body,
    );
    expect(origin.status).toBe(403);
    expect(
      (await httpRequest(port, "GET", "/list", { origin: "http://127.0.0.1:1234" })).status,
    ).toBe(403);
    // DNS rebinding: the browser connects to 127.0.0.1 under the attacker's name, without the
    // token, which the TCP listener always needs.
    const rebound = await httpRequest(port, "GET", "/list", { host: `attacker.example:${port}` });
    expect(rebound.status).toBe(401);
    expect((await f.tunnel.list()).some((r) => r.name === "sneaky")).toBe(false);
    // The CLI (no Origin, the token from the environment) still reads the list.
    const { spawnSync } = await import("node:child_process");
    const listed = spawnSync(
      process.execPath,
      [TUNNEL_BIN, "list", "--admin", `http://127.0.0.1:${port}`],
      {
        encoding: "utf8",
        timeout: 10_000,
        env: { PATH: process.env.PATH ?? "", TURNPIKE_ADMIN_TOKEN: f.tunnel.adminToken },
      },
    );
    expect(listed.status, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/\secho\s/);
  });
});

describe("two relay addresses behind one name", () => {
  const f = useTunnelFixture({
    token: TOKEN,
    relayIps: ["127.0.0.1", "127.0.0.2"],
    echo: ["udp"],
    tunnel: (fx) => [
      ...exposeArgs(`turn:relay.test:${fx.relayPort}`, { echo: `udp://127.0.0.1:${fx.udp.port}` }),
      "--resolve",
      "relay.test=127.0.0.1,127.0.0.2",
      "--keepalive",
      "1",
      "--backoff-max",
      "2",
    ],
    adminToken: "admin-secret",
    ready: 0,
  });

  it("holds one allocation per relay address, and losing one relay leaves the other serving", async () => {
    const rows = await f.tunnel.waitFor((r) => ready(r, 2), 15_000, "two ready tunnels");
    expect(rows).toHaveLength(2);
    const byIp = new Map(
      rows.map((r) => [parseAddress(r.relayedAddress!).ip, parseAddress(r.relayedAddress!)]),
    );
    expect([...byIp.keys()].sort()).toEqual(["127.0.0.1", "127.0.0.2"]);
    const platform = await udpPeer("127.0.0.1");
    for (const addr of byIp.values()) expect(await echoUdp(platform, addr, 100)).toBe(100);

    await f.stopRelay(1);
    const after = await f.tunnel.waitFor(
      (r) => r.some((x) => x.relay.includes("127.0.0.2") && x.state !== "ready"),
      10_000,
      "the 127.0.0.2 tunnel to go down",
    );
    const survivor = after.find((x) => x.relay.includes("127.0.0.1"))!;
    expect(survivor.state).toBe("ready");
    expect(await echoUdp(platform, parseAddress(survivor.relayedAddress!), 100)).toBe(100);
    platform.close();
  });

  it("prints the tunnels as a table with `turnpike-tunnel list`", async () => {
    const { spawnSync } = await import("node:child_process");
    const run = (extra: string[]) =>
      spawnSync(
        process.execPath,
        [TUNNEL_BIN, "list", "--admin", `http://127.0.0.1:${f.tunnel.adminPort}`, ...extra],
        {
          encoding: "utf8",
          timeout: 10_000,
          env: { PATH: process.env.PATH ?? "" },
        },
      );
    const ok = run(["--admin-token", "admin-secret"]);
    expect(ok.status).toBe(0);
    const lines = ok.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^ID\s+NAME\s+TARGET\s+RELAY\s+RELAYED ADDRESS\s+STATE/);
    expect(lines).toHaveLength(3);
    expect(lines.filter((l) => /\secho\s/.test(l))).toHaveLength(2);
    const denied = run([]);
    expect(denied.status).toBe(1);
    expect(denied.stderr).toMatch(/401/);
  });

  it("requires the admin token when one is set", async () => {
    expect((await adminRequest(f.tunnel.adminPort, "GET", "/list", undefined, null)).status).toBe(
      401,
    );
    expect(
      (await adminRequest(f.tunnel.adminPort, "GET", "/list", undefined, "wrong")).status,
    ).toBe(401);
    const health = await adminRequest(
      f.tunnel.adminPort,
      "GET",
      "/health",
      undefined,
      "admin-secret",
    );
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ status: "ok", tunnels: 2 });
  });
});

describe("turnpike-tunnel over a relay restarted between two keep-alives (a deploy)", () => {
  const KEEPALIVE_S = 5;
  const f = useTunnelFixture(udpEchoTunnel(KEEPALIVE_S));

  it("sees the allocation gone at the next keep-alive and serves again on a new one", async () => {
    const before = (await f.tunnel.list())[0]!;
    // The tunnel sends nothing while the relay restarts (it is stopped), so no ICMP error
    // and no silence gives the restart away: only what the keep-alive gets back can.
    process.kill(f.tunnel.proc.pid, "SIGSTOP");
    const stoppedAt = performance.now();
    try {
      await f.stopRelay();
      await f.startRelay();
    } finally {
      process.kill(f.tunnel.proc.pid, "SIGCONT");
    }
    const restartMs = performance.now() - stoppedAt;
    // Under twice the keep-alive, or the tunnel would (rightly) call the relay dead instead.
    expect(restartMs).toBeLessThan(2 * KEEPALIVE_S * 1000);
    const t0 = performance.now();
    const rows = await f.tunnel.waitFor(
      (r) => r[0]!.reconnects > before.reconnects && ready(r),
      (KEEPALIVE_S + BACKOFF_MAX_S + 3) * 1000,
      "the tunnel to allocate on the restarted relay",
    );
    const log = `${f.tunnel.proc.stdout}${f.tunnel.proc.stderr}`;
    const down = log.split("\n").filter((l) => l.includes("tunnel down"));
    console.log(
      `[tunnel-udp] relay restarted in ${restartMs.toFixed(0)} ms while the tunnel was idle; ` +
        `ready again ${(performance.now() - t0).toFixed(0)} ms later: ${down.at(-1)}`,
    );
    expect(down.at(-1)).toMatch(/refresh failed: 437/);
    const platform = await udpPeer("127.0.0.1");
    const echoed = await echoUdp(platform, parseAddress(rows[0]!.relayedAddress!), 100);
    platform.close();
    expect(echoed).toBe(100);
  });
});
