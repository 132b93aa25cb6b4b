// End to end: --max-bps on a real turnpike-relay. Relayed payload beyond an allocation's bucket
// (both directions against one, burst 64 KiB at least) is dropped and counted
// (turn.dropped.packets reason bandwidth-limit); the allocation itself stays, and what fits
// the bucket is relayed. An RFC 6062 pipe over the limit is slowed (reading paused until the
// bucket refills), never cut: a byte stream cannot drop bytes.
import { randomBytes } from "node:crypto";
import { mintRestCredentials } from "@turnpike/relay-core";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { rfc6062Echo } from "@turnpike/test-support/rfc6062";
import { startEchoPeer, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-bandwidth-token";
const CHANNEL = 0x4000;
const SIZE = 1200;
const SENT = 100;

describe("turnpike-relay --max-bps", () => {
  let range: PortRange;
  let relay: TurnpikeHandle;
  let prometheus: number;

  beforeAll(async () => {
    range = reservePortRange(20);
    prometheus = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      // 1 KB/s: the burst (64 KiB) is all an allocation gets in this test's few seconds.
      extraArgs: ["--max-bps", "1000", "--prometheus-listen", `127.0.0.1:${prometheus}`],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("relays what fits the allocation's bucket, drops and counts the rest, and keeps the allocation", async () => {
    const peer = await startEchoPeer();
    const creds = restCredentials(TOKEN, "metered");
    const c = await TurnClientLite.open({
      port: relay.port,
      username: creds.username,
      password: creds.credential,
    });
    try {
      expect((await c.allocate()).code).toBe(0);
      expect((await c.channelBind(CHANNEL, peer.address)).code).toBe(0);
      const payload = Buffer.alloc(SIZE, 7);
      for (let i = 0; i < SENT; i++) {
        c.sendChannelData(CHANNEL, payload);
        if (i % 10 === 9) await sleep(10);
      }
      await sleep(500);
      // Each echoed datagram costs the bucket twice (out and back): about 65536 / 2400 of them.
      const echoed = c.channelData.length;
      expect(echoed, `${peer.received} reached the peer`).toBeGreaterThan(10);
      expect(echoed).toBeLessThan(SENT / 2);
      expect(peer.received).toBeLessThan(SENT);
      const text = await (await fetch(`http://127.0.0.1:${prometheus}/metrics`)).text();
      const drops =
        /turn_dropped_packets(?:_total)?\{[^}]*reason="bandwidth-limit"[^}]*\} (\d+)/.exec(text);
      expect(Number(drops?.[1])).toBeGreaterThanOrEqual(SENT - echoed);
      // Over the limit is a drop, never a disconnect: the allocation lives on.
      expect((await c.refresh(600)).code).toBe(0);
    } finally {
      c.close();
      await peer.close();
    }
  });
});

describe("turnpike-relay --max-bps on RFC 6062 TCP relaying", () => {
  const LIMIT = 200_000; // bytes per second, both directions against one bucket
  let range: PortRange;
  let relay: TurnpikeHandle;

  beforeAll(async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--max-bps", String(LIMIT)],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("slows a pipe to the allocation's rate instead of cutting it, and delivers every byte", async () => {
    const creds = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, "piped");
    // Echoed, so 2 x PAYLOAD cross the pipe; beyond the burst (one second's worth) that takes
    // about (2 x 400 KB - 200 KB) / 200 KB/s = 3 s at the limit, milliseconds without it.
    const payload = randomBytes(400_000);
    const start = performance.now();
    const reply = await rfc6062Echo({
      port: relay.port,
      username: creds.username,
      password: creds.password,
      payload,
      timeoutMs: 20_000,
    });
    const seconds = (performance.now() - start) / 1000;
    expect(reply.equals(payload)).toBe(true);
    const rate = (2 * payload.length) / seconds;
    expect(rate, `${Math.round(rate)} B/s over ${seconds.toFixed(2)} s`).toBeLessThan(2 * LIMIT);
    expect(rate, `${Math.round(rate)} B/s over ${seconds.toFixed(2)} s`).toBeGreaterThan(
      0.3 * LIMIT,
    );
  });
});
