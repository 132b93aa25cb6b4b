// The relay engine in this process (engine/driver.ts), on loopback, on each UDP data path:
// started with startRelay on 127.0.0.1 port 0, it allocates for a lean TURN client over UDP
// and over TCP, relays ChannelData both ways to a UDP peer, runs an RFC 6062 round trip,
// drains (new allocations refused, the drain done when the last allocation goes) and closes,
// leaving no socket, timer or file descriptor behind. A bug in the loop, the outputs or a
// room shows here in seconds, not only through child processes.
import { reservePortRange } from "@turnpike/test-support/ports";
import { rfc6062Download, rfc6062Echo } from "@turnpike/test-support/rfc6062";
import {
  type LiteTransport,
  startEchoPeer,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { describe, expect, it } from "vitest";
import { relaySlot } from "../src/stats.js";
import { eventually, leftOver, openResources, startEngine, UDP_PATHS, USER } from "./in-process.js";

/** Allocates over `transport`, binds channel 0x4000 to `peer` and echoes `count` messages. */
async function relayThrough(
  port: number,
  transport: LiteTransport,
  peer: { family: 4 | 6; address: string; port: number },
  count: number,
): Promise<TurnClientLite> {
  const client = await TurnClientLite.open({ port, transport, ...USER });
  const allocated = await client.allocate();
  expect(allocated.code, allocated.reason).toBe(0);
  expect(allocated.relayed[0]?.address).toBe("127.0.0.1");
  expect((await client.createPermission(peer)).code).toBe(0);
  expect((await client.channelBind(0x4000, peer)).code).toBe(0);
  for (let i = 0; i < count; i++) client.sendChannelData(0x4000, Buffer.from(`${transport} #${i}`));
  await client.waitForChannelData(count);
  expect(client.channelData.map((c) => c.data.toString()).sort()).toEqual(
    Array.from({ length: count }, (_, i) => `${transport} #${i}`).sort(),
  );
  return client;
}

describe.each(UDP_PATHS)("the relay engine in-process on the %s path", (udpIo) => {
  it("allocates, relays both ways over UDP, TCP and RFC 6062, drains and closes without leaving anything open", async () => {
    const range = reservePortRange(20);
    const before = openResources();
    const { relay, stats, lines } = await startEngine(udpIo, range);
    const peer = await startEchoPeer();
    const clients: TurnClientLite[] = [];
    try {
      expect(relay.ready).toBe(true);
      expect(relay.udpIo).toBe(udpIo);
      expect(lines.find((l) => l.includes("ready"))).toContain(`udpIo=${udpIo}`);
      // Port 0: each listener got a free port of its own.
      const port = relay.addresses().udp[0]!.port;
      const tcpPort = relay.addresses().tcp[0]!.port;

      clients.push(await relayThrough(port, "udp", peer.address, 20));
      clients.push(await relayThrough(tcpPort, "tcp", peer.address, 20));
      const payload = Buffer.from("rfc 6062 echo");
      const reply = await rfc6062Echo({ port: tcpPort, ...USER, payload });
      expect(reply.toString()).toBe("rfc 6062 echo");

      // The counters the metrics read (the batch path folds its own in at collection time):
      // 20 ChannelData each way per client transport, and over TCP the RFC 6062 pipe's bytes.
      stats.beforeCollect?.();
      const packets = (direction: "client_to_peer" | "peer_to_client", t: "udp" | "tcp") =>
        stats.relayedPackets[relaySlot(direction, t)];
      expect(packets("client_to_peer", "udp")).toBe(20);
      expect(packets("peer_to_client", "udp")).toBe(20);
      expect(packets("client_to_peer", "tcp")).toBeGreaterThan(20);
      expect(packets("peer_to_client", "tcp")).toBeGreaterThan(20);
      // The RFC 6062 client has gone: its connections and allocation go with it.
      await eventually("the RFC 6062 allocation ends", async () => {
        stats.beforeCollect?.();
        return stats.connectionsActive === 1 && (await relay.allocations()).length === 2;
      });

      // Draining: no new allocation (508 without --alternate-server), and done as soon as the
      // last live allocation is released.
      let drained = false;
      const drain = relay.drain(10_000).then(() => {
        drained = true;
      });
      const late = await TurnClientLite.open({ port, ...USER });
      clients.push(late);
      expect((await late.allocate()).code).toBe(508);
      // test-support's RFC 6062 helpers hear that refusal (tried again for half a second, since
      // a 508 may be a relay port another process holds), rather than waiting for a reply.
      const refusedAt = performance.now();
      const echo = rfc6062Echo({ port: tcpPort, ...USER, payload, timeoutMs: 8000 });
      await expect(echo).rejects.toThrow(/^Allocate failed: 508 /);
      const download = rfc6062Download({ port: tcpPort, ...USER, peer: peer.address });
      await expect(download).rejects.toThrow(/^Allocate failed: 508 /);
      expect(performance.now() - refusedAt).toBeLessThan(5000);
      expect((await clients[0]!.refresh(0)).code).toBe(0);
      expect(drained).toBe(false);
      expect((await clients[1]!.refresh(0)).code).toBe(0);
      await drain;
      expect(await relay.allocations()).toEqual([]);
    } finally {
      for (const c of clients) c.close();
      await peer.close();
      await relay.close();
      range.release();
    }
    expect(relay.ready).toBe(false);
    expect(lines.at(-1)).toContain("closed");
    expect(await leftOver(before)).toEqual({});
  });
});

describe("the in-process check for leftovers", () => {
  it("sees a socket left open", async () => {
    const before = openResources();
    const peer = await startEchoPeer();
    try {
      const open = await leftOver(before, 100);
      expect(open).toEqual({ UDPWrap: before.UDPWrap! + 1, fds: before.fds! + 1 });
    } finally {
      await peer.close();
    }
    expect(await leftOver(before)).toEqual({});
  });
});
