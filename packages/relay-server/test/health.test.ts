import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { type HealthServer, startHealthServer } from "../src/health.js";

let server: HealthServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function get(path: string, method = "GET") {
  const a = server!.address();
  const res = await fetch(`http://127.0.0.1:${a.port}${path}`, { method });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get("content-type"),
    body: text ? JSON.parse(text) : undefined,
  };
}

describe("health endpoints", () => {
  it("answers /healthz with 200 and the uptime in seconds", async () => {
    let now = 0;
    server = await startHealthServer(
      { ip: "127.0.0.1", port: 0, family: 4 },
      () => ({ ready: false, draining: false }),
      { clock: () => now },
    );
    now = 12_500;
    const r = await get("/healthz");
    expect(r).toEqual({
      status: 200,
      type: "application/json",
      body: { status: "ok", uptimeSeconds: 12 },
    });
  });

  it("reports /readyz 503 starting, then 200 ready, then 503 draining", async () => {
    const state = { ready: false, draining: false };
    server = await startHealthServer({ ip: "127.0.0.1", port: 0, family: 4 }, () => state);
    expect(await get("/readyz")).toMatchObject({ status: 503, body: { status: "starting" } });
    state.ready = true;
    expect(await get("/readyz")).toMatchObject({ status: 200, body: { status: "ready" } });
    state.draining = true;
    expect(await get("/readyz")).toMatchObject({ status: 503, body: { status: "draining" } });
  });

  it("answers unknown paths with a JSON 404 and other methods with 405", async () => {
    server = await startHealthServer({ ip: "127.0.0.1", port: 0, family: 4 }, () => ({
      ready: true,
      draining: false,
    }));
    expect(await get("/metrics")).toMatchObject({
      status: 404,
      type: "application/json",
      body: { status: "not found" },
    });
    expect((await get("/readyz", "POST")).status).toBe(405);
    expect((await get("/readyz?verbose=1")).status).toBe(200);
  });

  it("rejects with a ConfigError naming --health-listen when the address is already in use", async () => {
    server = await startHealthServer({ ip: "127.0.0.1", port: 0, family: 4 }, () => ({
      ready: true,
      draining: false,
    }));
    const port = server.address().port;
    await expect(
      startHealthServer({ ip: "127.0.0.1", port, family: 4 }, () => ({
        ready: true,
        draining: false,
      })),
    ).rejects.toThrow(
      `--health-listen 127.0.0.1:${port}: address already in use (another relay or program is listening there)`,
    );
  });
});

describe("discovery API GET /v1/allocations", () => {
  const rows = [
    {
      id: "0-1",
      user: "acme-pg",
      pinnedPort: 40007,
      transport: "tcp" as const,
      relayedAddress: "127.0.0.1:40007",
      relayedAddresses: ["127.0.0.1:40007"],
      clientTransport: "tcp" as const,
      clientAddress: "127.0.0.1:53422",
      peers: ["127.0.0.1"],
      createdAt: "2026-11-30T08:00:00.000Z",
      expiresAt: "2026-11-30T08:10:00.000Z",
    },
    {
      id: "1-1",
      user: "globex",
      pinnedPort: null,
      transport: "udp" as const,
      relayedAddress: "127.0.0.1:50001",
      relayedAddresses: ["127.0.0.1:50001"],
      clientTransport: "udp" as const,
      clientAddress: "127.0.0.1:5000",
      peers: [],
      createdAt: "2026-11-30T08:00:00.000Z",
      expiresAt: "2026-11-30T08:10:00.000Z",
    },
  ];

  /** What DELETE asked the relay to end. */
  const ended: unknown[] = [];

  async function start(token: string | undefined) {
    server = await startHealthServer(
      { ip: "127.0.0.1", port: 0, family: 4 },
      () => ({ ready: true, draining: false }),
      {
        discovery: {
          token,
          allocations: () => rows,
          end: (which) => {
            ended.push(which);
            return "id" in which ? (rows.some((r) => r.id === which.id) ? 1 : 0) : 2;
          },
        },
      },
    );
  }

  // node:http rather than fetch: fetch will not send a Host header of the caller's choosing.
  function ask(path: string, headers: Record<string, string> = {}, method = "GET") {
    return new Promise<{ status: number; body: unknown }>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: server!.address().port, path, headers, method },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            text += c;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
        },
      );
      req.on("error", reject);
      req.end();
    });
  }

  it("is off (404) when no admin token is set, while the probes still answer", async () => {
    await start(undefined);
    expect(await ask("/v1/allocations", { authorization: "Bearer x" })).toMatchObject({
      status: 404,
      body: { error: expect.stringContaining("TURNPIKE_ADMIN_TOKEN") },
    });
    expect((await ask("/readyz")).status).toBe(200);
  });

  it("answers 401 without the token or with a wrong one", async () => {
    await start("admin-secret");
    expect((await ask("/v1/allocations")).status).toBe(401);
    expect((await ask("/v1/allocations", { authorization: "Bearer admin-secreT" })).status).toBe(
      401,
    );
    expect((await ask("/v1/allocations", { authorization: "Basic admin-secret" })).status).toBe(
      401,
    );
  });

  it("lists every allocation with the token, or one user's with ?user=", async () => {
    await start("admin-secret");
    const auth = { authorization: "Bearer admin-secret" };
    expect(await ask("/v1/allocations", auth)).toEqual({
      status: 200,
      body: { allocations: rows },
    });
    expect(await ask("/v1/allocations?user=acme-pg", auth)).toEqual({
      status: 200,
      body: { allocations: [rows[0]] },
    });
    expect((await ask("/v1/allocations?user=nobody", auth)).body).toEqual({ allocations: [] });
  });

  it("refuses browser-borne requests (Origin, Sec-Fetch-Site, a non-loopback Host) even with the token", async () => {
    await start("admin-secret");
    const auth = { authorization: "Bearer admin-secret" };
    expect((await ask("/v1/allocations", { ...auth, origin: "https://evil.example" })).status).toBe(
      403,
    );
    expect(
      (await ask("/v1/allocations", { ...auth, "sec-fetch-site": "same-origin" })).status,
    ).toBe(403);
    expect((await ask("/v1/allocations", { ...auth, host: "rebound.example:8080" })).status).toBe(
      421,
    );
    const port = server!.address().port;
    expect((await ask("/v1/allocations", { ...auth, host: `localhost:${port}` })).status).toBe(200);
  });

  it("ends a user's allocations and one by its id with DELETE, and never all of them", async () => {
    await start("admin-secret");
    ended.length = 0;
    const auth = { authorization: "Bearer admin-secret" };
    expect(await ask("/v1/allocations?user=rest:acme-pg", auth, "DELETE")).toEqual({
      status: 200,
      body: { ended: 2 },
    });
    expect(await ask("/v1/allocations/1-1", auth, "DELETE")).toEqual({
      status: 200,
      body: { ended: 1 },
    });
    expect(await ask("/v1/allocations/7-9", auth, "DELETE")).toEqual({
      status: 404,
      body: { error: "no live allocation 7-9" },
    });
    expect(ended).toEqual([{ user: "rest:acme-pg" }, { id: "1-1" }, { id: "7-9" }]);
    // No selector, an empty one: 400, nothing asked of the relay.
    for (const path of ["/v1/allocations", "/v1/allocations?user="]) {
      expect((await ask(path, auth, "DELETE")).status).toBe(400);
    }
    expect(ended).toHaveLength(3);
    // The same guards as GET: the token, and no browser.
    expect((await ask("/v1/allocations?user=globex", {}, "DELETE")).status).toBe(401);
    expect(
      (
        await ask(
          "/v1/allocations?user=globex",
          { ...auth, origin: "https://evil.example" },
          "DELETE",
        )
      ).status,
    ).toBe(403);
    expect(ended).toHaveLength(3);
    expect((await ask("/v1/allocations", auth, "POST")).status).toBe(405);
    expect((await ask("/v1/allocations/1-1", auth)).status).toBe(404);
    expect((await ask("/readyz", {}, "DELETE")).status).toBe(405);
  });
});
