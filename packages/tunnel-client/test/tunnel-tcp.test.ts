// End to end over TCP (RFC 6062): turnpike-relay + the turnpike-tunnel CLI + a TCP echo server
// as the private target; a plain TCP client ("the platform") connects to the relayed address.
import { randomBytes } from "node:crypto";
import { connect, createServer, type Server } from "node:net";
import { freePort } from "@turnpike/test-support/ports";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  exposeArgs,
  parseAddress,
  sha256,
  tcpConnectOutcome,
  tcpRoundTrip,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-tcp-secret";
describe("turnpike-tunnel exposes a TCP service through turnpike-relay (RFC 6062)", () => {
  let closedPort: number;
  let afterEof: Server;

  beforeAll(async () => {
    closedPort = await freePort(); // nothing listens here: a target that refuses
    // Answers only once the request is complete (EOF): reads to the end, then writes it all
    // back and closes, like an HTTP/1.0 server or `nc -N` on the other side.
    afterEof = createServer({ allowHalfOpen: true }, (c) => {
      const parts: Buffer[] = [];
      c.on("error", () => {});
      c.on("data", (b: Buffer) => parts.push(b));
      c.on("end", () => c.end(Buffer.concat(parts)));
    });
    await new Promise<void>((r) => afterEof.listen(0, "127.0.0.1", () => r()));
  });
  afterAll(async () => {
    await new Promise((r) => afterEof?.close(r));
  });
  const f = useTunnelFixture({
    token: TOKEN,
    echo: ["tcp"],
    tunnel: (fx) =>
      exposeArgs(`${fx.relayUri}?transport=tcp`, {
        echo: `tcp://127.0.0.1:${fx.tcp.port}`,
        refusing: `tcp://127.0.0.1:${closedPort}`,
        "after-eof": `tcp://127.0.0.1:${(afterEof.address() as { port: number }).port}`,
      }),
    ready: 3,
  });

  it("echoes 10 MB from a plain TCP client with a matching SHA-256", async () => {
    const row = (await f.tunnel.list()).find((r) => r.name === "echo")!;
    const data = randomBytes(10 * 1024 * 1024);
    const t0 = performance.now();
    const back = await tcpRoundTrip(parseAddress(row.relayedAddress!), data);
    const s = (performance.now() - t0) / 1000;
    console.log(
      `[tunnel-tcp] 10 MiB TCP echo through turnpike-relay + tunnel in ${s.toFixed(2)} s`,
    );
    expect(back.length).toBe(data.length);
    expect(sha256(back)).toBe(sha256(data));
    const after = (await f.tunnel.list()).find((r) => r.name === "echo")!;
    expect(after.bytesIn).toBe(data.length);
    expect(after.bytesOut).toBe(data.length);
  });

  it("closes the peer's connection cleanly when the target refuses", async () => {
    const row = (await f.tunnel.list()).find((r) => r.name === "refusing")!;
    expect(await tcpConnectOutcome(parseAddress(row.relayedAddress!))).toBe("closed");
  });

  it("delivers the whole reply after the platform half-closes its side (FIN after the request)", async () => {
    const row = (await f.tunnel.list()).find((r) => r.name === "after-eof")!;
    const to = parseAddress(row.relayedAddress!);
    const request = randomBytes(1024 * 1024);
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      const sock = connect({ host: to.ip, port: to.port, allowHalfOpen: true });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`no complete reply; got ${Buffer.concat(parts).length} bytes`));
      }, 20_000);
      sock.on("connect", () => sock.end(request)); // write, then FIN: the request is complete
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
    // Both directions ended: the tunnel closed both sockets.
    await f.tunnel.waitFor(
      (rows) => rows.find((r) => r.name === "after-eof")?.openConnections === 0,
      5000,
      "the half-closed connection to be closed on both sides",
    );
  });
});
