// The tunnel keeps its endpoint: with a tunnel key pinned to a relay port (minted by the real
// `turnpike-relay credentials --port`), /list and the relay's discovery API show that port, and
// the same relay IP:port serves again after the relay is killed (kill -9) and restarted and after
// the tunnel itself is killed and restarted. With coturn as the relay (no pins) the tunnel falls
// back to a dynamic port and says so once.
import { randomBytes } from "node:crypto";
import { pinnedCredentialSecret } from "@turnpike/relay-core";
import { type CoturnHandle, startCoturn } from "@turnpike/test-support/coturn";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  echoUdp,
  exposeArgs,
  logCount,
  logTail,
  mintTunnelKey,
  parseAddress,
  type RelayProcess,
  sha256,
  startTunnel,
  type TunnelProcess,
  tcpRoundTrip,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-pinned-secret";
const ADMIN = "tunnel-pinned-admin";
/** The tunnels' backoff cap (s): how long a reconnect may wait once the relay is back. */
const BACKOFF_MAX = 2;

const mintKey = (user: string, port: number) => mintTunnelKey(TOKEN, user, port);

/** GET /v1/allocations?user= on the relay's health listener (the platform's lookup). */
async function discover(relay: RelayProcess, user: string): Promise<{ relayedAddress: string }[]> {
  const res = await fetch(`http://127.0.0.1:${relay.healthPort}/v1/allocations?user=${user}`, {
    headers: { authorization: `Bearer ${ADMIN}` },
  });
  if (res.status !== 200) throw new Error(`discovery: HTTP ${res.status}`);
  return ((await res.json()) as { allocations: { relayedAddress: string }[] }).allocations;
}

const tunnelArgs = (relay: string, services: Record<string, string>) => [
  ...exposeArgs(relay, services),
  "--backoff-max",
  String(BACKOFF_MAX),
  "--keepalive",
  "1",
];

describe("turnpike-tunnel keeps its pinned endpoint", () => {
  const f = useTunnelFixture({
    token: TOKEN,
    relayPorts: 40,
    pinnedPorts: 20,
    relayEnv: { TURNPIKE_ADMIN_TOKEN: ADMIN },
    tunnel: false,
  });
  const tunnels: TunnelProcess[] = [];

  afterEach(async () => {
    for (const t of tunnels.splice(0)) await t.proc.stop("SIGKILL", 1000);
  });

  it("serves a TCP service on its pinned port across a relay kill -9 and a tunnel kill -9", async () => {
    const port = f.pinned.min + 3;
    const endpoint = `127.0.0.1:${port}`;
    const args = tunnelArgs(`${f.relayUri}?transport=tcp`, { pg: `tcp://127.0.0.1:${f.tcp.port}` });
    const env = { TURNPIKE_KEY: mintKey("acme-pg", port) };
    const roundTrip = async () => {
      const data = randomBytes(1 << 20);
      expect(sha256(await tcpRoundTrip(parseAddress(endpoint), data))).toBe(sha256(data));
    };
    // Ready on the endpoint after at least `reconnects` reconnects (so not the state from
    // before the relay went away).
    const ready = (t: TunnelProcess, what: string, reconnects = 0) =>
      t.waitFor(
        (rows) =>
          rows[0]?.state === "ready" &&
          rows[0].relayedAddress === endpoint &&
          rows[0].reconnects >= reconnects,
        BACKOFF_MAX * 1000 + 10_000,
        what,
      );

    let tunnel = await startTunnel(args, env);
    tunnels.push(tunnel);
    const [row] = await ready(tunnel, "the pinned endpoint");
    expect(row).toMatchObject({ relayedAddress: endpoint, pinnedPort: port });
    expect(await discover(f.relay, "acme-pg")).toMatchObject([{ relayedAddress: endpoint }]);
    await roundTrip();

    // kill -9 the relay, start it again: same IP:port, within the backoff cap of its return.
    await f.stopRelay();
    await f.startRelay();
    await ready(tunnel, "the pinned endpoint after a relay kill -9", 1);
    expect(await discover(f.relay, "acme-pg")).toMatchObject([{ relayedAddress: endpoint }]);
    await roundTrip();

    // kill -9 the tunnel, start it again.
    await tunnel.proc.stop("SIGKILL", 1000);
    tunnel = await startTunnel(args, env);
    tunnels.push(tunnel);
    await ready(tunnel, "the pinned endpoint after a tunnel kill -9");
    await roundTrip();
    expect(logCount(tunnel.proc, "did not honour the pinned port")).toBe(0);
  });

  it("takes its UDP service's port back at once after a tunnel kill -9 (the stale allocation is released)", async () => {
    const port = f.pinned.min + 4;
    const endpoint = `127.0.0.1:${port}`;
    // Over UDP the relay cannot see a dead tunnel: without the takeover the old allocation
    // would hold the port for its whole lifetime (600 s).
    const args = tunnelArgs(`${f.relayUri}?transport=udp`, {
      dns: `udp://127.0.0.1:${f.udp.port}`,
    });
    const env = { TURNPIKE_KEY: mintKey("acme-dns", port) };
    const first = await startTunnel(args, env);
    tunnels.push(first);
    await first.waitFor((rows) => rows[0]?.relayedAddress === endpoint, 15_000, "first tunnel");
    await first.proc.stop("SIGKILL", 1000);
    const second = await startTunnel(args, env);
    tunnels.push(second);
    await second.waitFor(
      (rows) => rows[0]?.state === "ready" && rows[0].relayedAddress === endpoint,
      15_000,
      "the restarted tunnel on the same port",
    );
    expect(f.relay.proc.stderr).toContain(
      "pinned port taken over by a newer allocation of the same user",
    );
    const platform = await udpPeer("127.0.0.1");
    try {
      expect(await echoUdp(platform, parseAddress(endpoint), 100)).toBe(100);
    } finally {
      platform.close();
    }
  });

  it("serves one service per pinned credential and says why the others wait", async () => {
    const port = f.pinned.min + 5;
    const tunnel = await startTunnel(
      tunnelArgs(`${f.relayUri}?transport=tcp`, {
        one: `tcp://127.0.0.1:${f.tcp.port}`,
        two: `tcp://127.0.0.1:${f.tcp.port}`,
      }),
      { TURNPIKE_KEY: mintKey("acme-two", port) },
    );
    tunnels.push(tunnel);
    const rows = await tunnel.waitFor(
      (r) =>
        r.some((x) => x.state === "ready") &&
        r.some((x) => x.lastError?.includes("one service per pinned credential") === true),
      15_000,
      "one ready service and one refused",
    );
    const refused = rows.find((x) => x.state !== "ready")!;
    const served = rows.find((x) => x.state === "ready")!;
    expect(served.relayedAddress).toBe(`127.0.0.1:${port}`);
    expect(refused.lastError).toBe(
      `pinned port ${port} on 127.0.0.1 is already served by service "${served.name}": one service per pinned credential`,
    );
  });

  describe.skipIf(skipUnlessTools("turnserver"))("with coturn as the relay", () => {
    let coturn: CoturnHandle | undefined;
    let coturnRange: PortRange | undefined;
    afterAll(async () => {
      await coturn?.stop();
      coturnRange?.release();
    });

    it("falls back to a dynamic port and says so once, also after coturn restarts", async () => {
      coturnRange = reservePortRange(40);
      const port = await freePort();
      const startIt = () =>
        startCoturn({
          port,
          mode: "rest",
          secret: TOKEN,
          // Pinned credentials have a key of their own; given it as a second shared secret,
          // coturn accepts them as plain REST credentials (a dynamic port).
          extraArgs: [`--static-auth-secret=${pinnedCredentialSecret(TOKEN)}`],
          minPort: coturnRange!.min,
          maxPort: coturnRange!.max,
        });
      coturn = await startIt();
      const tunnel = await startTunnel(
        tunnelArgs(`turn:127.0.0.1:${port}?transport=tcp`, { pg: `tcp://127.0.0.1:${f.tcp.port}` }),
        { TURNPIKE_KEY: mintKey("acme-pg", f.pinned.min + 6) },
      );
      tunnels.push(tunnel);
      const [row] = await tunnel.waitFor((r) => r[0]?.state === "ready", 20_000, "ready on coturn");
      const relayed = parseAddress(row!.relayedAddress!);
      expect(relayed.port).toBeGreaterThanOrEqual(coturnRange.min);
      expect(relayed.port).toBeLessThanOrEqual(coturnRange.max);
      expect(row!.pinnedPort).toBe(f.pinned.min + 6);
      const data = randomBytes(64 * 1024);
      expect(sha256(await tcpRoundTrip(relayed, data))).toBe(sha256(data));

      await coturn.stop();
      coturn = await startIt();
      await tunnel.waitFor(
        (r) => r[0]?.state === "ready" && r[0].reconnects > 0,
        BACKOFF_MAX * 1000 + 15_000,
        "ready again on the restarted coturn",
      );
      expect(
        logCount(
          tunnel.proc,
          "the relay did not honour the pinned port: serving on a dynamic port",
        ),
        logTail(tunnel.proc),
      ).toBe(1);
    });
  });
});
