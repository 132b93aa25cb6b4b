// test-support's loopback ports: where freePort looks, and that what it answers can be bound.

import { createSocket } from "node:dgram";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { freePort, freePorts, reservePortRange } from "../src/ports.js";

function ephemeralRange(): [number, number] {
  const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
    .trim()
    .split(/\s+/)
    .map(Number);
  return [lo!, hi!];
}

async function bindBoth(port: number): Promise<void> {
  const tcp = createServer();
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen({ host: "127.0.0.1", port, exclusive: true }, resolve);
  });
  const udp = createSocket("udp4");
  await new Promise<void>((resolve, reject) => {
    udp.once("error", reject);
    udp.bind({ address: "127.0.0.1", port, exclusive: true }, resolve);
  });
  await new Promise<void>((r) => udp.close(() => r()));
  await new Promise<void>((r) => tcp.close(() => r()));
}

describe("freePort", () => {
  it("answers ports below the kernel's ephemeral range, which the kernel never hands out itself", async () => {
    const [lo] = ephemeralRange();
    const ports = await freePorts(50);
    expect(new Set(ports).size).toBe(50);
    for (const p of ports) {
      expect(p).toBeLessThan(lo);
      expect(p).toBeGreaterThanOrEqual(1024);
    }
  });

  it("answers a port that TCP and UDP can both bind, and with alsoNext the next one too", async () => {
    const port = await freePort({ alsoNext: true });
    await bindBoth(port);
    await bindBoth(port + 1);
  });

  it("walks past a port something else holds", async () => {
    const first = await freePort();
    // Hold the next few candidates the way a server of another test would.
    const holders = [];
    for (let p = first + 1; p <= first + 3; p++) {
      const s = createServer();
      await new Promise<void>((r) => s.listen({ host: "127.0.0.1", port: p, exclusive: true }, r));
      holders.push(s);
    }
    try {
      const next = await freePort();
      expect(next).not.toBe(first + 1);
      expect(next).not.toBe(first + 2);
      expect(next).not.toBe(first + 3);
      await bindBoth(next);
    } finally {
      await Promise.all(holders.map((s) => new Promise<void>((r) => s.close(() => r()))));
    }
  });
});

describe("reservePortRange", () => {
  it("claims relay ports above the ephemeral range, disjoint from freePort's", async () => {
    const [, hi] = ephemeralRange();
    const range = reservePortRange(100);
    try {
      expect(range.min).toBeGreaterThan(hi);
      expect(range.max - range.min + 1).toBe(100);
      expect(await freePort()).toBeLessThan(range.min);
    } finally {
      range.release();
    }
  });
});
