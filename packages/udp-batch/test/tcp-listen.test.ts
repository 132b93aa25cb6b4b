// tcpListen: TCP listening sockets that workers share with SO_REUSEPORT, steered by the
// client's source address so one client host's connections all reach the same worker.
import net from "node:net";
import { expect, it } from "vitest";
import { tcpListen } from "../src/index.js";
import { describeNative } from "./native.js";

/** Two servers on one port (a reuseport group of two); returns which one took each connection. */
async function group(steerGroup: number) {
  const servers: net.Server[] = [];
  const hits: string[][] = [[], []];
  let port = 0;
  for (let i = 0; i < 2; i++) {
    const fd = tcpListen({ family: 4, address: "127.0.0.1", port, steerGroup });
    const server = net.createServer((s) => {
      hits[i]!.push(s.remoteAddress!);
      s.end();
    });
    await new Promise<void>((r) => server.listen({ fd }, () => r()));
    port = (server.address() as net.AddressInfo).port;
    servers.push(server);
  }
  const connect = (localAddress: string) =>
    new Promise<void>((resolve, reject) => {
      const c = net.connect({ port, host: "127.0.0.1", localAddress });
      c.on("error", reject);
      c.on("close", () => resolve());
      c.resume();
    });
  return { servers, hits, connect, port };
}

describeNative("tcpListen", () => {
  it("sends every connection of one source address to the same member of the group", async () => {
    const g = await group(2);
    try {
      for (let i = 0; i < 20; i++) await g.connect("127.0.0.1");
      for (let i = 0; i < 20; i++) await g.connect("127.0.0.2");
      // 127.0.0.1 and 127.0.0.2 differ in the last bit: one member each, all 20 every time.
      const [a, b] = g.hits;
      expect(new Set(a).size).toBe(1);
      expect(new Set(b).size).toBe(1);
      expect(a!.length).toBe(20);
      expect(b!.length).toBe(20);
      expect(a![0]).not.toBe(b![0]);
    } finally {
      for (const s of g.servers) s.close();
    }
  });

  it("without steering, spreads one host's connections over the group", async () => {
    const g = await group(1);
    try {
      for (let i = 0; i < 40; i++) await g.connect("127.0.0.1");
      // The 4-tuple hash: with 40 source ports both members take some (1 - 2^-39).
      expect(g.hits[0]!.length).toBeGreaterThan(0);
      expect(g.hits[1]!.length).toBeGreaterThan(0);
    } finally {
      for (const s of g.servers) s.close();
    }
  });

  it("reports a port held without SO_REUSEPORT as EADDRINUSE", async () => {
    const plain = net.createServer();
    await new Promise<void>((r) => plain.listen(0, "127.0.0.1", () => r()));
    const port = (plain.address() as net.AddressInfo).port;
    try {
      expect(() => tcpListen({ family: 4, address: "127.0.0.1", port })).toThrow(
        expect.objectContaining({ code: "EADDRINUSE" }),
      );
    } finally {
      plain.close();
    }
  });
});
