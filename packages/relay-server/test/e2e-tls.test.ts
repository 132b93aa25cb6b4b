// End to end: TURNS (TURN over TLS, RFC 8656 §3.1) on a real turnpike-relay process with a
// throw-away self-signed certificate: coturn's turnutils_uclient over TLS with channels to a
// turnutils_peer (zero loss), and our own client over node:tls for a Binding and a relayed
// round trip with padded ChannelData (RFC 8656 §12.5).
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import {
  AttributeType,
  Method,
  startEchoPeer,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { type PeerHandle, runUclient, startPeer } from "@turnpike/test-support/turnutils";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-tls-token";
const TOOLS = ["openssl", "turnutils_uclient", "turnutils_peer"];

describe.skipIf(skipUnlessTools(...TOOLS))("turnpike-relay over TLS (TURNS)", () => {
  let dir: string;
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let tlsPort: number;
  let promPort: number;
  let peer: PeerHandle | undefined;
  let cert: string;
  let key: string;

  beforeAll(async () => {
    requireTools(...TOOLS);
    dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-tls-"));
    ({ cert, key } = selfSignedCert(dir));
    range = reservePortRange(50);
    tlsPort = await freePort();
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      legacyChannelNumbers: true, // uclient binds RFC 5766 channel numbers
      extraArgs: [
        "--tls-listen",
        `127.0.0.1:${tlsPort}`,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
      ],
    });
    peer = await startPeer();
  });
  afterAll(async () => {
    await peer?.stop();
    await relay?.stop("SIGINT", 5000);
    range?.release();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("relays turnutils_uclient's channel traffic over TLS with zero loss", async () => {
    const clients = 4;
    const messages = 50;
    const r = await runUclient({
      port: tlsPort,
      transport: "tcp",
      extraArgs: ["-S"],
      secret: TOKEN,
      user: "tls",
      peer: { port: peer!.port },
      clients,
      messages,
      messageSize: 200,
      intervalMs: 10,
      timeoutMs: 30_000,
    });
    expect(r.timedOut, r.log).toBe(false);
    expect(r.exitCode, r.log).toBe(0);
    // The relay relayed every message both ways, and saw it as TLS traffic (not plain TCP).
    const metrics = (await httpGet(promPort, "/metrics")).body;
    const tls = (dir: string) =>
      Number(
        new RegExp(
          `turn_relayed_packets(?:_total)?\\{[^}]*direction="${dir}"[^}]*transport="tls"[^}]*\\} (\\d+)`,
        ).exec(metrics)?.[1] ?? 0,
      );
    expect(tls("client_to_peer"), metrics).toBe(clients * messages);
    expect(tls("peer_to_client"), metrics).toBe(clients * messages);
    // ...and the client got every echo back (uclient's own count; under a heavily loaded host
    // a late echo counts as lost there, so the relay's counters above are checked first).
    expect(r.sentMsgs, r.log).toBe(clients * messages);
    expect(r.recvMsgs, r.log).toBe(clients * messages);
    expect(r.lostPackets, r.log).toBe(0);
  });

  it("answers a Binding and relays ChannelData for a node:tls client", async () => {
    const echo = await startEchoPeer();
    const creds = restCredentials(TOKEN, "tls-lite");
    const c = await TurnClientLite.open({
      port: tlsPort,
      transport: "tls",
      username: creds.username,
      password: creds.credential,
    });
    try {
      const binding = await c.request(Method.Binding, () => {}, { auth: false });
      expect(binding.code).toBe(0);
      const { readXorAddress } = await import("@turnpike/relay-core");
      const mapped = readXorAddress(binding.message, AttributeType.XorMappedAddress);
      expect(mapped).toEqual({ family: 4, address: "127.0.0.1", port: c.localAddress().port });

      expect((await c.allocate()).code).toBe(0);
      expect((await c.channelBind(0x4001, echo.address)).code).toBe(0);
      // Odd sizes exercise the 4-byte padding of ChannelData on streams (RFC 8656 §12.5).
      const sizes = [1, 2, 3, 5, 333, 1201];
      for (const n of sizes) c.sendChannelData(0x4001, Buffer.alloc(n, n & 0xff));
      await c.waitForChannelData(sizes.length, 3000);
      expect(c.channelData.map((d) => d.data.length)).toEqual(sizes);
      expect(c.channelData.every((d) => d.data.every((b) => b === (d.data.length & 0xff)))).toBe(
        true,
      );
    } finally {
      c.close();
      await echo.close();
    }
  });

  it("closes plain-TCP garbage, plain STUN and post-handshake garbage on the TLS port and keeps serving", async () => {
    const closedByRelay = (write: (s: net.Socket) => void) =>
      new Promise<boolean>((resolve) => {
        const s = net.connect({ host: "127.0.0.1", port: tlsPort }, () => write(s));
        const timer = setTimeout(() => {
          s.destroy();
          resolve(false);
        }, 3000);
        s.on("error", () => {});
        s.on("data", () => {});
        s.on("close", () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    const binding = Buffer.from("000100002112a442000102030405060708090a0b", "hex");
    const results = await Promise.all([
      // Garbage whose first byte is no TLS record type, so the handshake fails at once: random
      // bytes can also look like the start of a long record (a leading 0x16, or SSLv2's high
      // bit) and would then wait out the 10 s handshake timeout instead (flaky).
      ...Array.from({ length: 8 }, () =>
        closedByRelay((s) => s.write(Buffer.concat([Buffer.of(0x00), randomBytes(599)]))),
      ),
      closedByRelay((s) => s.write(binding)), // STUN without TLS
      // A TLS record header announcing a ClientHello, then junk.
      closedByRelay((s) =>
        s.write(Buffer.concat([Buffer.from("1603010200", "hex"), randomBytes(512)])),
      ),
    ]);
    expect(results.every(Boolean)).toBe(true);

    // Inside a good TLS session, bytes that are neither STUN nor ChannelData end the session.
    const broken = await TurnClientLite.open({ port: tlsPort, transport: "tls" });
    broken.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]));
    expect(await broken.waitClosedByPeer(2000)).toBe(true);
    broken.close();

    const ok = await TurnClientLite.open({ port: tlsPort, transport: "tls" });
    try {
      expect((await ok.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
    } finally {
      ok.close();
    }
    expect(relay!.process.exited).toBe(false);
  });

  it("ends handshakes that stall past --tcp-idle-timeout and caps connections still handshaking", async () => {
    const port = await freePort();
    const r = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: [
        "--tcp-idle-timeout",
        "1",
        "--max-connections",
        "2",
        "--tls-listen",
        `127.0.0.1:${port}`,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
      ],
    });
    const t0 = performance.now();
    // TCP connections to the TLS port that never send a ClientHello.
    const closedAt = await Promise.all(
      [0, 1, 2].map(
        (i) =>
          new Promise<number>((resolve) => {
            const s = net.connect({ host: "127.0.0.1", port });
            s.on("error", () => {});
            const timer = setTimeout(() => {
              s.destroy();
              resolve(Number.POSITIVE_INFINITY);
            }, 4000 + i);
            s.on("close", () => {
              clearTimeout(timer);
              resolve(performance.now() - t0);
            });
          }),
      ),
    );
    try {
      closedAt.sort((a, b) => a - b);
      // The third is over --max-connections while two are handshaking: refused at once.
      expect(closedAt[0]).toBeLessThan(500);
      // The two silent ones end at the idle limit (1 s), not at Node's 120 s default.
      expect(closedAt[1]).toBeGreaterThan(800);
      expect(closedAt[2]).toBeLessThan(3000);
      const ok = await TurnClientLite.open({ port, transport: "tls" });
      expect((await ok.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
      ok.close();
    } finally {
      expect((await r.stop("SIGINT", 5000)).code).toBe(0);
    }
  });
});
