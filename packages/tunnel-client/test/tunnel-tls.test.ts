// TURNS (RFC 8656 §3.1, TLS over TCP) control and data connections with real processes on
// loopback: turnpike-relay with --tls-listen and a throw-away self-signed certificate; the
// tunnel trusts it with --ca (the certificate names "localhost") or, in tests only,
// --insecure-skip-verify. Without either the tunnel refuses the relay. Bounded waits.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@turnpike/test-support/ports";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  echoServices,
  echoUdp,
  type ListRow,
  logCount,
  parseAddress,
  serviceArgs,
  sha256,
  startTunnel,
  type TunnelProcess,
  tcpRoundTrip,
  udpPeer,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-tls-secret";
const skip = skipUnlessTools("openssl");

/** 500 datagrams and 2 MiB over TCP through a tunnel's two services. */
async function bothServicesEcho(rows: ListRow[], tag: string): Promise<void> {
  const u = rows.find((r) => r.protocol === "udp" && r.state === "ready")!;
  const t = rows.find((r) => r.protocol === "tcp" && r.state === "ready")!;
  const platform = await udpPeer("127.0.0.1");
  const t0 = performance.now();
  const echoed = await echoUdp(platform, parseAddress(u.relayedAddress!), 500);
  platform.close();
  expect(echoed).toBe(500);
  const data = randomBytes(2 * 1024 * 1024);
  const t1 = performance.now();
  const back = await tcpRoundTrip(parseAddress(t.relayedAddress!), data, 30_000);
  expect(sha256(back)).toBe(sha256(data));
  console.log(
    `[tunnel-tls] ${tag}: 500 datagrams in ${(t1 - t0).toFixed(0)} ms, 2 MiB TCP echo in ${(performance.now() - t1).toFixed(0)} ms over turns:`,
  );
}

describe.skipIf(skip)("turnpike-tunnel over turns: (TLS to the relay)", () => {
  let dir: string;
  let cert: string;
  let key: string;
  let tlsPort: number;
  const tunnels: TunnelProcess[] = [];

  beforeAll(async () => {
    requireTools("openssl");
    dir = mkdtempSync(join(tmpdir(), "turnpike-tunnel-tls-"));
    ({ cert, key } = selfSignedCert(dir));
    tlsPort = await freePort();
  });
  const f = useTunnelFixture({
    token: TOKEN,
    relayArgs: () => ["--tls-listen", `127.0.0.1:${tlsPort}`, "--tls-cert", cert, "--tls-key", key],
    tunnel: false,
  });
  // After hooks run last-registered first: the tunnels stop before the fixture's relay.
  afterAll(async () => {
    for (const t of tunnels) await t.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A tunnel with `flags` and the two echo services, stopped after the suite. */
  async function tunnelWith(flags: string[]): Promise<TunnelProcess> {
    const tunnel = await startTunnel(
      [...flags, ...serviceArgs(echoServices(f.udp.port, f.tcp.port))],
      {
        TURNPIKE_TOKEN: TOKEN,
      },
    );
    tunnels.push(tunnel);
    return tunnel;
  }

  /** Both rows of `tunnel` once every one of them satisfies `pred`. */
  const both = (tunnel: TunnelProcess, pred: (row: ListRow) => boolean, what: string) =>
    tunnel.waitFor((r) => r.length === 2 && r.every(pred), 15_000, what);

  it("serves UDP and TCP through turns:127.0.0.1 with --insecure-skip-verify (warned)", async () => {
    const tunnel = await tunnelWith([
      "--relay",
      `turns:127.0.0.1:${tlsPort}`,
      "--insecure-skip-verify",
    ]);
    const rows = await both(tunnel, (x) => x.state === "ready", "both tunnels ready over TLS");
    expect(rows.every((r) => r.relay.startsWith(`turns:127.0.0.1:${tlsPort}`))).toBe(true);
    expect(logCount(tunnel.proc, "--insecure-skip-verify is set")).toBe(1);
    await bothServicesEcho(rows, "--insecure-skip-verify");
  });

  it("trusts the relay's certificate with --ca, and still checks the name it was issued to", async () => {
    const tunnel = await tunnelWith([
      "--relay",
      `turns:localhost:${tlsPort}`,
      "--resolve",
      "localhost=127.0.0.1",
      // The same relay by IP: the certificate names "localhost" only, so this one must fail.
      "--relay",
      `turns:127.0.0.1:${tlsPort}`,
      "--ca",
      cert,
    ]);
    const rows = await tunnel.waitFor(
      (r) =>
        r.filter((x) => x.state === "ready").length === 2 &&
        r.filter((x) => x.lastError !== null).length === 2,
      15_000,
      "the localhost tunnels ready and the IP ones refused",
    );
    for (const r of rows.filter((x) => x.state !== "ready")) {
      expect(r.relay).toContain("127.0.0.1");
      expect(r.lastError).toMatch(/IP: 127\.0\.0\.1 is not in the cert's list/);
      expect(r.relayedAddress).toBeNull();
    }
    await bothServicesEcho(rows, "--ca");
  });

  it("reaches turns:IP when --tls-servername names what the certificate names", async () => {
    // The platform hands out an IP (no DNS inside the customer's network); the relay's
    // certificate names "localhost" only, which --tls-servername supplies (SNI and check).
    const named = (name: string) =>
      tunnelWith(["--relay", `turns:127.0.0.1:${tlsPort}`, "--tls-servername", name, "--ca", cert]);
    const rows = await both(
      await named("localhost"),
      (x) => x.state === "ready",
      "both tunnels ready over turns:127.0.0.1 with --tls-servername",
    );
    await bothServicesEcho(rows, "--tls-servername");
    // The name is checked, not merely sent: another name fails verification.
    const refused = await both(
      await named("relay.example.com"),
      (x) => x.lastError !== null,
      "a wrong --tls-servername to fail verification",
    );
    for (const r of refused) {
      expect(r.lastError).toMatch(
        /Hostname\/IP does not match certificate.s altnames: Host: relay\.example\.com/,
      );
    }
  });

  it("refuses a relay whose certificate it cannot verify", async () => {
    const tunnel = await tunnelWith([
      "--relay",
      `turns:localhost:${tlsPort}`,
      "--resolve",
      "localhost=127.0.0.1",
    ]);
    const rows = await both(
      tunnel,
      (x) => x.lastError !== null,
      "both tunnels to fail verification",
    );
    for (const r of rows) {
      expect(r.state).not.toBe("ready");
      expect(r.lastError).toMatch(/self-signed certificate/);
    }
  });
});
