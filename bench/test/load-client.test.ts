// The load client's data path over TCP: a relay that stops reading must show up as packets
// not offered, not as an ever-growing write queue counted as offered.
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { MAX_TCP_WRITE_QUEUE, TurnLoadClient } from "../src/load/turn-load-client.js";

describe("TurnLoadClient over TCP", () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => {
    for (const f of cleanup.splice(0)) f();
  });

  it("stops offering data packets once the connection's write queue is full", async () => {
    const conns: net.Socket[] = [];
    // A "relay" that accepts and never reads: the kernel buffers fill, then Node's queue.
    const server = net.createServer((c) => {
      c.pause();
      conns.push(c);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    cleanup.push(() => {
      for (const c of conns) c.destroy();
      server.close();
    });
    const port = (server.address() as net.AddressInfo).port;
    const client = await TurnLoadClient.connect({
      server: { address: "127.0.0.1", port },
      transport: "tcp",
      token: "secret",
      user: "backpressure",
    });
    cleanup.push(() => void client.close());
    const packet = client.channelDataPacket(0x4000, 60_000);
    let offered = 0;
    let refused = 0;
    // Bounded: 2,000 packets of 60 kB = 120 MB, far past any loopback socket buffer.
    for (let i = 0; i < 2000 && refused < 10; i++) {
      if (client.send(packet)) offered++;
      else refused++;
    }
    expect(refused).toBe(10);
    expect(offered).toBeGreaterThan(0);
    const queued = (client as unknown as { tcp: net.Socket }).tcp.writableLength;
    expect(queued).toBeLessThanOrEqual(MAX_TCP_WRITE_QUEUE + packet.length);
  });
});
