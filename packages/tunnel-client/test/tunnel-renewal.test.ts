// Credential renewal with real processes on loopback: short-lived TURN REST credentials (5 s)
// are renewed in place (setCredentials + Refresh) so the relayed address stays the same; a relay
// that answers 441 to the renewed USERNAME (coturn, or turnpike-relay when the <user> part
// changes) gets a fresh allocation before the old credentials expire, and traffic flows after.
// Also --credentials-url: a local HTTP server mints the credentials. Every wait is bounded.
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { mintRestCredentials } from "@turnpike/relay-core";
import { type CoturnHandle, startCoturn } from "@turnpike/test-support/coturn";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allReady,
  echoUdp,
  exposeEchoArgs,
  logCount,
  logTail,
  parseAddress,
  type RelayProcess,
  sha256,
  startRelay,
  startTunnel,
  type TunnelProcess,
  tcpEcho,
  tcpRoundTrip,
  udpEcho,
  udpPeer,
  waitUntil,
} from "./harness.js";

const TOKEN = "tunnel-renewal-secret";
const RENEWED = "credentials renewed in place";
const REFUSED = "refused renewed credentials";
const REALLOCATED = "credentials about to expire: re-allocating";

/** Both services answer through their relayed addresses: 50 datagrams and 256 KiB over TCP. */
async function trafficFlows(tunnel: TunnelProcess): Promise<void> {
  const rows = await tunnel.list();
  const u = rows.find((r) => r.protocol === "udp")!;
  const t = rows.find((r) => r.protocol === "tcp")!;
  const platform = await udpPeer("127.0.0.1");
  try {
    expect(await echoUdp(platform, parseAddress(u.relayedAddress!), 50)).toBe(50);
  } finally {
    platform.close();
  }
  const data = randomBytes(256 * 1024);
  // 32 KiB in flight: coturn resets a TCP relay flooded without backpressure (tunnel-coturn).
  const back = await tcpRoundTrip(parseAddress(t.relayedAddress!), data, 15_000, 32 * 1024);
  expect(sha256(back)).toBe(sha256(data));
}

function tunnelArgs(relay: string, udpPort: number, tcpPort: number): string[] {
  return [...exposeEchoArgs(relay, udpPort, tcpPort), "--keepalive", "2"];
}

describe("credential renewal against turnpike-relay", () => {
  let range: PortRange;
  let relay: RelayProcess;
  let udp: Awaited<ReturnType<typeof udpEcho>>;
  let tcp: Awaited<ReturnType<typeof tcpEcho>>;
  let tunnel: TunnelProcess;

  beforeAll(async () => {
    range = reservePortRange(100);
    const port = await freePort();
    udp = await udpEcho();
    tcp = await tcpEcho();
    relay = await startRelay({
      ip: "127.0.0.1",
      port,
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
    });
    tunnel = await startTunnel(
      [
        ...tunnelArgs(`turn:127.0.0.1:${port}`, udp.port, tcp.port),
        "--name",
        "renewal-test",
        "--credential-ttl",
        "5",
      ],
      { TURNPIKE_TOKEN: TOKEN },
    );
    await tunnel.waitFor((r) => allReady(r, 2), 15_000, "both tunnels ready");
  });

  afterAll(async () => {
    await tunnel?.stop();
    await relay?.stop();
    udp?.close();
    await tcp?.close();
    range?.release();
  });

  it("keeps the relayed addresses across several 5 s credential renewals while traffic flows", async () => {
    const before = await tunnel.list();
    const t0 = performance.now();
    // Three renewals per tunnel (both tunnels share the credential source) = the first
    // credentials are long expired by the end; traffic all along.
    while (logCount(tunnel.proc, RENEWED) < 6) {
      if (performance.now() - t0 > 25_000)
        throw new Error(`too few renewals:\n${tunnel.proc.stderr}`);
      await trafficFlows(tunnel);
      await sleep(500);
    }
    const s = (performance.now() - t0) / 1000;
    const after = await tunnel.list();
    for (const row of after) {
      const was = before.find((b) => b.name === row.name)!;
      expect(row.state).toBe("ready");
      expect(row.relayedAddress).toBe(was.relayedAddress);
      expect(row.reconnects).toBe(0);
    }
    expect(logCount(tunnel.proc, REALLOCATED)).toBe(0);
    // New TCP connections bind (RFC 6062 ConnectionBind) with the renewed credentials: the
    // relay refuses expired ones, so this passes only if the renewal took.
    await trafficFlows(tunnel);
    console.log(
      `[tunnel-renewal] ${logCount(tunnel.proc, RENEWED)} in-place renewals (ttl 5 s) in ${s.toFixed(1)} s, relayed addresses unchanged`,
    );
  });
});

describe("--credentials-url against turnpike-relay", () => {
  let range: PortRange;
  let relay: RelayProcess;
  let udp: Awaited<ReturnType<typeof udpEcho>>;
  let tcp: Awaited<ReturnType<typeof tcpEcho>>;
  let tunnel: TunnelProcess;
  let server: Server;
  let fetches = 0;
  let user = "url-user";

  beforeAll(async () => {
    range = reservePortRange(100);
    const port = await freePort();
    udp = await udpEcho();
    tcp = await tcpEcho();
    relay = await startRelay({
      ip: "127.0.0.1",
      port,
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
    });
    // The platform's credential endpoint: TURN REST JSON minted with the relay's token.
    server = createServer((req, res) => {
      if (req.url !== "/turn-credentials") {
        res.writeHead(404).end();
        return;
      }
      fetches++;
      const c = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 5, user);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ...c, uris: [`turn:127.0.0.1:${port}`] }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const httpPort = (server.address() as { port: number }).port;
    tunnel = await startTunnel(
      [
        ...tunnelArgs(`turn:127.0.0.1:${port}`, udp.port, tcp.port),
        "--credentials-url",
        `http://127.0.0.1:${httpPort}/turn-credentials`,
      ],
      {},
    );
    await tunnel.waitFor((r) => allReady(r, 2), 15_000, "both tunnels ready");
  });

  afterAll(async () => {
    await tunnel?.stop();
    await relay?.stop();
    await new Promise((r) => server?.close(r));
    udp?.close();
    await tcp?.close();
    range?.release();
  });

  it("fetches credentials from the URL and renews them before the ttl runs out", async () => {
    const before = await tunnel.list();
    const fetched = fetches;
    expect(fetched).toBeGreaterThanOrEqual(1);
    const t0 = performance.now();
    await waitUntil(() => logCount(tunnel.proc, RENEWED) >= 4, 15_000, "two renewals per tunnel");
    const s = (performance.now() - t0) / 1000;
    // One fetch serves every tunnel (cached until 80% of the ttl).
    expect(fetches - fetched).toBeGreaterThanOrEqual(2);
    expect(fetches - fetched).toBeLessThanOrEqual(4);
    const after = await tunnel.list();
    for (const row of after) {
      expect(row.relayedAddress).toBe(before.find((b) => b.name === row.name)!.relayedAddress);
      expect(row.state).toBe("ready");
    }
    await trafficFlows(tunnel);
    console.log(
      `[tunnel-renewal] --credentials-url: ${fetches - fetched} fetches, ${logCount(tunnel.proc, RENEWED)} in-place renewals in ${s.toFixed(1)} s`,
    );
  });

  it("re-allocates when the relay refuses the renewed username (441: another <user> part)", async () => {
    // turnpike-relay ties an allocation to the REST <user>: credentials for another user are
    // answered with 441, so the tunnel must fall back to a fresh allocation before expiry.
    user = "another-user";
    const t0 = performance.now();
    await waitUntil(
      () => logCount(tunnel.proc, REFUSED) >= 2 && logCount(tunnel.proc, REALLOCATED) >= 2,
      15_000,
      "the 441 fallback on both tunnels",
      () => logTail(tunnel.proc),
    );
    const rows = await tunnel.waitFor((r) => allReady(r, 2), 10_000, "both tunnels ready again");
    const ms = performance.now() - t0;
    expect(rows.every((r) => r.reconnects === 0)).toBe(true);
    await trafficFlows(tunnel);
    console.log(
      `[tunnel-renewal] 441 fallback: re-allocated and ready ${ms.toFixed(0)} ms after the user part changed`,
    );
  });
});

const skipCoturn = skipUnlessTools("turnserver");

describe.skipIf(skipCoturn)("credential renewal against coturn (441 fallback)", () => {
  let range: PortRange;
  let coturn: CoturnHandle;
  let udp: Awaited<ReturnType<typeof udpEcho>>;
  let tcp: Awaited<ReturnType<typeof tcpEcho>>;
  let tunnel: TunnelProcess;

  beforeAll(async () => {
    requireTools("turnserver");
    range = reservePortRange(100);
    const port = await freePort();
    coturn = await startCoturn({
      port,
      mode: "rest",
      secret: TOKEN,
      minPort: range.min,
      maxPort: range.max,
    });
    udp = await udpEcho();
    tcp = await tcpEcho();
    tunnel = await startTunnel(
      [
        ...tunnelArgs(`turn:127.0.0.1:${port}`, udp.port, tcp.port),
        "--name",
        "coturn-renewal",
        "--credential-ttl",
        "8",
      ],
      { TURNPIKE_TOKEN: TOKEN },
    );
    await tunnel.waitFor((r) => allReady(r, 2), 20_000, "both tunnels ready on coturn");
  });

  afterAll(async () => {
    await tunnel?.stop();
    await coturn?.stop();
    udp?.close();
    await tcp?.close();
    range?.release();
  });

  it("re-allocates before the credentials expire when coturn insists on the creating username", async () => {
    await trafficFlows(tunnel);
    const t0 = performance.now();
    await waitUntil(
      () => logCount(tunnel.proc, REFUSED) >= 2 && logCount(tunnel.proc, REALLOCATED) >= 2,
      20_000,
      "the 441 fallback on both tunnels",
      () => logTail(tunnel.proc),
    );
    const rows = await tunnel.waitFor((r) => allReady(r, 2), 10_000, "both tunnels ready again");
    const s = (performance.now() - t0) / 1000;
    // Re-allocated on purpose, not lost: no reconnect, and the services answer.
    expect(rows.every((r) => r.reconnects === 0)).toBe(true);
    await trafficFlows(tunnel);
    console.log(
      `[tunnel-renewal] coturn: 441 to renewed credentials, re-allocated within ${s.toFixed(1)} s; traffic flows`,
    );
  });
});
