// tcpSocketFd and stopNodeReading: what the relay and turnpike-tunnel check and do to a Node
// socket before SplicePipe takes its bytes over.
import net from "node:net";
import tls from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { stopNodeReading, tcpSocketFd } from "../src/index.js";

const open: (net.Server | net.Socket)[] = [];

afterEach(() => {
  for (const s of open.splice(0)) {
    if (s instanceof net.Server) s.close();
    else s.destroy();
  }
});

/** A connected loopback pair: the client end and the accepted end. */
async function pair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
  const server = net.createServer();
  open.push(server);
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  const client = net.connect(port, "127.0.0.1");
  await new Promise<void>((resolve) => client.once("connect", resolve));
  const a = await accepted;
  open.push(client, a);
  return { client, accepted: a };
}

describe("tcpSocketFd", () => {
  it("gives the fd of a connected plain TCP socket", async () => {
    const { client, accepted } = await pair();
    expect(tcpSocketFd(client)).toBeGreaterThanOrEqual(0);
    expect(tcpSocketFd(accepted)).toBeGreaterThanOrEqual(0);
    expect(tcpSocketFd(client)).not.toBe(tcpSocketFd(accepted));
  });

  it("refuses a TLS socket (its bytes are records), a destroyed one and anything not a socket", async () => {
    const { client } = await pair();
    const wrapped = new tls.TLSSocket(client);
    open.push(wrapped);
    expect(tcpSocketFd(wrapped)).toBeUndefined();
    const { accepted } = await pair();
    accepted.destroy();
    expect(tcpSocketFd(accepted)).toBeUndefined();
    expect(tcpSocketFd({ _handle: { fd: 3, readStop: () => 0 } })).toBeUndefined();
    expect(tcpSocketFd(undefined)).toBeUndefined();
  });
});

describe("stopNodeReading", () => {
  it("keeps Node from reading the socket again, whatever resumes it, while writing still works", async () => {
    const { client, accepted } = await pair();
    const seen: Buffer[] = [];
    accepted.on("data", (d: Buffer) => seen.push(d));
    stopNodeReading(accepted);
    accepted.resume();
    accepted.read(0);
    client.write("for the pipe, not for Node");
    await new Promise((r) => setTimeout(r, 150));
    expect(seen).toEqual([]);
    const back = new Promise<Buffer>((resolve) => client.once("data", resolve));
    accepted.write("still writable");
    expect((await back).toString()).toBe("still writable");
  });
});
