// The native generator and echo peer (bench/native/) against each other on loopback, driven
// the way the relay scenario drives them: the bench opens the client sockets, hands the 5-tuples
// over, and the native generator paces a phase and counts every round trip.
import dgram from "node:dgram";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { LoadGenerator } from "../src/load/generator.js";
import { LineProcess, nativeUnavailable } from "../src/load/native.js";
import { NativeGenerator } from "../src/load/native-generator.js";
import { type EchoPeer, startEchoPeer } from "../src/load/peer.js";
import { openAllocations } from "../src/scenarios/setup.js";
import { noRelay } from "../src/servers.js";

describe("native generator and echo peer", () => {
  const stops: (() => Promise<void>)[] = [];

  beforeAll(() => {
    // Built at install (bench/scripts/build-native.mjs); the machines this runs on have cc.
    expect(nativeUnavailable()).toBeUndefined();
  });
  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
  });

  async function directLoad(count: number): Promise<{ gen: LoadGenerator; peer: EchoPeer }> {
    const peer = await startEchoPeer("native", 4);
    stops.push(() => peer.stop());
    const server = noRelay();
    const open = await openAllocations({
      server,
      transport: "udp",
      count,
      peers: peer.addresses,
      bind: true,
      concurrency: 8,
    });
    expect(open.failures).toBe(0);
    const gen = await NativeGenerator.start(open.opened, server, true);
    stops.push(() => gen.close());
    return { gen, peer };
  }

  it("offers a phase at the asked rate over every socket and counts each echo's round trip", async () => {
    const { gen, peer } = await directLoad(10);
    const progress: number[] = [];
    const sent = await gen.send({ id: 1, rate: 4000, seconds: 0.6, size: 100 }, (slot) =>
      progress.push(slot),
    );
    expect(sent).toMatchObject({ sent: 2400, due: 2400 });
    expect(sent.sendSeconds).toBeGreaterThan(0.5);
    expect(progress.length).toBeGreaterThan(0);
    // Bounded wait for the last echoes on a busy machine.
    for (let i = 0; i < 40 && (await gen.received()) < 2400; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const h = await gen.finish();
    expect(h.totalCount).toBe(2400);
    expect(h.getValueAtPercentile(50)).toBeGreaterThan(0);
    expect(h.maxValue).toBeGreaterThanOrEqual(h.getValueAtPercentile(99));
    const stats = await peer.stats();
    expect(stats.received).toBe(2400);
    expect(stats.bytes).toBe(2400 * 100);
    expect(gen.cpuMicros()).toBeGreaterThanOrEqual(0);
  });

  it("counts only the echoes of the phase running: late ones of an ended phase are not", async () => {
    // An echo peer of our own that holds phase 1's datagrams and sends them back during phase 2.
    const held: { msg: Buffer; port: number }[] = [];
    let holding = true;
    const peer = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => peer.bind(0, "127.0.0.1", resolve));
    stops.push(() => new Promise((resolve) => peer.close(() => resolve())));
    peer.on("message", (msg, rinfo) => {
      if (holding) held.push({ msg, port: rinfo.port });
      else peer.send(msg, rinfo.port, "127.0.0.1");
    });
    const server = noRelay();
    const open = await openAllocations({
      server,
      transport: "udp",
      count: 2,
      peers: [{ address: "127.0.0.1", port: peer.address().port }],
      bind: true,
      concurrency: 2,
    });
    const gen = await NativeGenerator.start(open.opened, server, true);
    stops.push(() => gen.close());

    const first = await gen.send({ id: 1, rate: 1000, seconds: 0.2, size: 64 }, () => {});
    expect(first.sent).toBe(200);
    for (let i = 0; i < 40 && held.length < 200; i++) await new Promise((r) => setTimeout(r, 25));
    expect(held).toHaveLength(200);
    expect((await gen.finish()).totalCount).toBe(0);

    holding = false;
    const sending = gen.send({ id: 2, rate: 1000, seconds: 0.3, size: 64 }, () => {});
    for (const h of held) peer.send(h.msg, h.port, "127.0.0.1");
    const second = await sending;
    for (let i = 0; i < 40 && (await gen.received()) < second.sent; i++) {
      await new Promise((r) => setTimeout(r, 25));
    }
    await new Promise((r) => setTimeout(r, 100));
    expect((await gen.finish()).totalCount).toBe(second.sent);
  });

  it("reports a local port it cannot take as a one-line error", async () => {
    const taken = dgram.createSocket("udp4");
    await new Promise<void>((resolve) => taken.bind(0, "127.0.0.1", resolve));
    stops.push(() => new Promise((resolve) => taken.close(() => resolve())));
    const p = new LineProcess("native generator", "turnpike-loadgen", ["raw"]);
    stops.push(() => p.stop());
    p.send(`tuple 127.0.0.1 ${taken.address().port} 127.0.0.1 9 0`);
    await expect(p.request("open", "ready")).rejects.toThrow(
      new RegExp(`bind 127\\.0\\.0\\.1:${taken.address().port}: Address already in use`),
    );
  });
});
