// What the UDP data path itself promises, checked on whichever path this project runs
// (TEST_UDP_IO: batch or dgram; vitest.config.ts runs the suite once per path):
// - /readyz and the metrics say which path runs;
// - relayed packets and bytes count only what the kernel accepted: a datagram it refuses
//   (EMSGSIZE: a 65,535-byte ChannelData from a TCP client cannot be one IPv4 UDP datagram)
//   is a drop by reason, and the packets around it still go through;
// - IPv6 clients and peers relay both ways.

import { mintRestCredentials } from "@turnpike/relay-core";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { counterValue } from "@turnpike/test-support/prometheus";
import { startEchoPeer, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-udp-path-token";
const expectedPath = process.env.TEST_UDP_IO ?? "batch";

describe(`the UDP data path (${expectedPath})`, () => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  let promPort = 0;

  beforeAll(async () => {
    range = reservePortRange(20);
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      logLevel: "info",
      extraArgs: [
        "--listen",
        "[::1]:0",
        "--relay-ip",
        "127.0.0.1",
        "--relay-ip",
        "::1",
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
      ],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  const creds = () => mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 600, "udp-path");
  const scrape = async () => (await httpGet(promPort, "/metrics", 3000)).body;

  it("says which path runs, in /readyz, in the ready log line and as a metric", async () => {
    const ready = await httpGet(relay!.healthPort, "/readyz");
    expect(JSON.parse(ready.body)).toMatchObject({ status: "ready", udpIo: expectedPath });
    expect(relay!.stdout + relay!.stderr).toContain(`udpIo=${expectedPath}`);
    expect(counterValue(await scrape(), /^turn_relay_udp_io$/, { io: expectedPath })).toBe(1);
  });

  it("binds UDP relay sockets made ahead of time by udp-batch's pool (batch only), and says so", async () => {
    const poolTaken = (t: string) =>
      counterValue(t, /^turn_relay_socket_pool_sockets(_total)?$/, { source: "pool" });
    const inline = (t: string) =>
      counterValue(t, /^turn_relay_socket_pool_sockets(_total)?$/, { source: "inline" });
    const before = await scrape();
    const clients = [];
    for (let i = 0; i < 5; i++) {
      const c = await TurnClientLite.open({ port: relay!.port, transport: "udp", ...creds() });
      clients.push(c);
      expect((await c.allocate()).code).toBe(0);
    }
    const after = await scrape();
    for (const c of clients) c.close();
    if (expectedPath === "dgram") {
      // node:dgram makes its own sockets: no pool, no such series.
      expect(after).not.toMatch(/^turn_relay_socket_pool_/m);
      return;
    }
    // Five relay sockets, each either from the pool or made inline; the pool held some ready
    // since the listeners' sockets asked for IPv4 at start.
    expect(poolTaken(after) + inline(after) - poolTaken(before) - inline(before)).toBe(5);
    expect(poolTaken(after)).toBeGreaterThan(poolTaken(before));
    expect(
      counterValue(after, /^turn_relay_socket_pool_held$/, { family: "ipv4" }),
    ).toBeGreaterThan(0);
  });

  it("counts a datagram the kernel refuses as a drop, not as relayed, and relays the rest", async () => {
    const peer = await startEchoPeer();
    const c = await TurnClientLite.open({ port: relay!.port, transport: "tcp", ...creds() });
    try {
      expect((await c.allocate()).code).toBe(0);
      expect((await c.channelBind(0x4000, peer.address)).code).toBe(0);
      const before = await scrape();
      const relayed = (t: string) =>
        counterValue(t, /^turn_relayed_packets(_total)?$/, {
          direction: "client_to_peer",
          transport: "tcp",
        });
      const emsgsize = (t: string) =>
        counterValue(t, /^turn_dropped_packets(_total)?$/, { reason: "send-emsgsize" });
      c.sendChannelData(0x4000, Buffer.alloc(100, 1));
      c.sendChannelData(0x4000, Buffer.alloc(65_535, 2)); // > 65,507: no IPv4 datagram holds it
      c.sendChannelData(0x4000, Buffer.alloc(200, 3));
      const deadline = Date.now() + 5000;
      while (c.channelData.length < 2 && Date.now() < deadline) await sleep(20);
      expect(c.channelData.map((d) => d.data.length)).toEqual([100, 200]);
      // The driver folds the path's counters in at collection time.
      let after = await scrape();
      while (emsgsize(after) === emsgsize(before) && Date.now() < deadline) {
        await sleep(50);
        after = await scrape();
      }
      expect(emsgsize(after) - emsgsize(before)).toBe(1);
      expect(relayed(after) - relayed(before)).toBe(2);
      expect(peer.received).toBe(2);
    } finally {
      c.close();
      await peer.close();
    }
  });

  it("relays between an IPv6 client and an IPv6 peer both ways, over channels and Send/Data", async () => {
    // The [::1]:0 listener's real port, from the "listening" log line (udp=...,[::1]:PORT).
    const v6 = /listening udp=\S*\[::1\]:(\d+)/.exec(relay!.stdout + relay!.stderr);
    const port = Number(v6?.[1]);
    expect(port).toBeGreaterThan(0);
    const peer = await startEchoPeer("::1");
    const c = await TurnClientLite.open({ host: "::1", port, ...creds() });
    try {
      const a = await c.allocate({ family: 6 });
      expect(a.code).toBe(0);
      expect(a.relayed[0]!.family).toBe(6);
      expect((await c.channelBind(0x4001, peer.address)).code).toBe(0);
      for (let i = 0; i < 50; i++) c.sendChannelData(0x4001, Buffer.from(`v6 channel ${i}`));
      c.sendIndication(peer.address, Buffer.from("v6 send"));
      const deadline = Date.now() + 5000;
      while (c.channelData.length < 51 && Date.now() < deadline) await sleep(20);
      // The echo of the Send indication comes back over the bound channel (same peer).
      expect(c.channelData.length).toBe(51);
      expect(c.channelData[49]!.data.toString()).toBe("v6 channel 49");
      expect(peer.received).toBe(51);
    } finally {
      c.close();
      await peer.close();
    }
  });
});
