// Credential renewal with real processes on loopback: short-lived TURN REST credentials (5 s)
// are renewed in place (setCredentials + Refresh) so the relayed address stays the same; a relay
// that answers 441 to the renewed USERNAME (coturn, or turnpike-relay when the <user> part
// changes) gets a fresh allocation before the old credentials expire, and traffic flows after.
// Also --credentials-url: a local HTTP server mints the credentials. Every wait is bounded.
import { randomBytes } from "node:crypto";
import { createServer, type Server } from "node:http";
import { mintRestCredentials } from "@turnpike/relay-core";
import { sleep } from "@turnpike/test-support/process";
import { skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allReady,
  echoUdp,
  exposeEchoArgs,
  logCount,
  logTail,
  parseAddress,
  sha256,
  type TunnelProcess,
  tcpRoundTrip,
  udpPeer,
  useTunnelFixture,
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

describe("credential renewal against turnpike-relay", () => {
  const f = useTunnelFixture({
    token: TOKEN,
    tunnelArgs: ["--keepalive", "2", "--name", "renewal-test", "--credential-ttl", "5"],
  });

  it("keeps the relayed addresses across several 5 s credential renewals while traffic flows", async () => {
    const tunnel = f.tunnel;
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
  let server: Server;
  let fetches = 0;
  let user = "url-user";

  beforeAll(async () => {
    // The platform's credential endpoint: TURN REST JSON minted with the relay's token.
    server = createServer((req, res) => {
      if (req.url !== "/turn-credentials") {
        res.writeHead(404).end();
        return;
      }
      fetches++;
      const c = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 5, user);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ ...c, uris: [f.relayUri] }));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  });
  afterAll(async () => {
    await new Promise((r) => server?.close(r));
  });
  const f = useTunnelFixture({
    token: TOKEN,
    tunnel: (fx) => [
      ...exposeEchoArgs(fx.relayUri, fx.udp.port, fx.tcp.port),
      "--keepalive",
      "2",
      "--credentials-url",
      `http://127.0.0.1:${(server.address() as { port: number }).port}/turn-credentials`,
    ],
    tunnelEnv: () => ({}),
  });

  it("fetches credentials from the URL and renews them before the ttl runs out", async () => {
    const tunnel = f.tunnel;
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
    const tunnel = f.tunnel;
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
  const f = useTunnelFixture({
    token: TOKEN,
    relay: "coturn",
    tunnelArgs: ["--keepalive", "2", "--name", "coturn-renewal", "--credential-ttl", "8"],
  });

  it("re-allocates before the credentials expire when coturn insists on the creating username", async () => {
    const tunnel = f.tunnel;
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
