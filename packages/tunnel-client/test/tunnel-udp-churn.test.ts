// A long-running UDP tunnel meets more distinct peers (ip:port) than there are channel numbers
// (RFC 8656 §12: 4096). Idle flows must give their channel back, and once every number is bound
// or cooling down, new peers are served with Send indications instead of crashing the process.
// Real processes on loopback; bounded: 4,300 peers, each wait has a deadline.

import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  echoUdp,
  logCount,
  logTail,
  parseAddress,
  type RelayProcess,
  startRelay,
  startTunnel,
  type TunnelProcess,
  udpEcho,
  udpPeer,
} from "./harness.js";

const TOKEN = "tunnel-churn-secret";
const PEERS = 4300;
const AT_ONCE = 100;

describe("a UDP tunnel serving more distinct peers than there are channel numbers", () => {
  let range: PortRange;
  let relay: RelayProcess;
  let echo: Awaited<ReturnType<typeof udpEcho>>;
  let tunnel: TunnelProcess;

  beforeAll(async () => {
    range = reservePortRange(10);
    const port = await freePort();
    echo = await udpEcho();
    relay = await startRelay({
      ip: "127.0.0.1",
      port,
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--max-channels", "4096"],
    });
    tunnel = await startTunnel(
      [
        "--relay",
        `turn:127.0.0.1:${port}`,
        "--expose",
        `echo=udp://127.0.0.1:${echo.port}`,
        "--allow-peer",
        "127.0.0.1",
        "--udp-flow-idle",
        "0.2",
      ],
      { TURNPIKE_TOKEN: TOKEN },
    );
    await tunnel.waitFor((r) => r[0]?.state === "ready", 15_000, "the tunnel to be ready");
  });

  afterAll(async () => {
    await tunnel?.stop();
    await relay?.stop();
    echo?.close();
    range?.release();
  });

  it("keeps echoing after 4,300 peers, releasing idle flows and falling back to Send indications", async () => {
    const relayed = parseAddress((await tunnel.list())[0]!.relayedAddress!);
    let echoed = 0;
    // Every socket stays open to the end, so the kernel cannot hand a port out twice: 4,300
    // distinct peers. A datagram lost in a burst is sent again (at most 3 tries).
    const all = [];
    const t0 = performance.now();
    for (let start = 0; start < PEERS; start += AT_ONCE) {
      const socks = await Promise.all(
        Array.from({ length: Math.min(AT_ONCE, PEERS - start) }, () => udpPeer("127.0.0.1")),
      );
      all.push(...socks);
      const got = await Promise.all(
        socks.map(async (s) => {
          for (let i = 0; i < 3; i++)
            if ((await echoUdp(s, relayed, 1, { size: 32, waitMs: 1000 })) === 1) return 1;
          return 0;
        }),
      );
      echoed += got.reduce((a: number, b) => a + b, 0);
      expect(tunnel.proc.exited, logTail(tunnel.proc)).toBe(false);
    }
    for (const s of all) s.close();
    const s = (performance.now() - t0) / 1000;
    console.log(`[tunnel-udp-churn] ${PEERS} distinct peers echoed in ${s.toFixed(1)} s`);
    expect(echoed).toBe(PEERS);
    // Every number got bound once and is cooling down: later peers had to go without one.
    expect(logCount(tunnel.proc, "no channel number free"), logTail(tunnel.proc)).toBeGreaterThan(
      0,
    );
    // Idle flows were closed along the way (each held a local socket).
    const row = (await tunnel.list())[0]!;
    expect(row.state).toBe("ready");
    expect(row.openConnections).toBeLessThan(1024);
    // A brand-new peer still gets through.
    const late = await udpPeer("127.0.0.1");
    expect(await echoUdp(late, relayed, 20)).toBe(20);
    late.close();
    expect(tunnel.proc.exited).toBe(false);
  }, 180_000);
});
