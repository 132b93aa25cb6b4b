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

  it("rejects when the address is already in use", async () => {
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
    ).rejects.toThrow(/EADDRINUSE/);
  });
});
