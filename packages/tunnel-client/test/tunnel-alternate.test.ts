// End to end: a relay that drains (SIGTERM, a rolling upgrade) answers new Allocates with 300
// Try Alternate and --alternate-server (RFC 8489 §10); a tunnel that starts then allocates on
// the alternate relay at once and serves there, and says so once.
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { httpGet } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  echoUdp,
  exposeArgs,
  parseAddress,
  type RelayProcess,
  startRelay,
  startTunnel,
  type TunnelProcess,
  udpEcho,
  udpPeer,
} from "./harness.js";

const TOKEN = "tunnel-alternate-secret";

describe("turnpike-tunnel and a draining relay with --alternate-server", () => {
  let range: PortRange;
  let draining: RelayProcess;
  let alternate: RelayProcess;
  let holder: TurnClientLite | undefined;
  let echo: Awaited<ReturnType<typeof udpEcho>>;
  let tunnel: TunnelProcess | undefined;

  beforeAll(async () => {
    range = reservePortRange(40);
    echo = await udpEcho();
    alternate = await startRelay({
      ip: "127.0.0.1",
      port: await freePort(),
      minPort: range.min + 20,
      maxPort: range.max,
      token: TOKEN,
    });
    draining = await startRelay({
      ip: "127.0.0.1",
      port: await freePort(),
      minPort: range.min,
      maxPort: range.min + 19,
      token: TOKEN,
      extraArgs: ["--alternate-server", `127.0.0.1:${alternate.port}`, "--drain-timeout", "120"],
    });
    // A live allocation keeps the drain going (without one the relay would exit at once).
    const creds = restCredentials(TOKEN, "someone");
    holder = await TurnClientLite.open({
      port: draining.port,
      username: creds.username,
      password: creds.credential,
    });
    expect((await holder.allocate()).code).toBe(0);
    draining.proc.child.kill("SIGTERM");
    for (let i = 0; i < 50; i++) {
      const r = await httpGet(draining.healthPort, "/readyz", 500).catch(() => undefined);
      if (r?.status === 503) break;
      await sleep(100);
    }
  });
  afterAll(async () => {
    await tunnel?.stop();
    holder?.close();
    await draining?.stop();
    await alternate?.stop();
    echo?.close();
    range?.release();
  });

  it("allocates on the alternate relay at once and serves there", async () => {
    expect((await httpGet(draining.healthPort, "/readyz", 500)).status).toBe(503);
    const t0 = performance.now();
    tunnel = await startTunnel(
      exposeArgs(`turn:127.0.0.1:${draining.port}`, { echo: `udp://127.0.0.1:${echo.port}` }),
      { TURNPIKE_TOKEN: TOKEN },
    );
    const [row] = await tunnel.waitFor(
      (rows) => rows[0]?.state === "ready",
      15_000,
      "the tunnel ready on the alternate relay",
    );
    const ms = performance.now() - t0;
    expect(row!.relay).toBe(`turn:127.0.0.1:${alternate.port}?transport=udp`);
    const relayed = parseAddress(row!.relayedAddress!);
    expect(relayed.port).toBeGreaterThanOrEqual(range.min + 20);
    expect(row!.reconnects).toBe(0);
    const platform = await udpPeer("127.0.0.1");
    expect(await echoUdp(platform, relayed, 20)).toBe(20);
    platform.close();
    const said = tunnel.proc.stderr
      .split("\n")
      .filter((l) => l.includes("allocating on its alternate server"));
    expect(said).toHaveLength(1);
    expect(said[0]).toContain(`from=127.0.0.1:${draining.port}`);
    expect(said[0]).toContain(`to=127.0.0.1:${alternate.port}`);
    console.log(`[tunnel-alternate] ready on the alternate relay ${ms.toFixed(0)} ms after start`);
  });
});
