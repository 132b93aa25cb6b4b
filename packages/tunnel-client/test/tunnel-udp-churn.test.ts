// A long-running UDP tunnel meets more distinct peers (ip:port) than there are channel numbers
// (RFC 8656 §12: 4096). Idle flows must give their channel back, and once every number is bound
// or cooling down, new peers are served with Send indications instead of crashing the process.
// Real processes on loopback; bounded: 4,300 peers, each wait has a deadline.
import { describe, expect, it } from "vitest";
import {
  echoUdp,
  exposeArgs,
  logCount,
  logTail,
  parseAddress,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-churn-secret";
const PEERS = 4300;
const AT_ONCE = 100;

describe("a UDP tunnel serving more distinct peers than there are channel numbers", () => {
  const f = useTunnelFixture({
    token: TOKEN,
    relayPorts: 10,
    relayArgs: () => ["--max-channels", "4096"],
    echo: ["udp"],
    tunnel: (fx) => [
      ...exposeArgs(fx.relayUri, { echo: `udp://127.0.0.1:${fx.udp.port}` }),
      "--udp-flow-idle",
      "0.2",
    ],
    ready: 1,
  });

  it("keeps echoing after 4,300 peers, releasing idle flows and falling back to Send indications", async () => {
    const tunnel = f.tunnel;
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
