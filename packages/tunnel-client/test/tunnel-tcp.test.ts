// End to end over TCP (RFC 6062): turnpike-relay + the turnpike-tunnel CLI + a TCP echo server
// as the private target; a plain TCP client ("the platform") connects to the relayed address.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, type PortRange, reservePortRange } from "../../../test-support/ports.js";
import {
  parseAddress,
  type RelayProcess,
  sha256,
  startRelay,
  startTunnel,
  type TunnelProcess,
  tcpConnectOutcome,
  tcpEcho,
  tcpRoundTrip,
} from "./harness.js";

const TOKEN = "tunnel-tcp-secret";
describe("turnpike-tunnel exposes a TCP service through turnpike-relay (RFC 6062)", () => {
  let range: PortRange;
  let relay: RelayProcess;
  let echo: Awaited<ReturnType<typeof tcpEcho>>;
  let closedPort: number;
  let tunnel: TunnelProcess;

  beforeAll(async () => {
    range = reservePortRange(100);
    const port = await freePort();
    closedPort = await freePort(); // nothing listens here: a target that refuses
    echo = await tcpEcho();
    relay = await startRelay({
      ip: "127.0.0.1",
      port,
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
    });
    tunnel = await startTunnel(
      [
        "--relay",
        `turn:127.0.0.1:${port}?transport=tcp`,
        "--expose",
        `echo=tcp://127.0.0.1:${echo.port}`,
        "--expose",
        `refusing=tcp://127.0.0.1:${closedPort}`,
        "--allow-peer",
        "127.0.0.1",
      ],
      { TURNPIKE_TOKEN: TOKEN },
    );
    await tunnel.waitFor(
      (rows) => rows.filter((r) => r.state === "ready").length === 2,
      15_000,
      "both TCP tunnels ready",
    );
  });

  afterAll(async () => {
    await tunnel?.stop();
    await relay?.stop();
    await echo?.close();
    range?.release();
  });

  it("echoes 10 MB from a plain TCP client with a matching SHA-256", async () => {
    const row = (await tunnel.list()).find((r) => r.name === "echo")!;
    const data = randomBytes(10 * 1024 * 1024);
    const t0 = performance.now();
    const back = await tcpRoundTrip(parseAddress(row.relayedAddress!), data);
    const s = (performance.now() - t0) / 1000;
    console.log(
      `[tunnel-tcp] 10 MiB TCP echo through turnpike-relay + tunnel in ${s.toFixed(2)} s`,
    );
    expect(back.length).toBe(data.length);
    expect(sha256(back)).toBe(sha256(data));
    const after = (await tunnel.list()).find((r) => r.name === "echo")!;
    expect(after.bytesIn).toBe(data.length);
    expect(after.bytesOut).toBe(data.length);
  });

  it("closes the peer's connection cleanly when the target refuses", async () => {
    const row = (await tunnel.list()).find((r) => r.name === "refusing")!;
    expect(await tcpConnectOutcome(parseAddress(row.relayedAddress!))).toBe("closed");
  });
});
