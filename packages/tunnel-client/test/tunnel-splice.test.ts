// The TCP pipe in the kernel (tunnel/spliced-pipe.ts, --tcp-splice auto) and in JavaScript
// (--tcp-splice off), end to end: turnpike-relay + the turnpike-tunnel CLI + private targets.
// Each mode moves large checksummed transfers both ways, passes a half-close (RFC 9293 §3.6)
// and a target's reset on, counts exactly the bytes moved (GET /list), and gives back every
// descriptor once the connections closed. With auto, an open connection works on duplicates of
// its two sockets and borrows kernel pipes only while bytes are in flight (udp-batch's pool
// keeps at most SPLICE_POOL_IDLE_FDS idle ends); with off, neither.
import { randomBytes } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { type Descriptors, descriptorsOf as fds } from "@turnpike/test-support/process";
import { SPLICE_POOL_IDLE_FDS } from "@turnpike/udp-batch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  exposeArgs,
  type ListRow,
  parseAddress,
  sha256,
  type TunnelFixture,
  tcpConnectOutcome,
  tcpRoundTrip,
  useTunnelFixture,
  waitUntil,
} from "./harness.js";

const TOKEN = "tunnel-splice-secret";

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return (server.address() as { port: number }).port;
}

function row(rows: readonly ListRow[], name: string): ListRow {
  const r = rows.find((x) => x.name === name);
  if (r === undefined) throw new Error(`no tunnel ${name}`);
  return r;
}

function spliceSuite(mode: "auto" | "off"): void {
  describe(`turnpike-tunnel --tcp-splice ${mode}`, () => {
    let afterEof: Server;
    let resetting: Server;
    beforeAll(async () => {
      // Answers once the request is complete (EOF): all of it back, then its own FIN.
      afterEof = createServer({ allowHalfOpen: true }, (c) => {
        const parts: Buffer[] = [];
        c.on("error", () => {});
        c.on("data", (b: Buffer) => parts.push(b));
        c.on("end", () => c.end(Buffer.concat(parts)));
      });
      // Resets the connection (RST) on the first bytes.
      resetting = createServer((c) => {
        c.on("error", () => {});
        c.once("data", () => c.resetAndDestroy());
      });
      await listen(afterEof);
      await listen(resetting);
    });
    afterAll(async () => {
      await new Promise((r) => afterEof?.close(r));
      await new Promise((r) => resetting?.close(r));
    });
    const f: TunnelFixture = useTunnelFixture({
      token: TOKEN,
      echo: ["tcp"],
      tunnel: (fx) => [
        ...exposeArgs(`${fx.relayUri}?transport=tcp`, {
          echo: `tcp://127.0.0.1:${fx.tcp.port}`,
          "after-eof": `tcp://127.0.0.1:${(afterEof.address() as { port: number }).port}`,
          resetting: `tcp://127.0.0.1:${(resetting.address() as { port: number }).port}`,
        }),
        "--tcp-splice",
        mode,
      ],
      ready: 3,
    });
    const pid = () => f.tunnel.proc.pid;
    const allClosed = (rows: readonly ListRow[]) => rows.every((r) => r.openConnections === 0);
    let baseline: Descriptors;
    /** The idle kernel pipes udp-batch's pool may keep after transfers (auto), none (off). */
    const poolAtMost = mode === "auto" ? SPLICE_POOL_IDLE_FDS : 0;

    beforeAll(async () => {
      await f.tunnel.waitFor(allClosed, 5000, "no open connection");
      baseline = fds(pid());
    });

    it("echoes 32 MiB both ways with a matching SHA-256 and counts exactly those bytes", async () => {
      const before = row(await f.tunnel.list(), "echo");
      const data = randomBytes(32 * 1024 * 1024);
      const t0 = performance.now();
      const back = await tcpRoundTrip(parseAddress(before.relayedAddress!), data, 60_000);
      const s = (performance.now() - t0) / 1000;
      console.log(`[tunnel-splice ${mode}] 32 MiB TCP echo in ${s.toFixed(2)} s`);
      expect(back.length).toBe(data.length);
      expect(sha256(back)).toBe(sha256(data));
      const after = row(await f.tunnel.list(), "echo");
      expect(after.bytesIn - before.bytesIn).toBe(data.length);
      expect(after.bytesOut - before.bytesOut).toBe(data.length);
    });

    it(`${mode === "auto" ? "joins an open connection's two sockets in the kernel, holding no kernel pipe while idle" : "holds no kernel pipe and no socket duplicate"}`, async () => {
      const to = parseAddress(row(await f.tunnel.list(), "echo").relayedAddress!);
      const sock = connect({ host: to.ip, port: to.port });
      sock.on("error", () => {});
      try {
        // One round trip: the pipe is joined (the target connected) once bytes came back.
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no echo")), 10_000);
          sock.once("data", () => {
            clearTimeout(timer);
            resolve();
          });
          sock.write("ping");
        });
        const joined = mode === "auto" ? 2 : 0;
        await waitUntil(
          () => fds(pid()).duplicatedSockets - baseline.duplicatedSockets >= joined,
          1000,
          "the pipe's socket duplicates",
        ).catch(() => {});
        const during = fds(pid());
        expect(during.duplicatedSockets - baseline.duplicatedSockets).toBe(joined);
        // The ping's kernel pipes went back to the pool once empty.
        expect(during.pipes - baseline.pipes).toBeGreaterThanOrEqual(0);
        expect(during.pipes - baseline.pipes).toBeLessThanOrEqual(poolAtMost);
      } finally {
        sock.destroy();
      }
      await f.tunnel.waitFor(allClosed, 5000, "the connection closed");
    });

    it("delivers the whole 8 MiB reply after the platform half-closes its side", async () => {
      const before = row(await f.tunnel.list(), "after-eof");
      const to = parseAddress(before.relayedAddress!);
      const request = randomBytes(8 * 1024 * 1024);
      const reply = await new Promise<Buffer>((resolve, reject) => {
        const parts: Buffer[] = [];
        const sock = connect({ host: to.ip, port: to.port, allowHalfOpen: true });
        const timer = setTimeout(() => {
          sock.destroy();
          reject(new Error(`no complete reply; got ${Buffer.concat(parts).length} bytes`));
        }, 30_000);
        sock.on("connect", () => sock.end(request)); // write, then FIN
        sock.on("data", (b: Buffer) => parts.push(b));
        sock.on("end", () => {
          clearTimeout(timer);
          sock.end();
          resolve(Buffer.concat(parts));
        });
        sock.on("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      expect(reply.length).toBe(request.length);
      expect(sha256(reply)).toBe(sha256(request));
      const rows = await f.tunnel.waitFor(
        (r) => row(r, "after-eof").openConnections === 0,
        5000,
        "the half-closed connection to be closed on both sides",
      );
      const after = row(rows, "after-eof");
      expect(after.bytesIn - before.bytesIn).toBe(request.length);
      expect(after.bytesOut - before.bytesOut).toBe(request.length);
    });

    it("closes the platform's connection when the target resets it", async () => {
      const to = parseAddress(row(await f.tunnel.list(), "resetting").relayedAddress!);
      const outcome = await tcpConnectOutcome(to, 10_000);
      expect(["closed", "reset"]).toContain(outcome);
      await f.tunnel.waitFor(
        (r) => row(r, "resetting").openConnections === 0,
        5000,
        "the reset connection to be closed",
      );
    });

    it("gives back every descriptor once the connections closed", async () => {
      // A few more connections, some closed by the platform mid-transfer.
      const to = parseAddress(row(await f.tunnel.list(), "echo").relayedAddress!);
      await Promise.all(
        Array.from({ length: 4 }, () => tcpRoundTrip(to, randomBytes(1024 * 1024), 30_000)),
      );
      for (let i = 0; i < 4; i++) {
        const sock = connect({ host: to.ip, port: to.port });
        sock.on("error", () => {});
        await new Promise<void>((r) => sock.once("connect", () => r()));
        sock.write(randomBytes(256 * 1024));
        await new Promise((r) => setTimeout(r, 50));
        sock.destroy();
      }
      await f.tunnel.waitFor(allClosed, 10_000, "every connection closed");
      // Back to the baseline, but for the idle kernel pipes udp-batch's pool keeps.
      const pooled = () => fds(pid()).pipes - baseline.pipes;
      await waitUntil(
        () => fds(pid()).all - pooled() <= baseline.all,
        5000,
        `the tunnel's descriptors back to ${baseline.all} and its pool's`,
        () => `now ${JSON.stringify(fds(pid()))}`,
      );
      const after = fds(pid());
      expect(after.duplicatedSockets).toBe(baseline.duplicatedSockets);
      expect(after.pipes - baseline.pipes).toBeGreaterThanOrEqual(0);
      expect(after.pipes - baseline.pipes).toBeLessThanOrEqual(poolAtMost);
      expect(after.all - (after.pipes - baseline.pipes)).toBe(baseline.all);
    });

    // Last: it kills the relay.
    it("closes the target's connection when the relay connection is lost", async () => {
      const to = parseAddress(row(await f.tunnel.list(), "echo").relayedAddress!);
      const sock = connect({ host: to.ip, port: to.port });
      sock.on("error", () => {});
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no echo")), 10_000);
        sock.once("data", () => {
          clearTimeout(timer);
          resolve();
        });
        sock.write("ping");
      });
      const targetConnections = () =>
        new Promise<number>((r, j) => f.tcp.server.getConnections((e, n) => (e ? j(e) : r(n))));
      expect(await targetConnections()).toBe(1);
      await f.stopRelay();
      sock.destroy();
      await waitUntil(async () => (await targetConnections()) === 0, 5000, "the target closed");
      await waitUntil(
        () => fds(pid()).duplicatedSockets === baseline.duplicatedSockets,
        5000,
        "the pipe's socket duplicates closed",
      );
      expect(fds(pid()).pipes - baseline.pipes).toBeLessThanOrEqual(poolAtMost);
    });
  });
}

spliceSuite("auto");
spliceSuite("off");
