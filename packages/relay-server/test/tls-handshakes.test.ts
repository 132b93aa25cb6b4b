// TLS handshakes under way (src/stream/tls-handshakes.ts) on real loopback sockets: the bound in
// total and per source, refusals counted before any TLS state, the deadline from the accept,
// a client that leaves mid-handshake closed at once, and a completed handshake handed on.

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { createLogger } from "@turnpike/runtime-kit";
import { sleep } from "@turnpike/test-support/process";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTools } from "@turnpike/test-support/tools";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createRelayStats, createRelayTelemetry, type RelayStats } from "../src/stats.js";
import type { Admission } from "../src/stream/admission.js";
import { type TlsHandshakeLimits, TlsHandshakes } from "../src/stream/tls-handshakes.js";

describe("TLS handshakes under way", () => {
  let dir: string;
  let pair: { cert: string; key: string };
  let server: net.Server | undefined;
  let stats: RelayStats;
  let secured: tls.TLSSocket[];
  let lines: string[];

  beforeAll(() => {
    requireTools("openssl");
    dir = mkdtempSync(join(tmpdir(), "turnpike-tls-handshakes-"));
    const files = selfSignedCert(dir);
    pair = { cert: readFileSync(files.cert, "utf8"), key: readFileSync(files.key, "utf8") };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  afterEach(() => {
    for (const s of secured) s.destroy();
    server?.close();
  });

  /** A TCP listener whose connections go through `TlsHandshakes`, source by local address. */
  async function listen(limits: TlsHandshakeLimits): Promise<{ port: number; h: TlsHandshakes }> {
    stats = createRelayStats();
    secured = [];
    lines = [];
    const log = createLogger({ level: "debug", write: (l) => lines.push(l) });
    const h = new TlsHandshakes(limits, createRelayTelemetry(stats), log);
    h.setSecureContext(pair);
    server = net.createServer({ allowHalfOpen: true }, (raw) => {
      const address = raw.remoteAddress ?? "";
      const admission: Admission = {
        address,
        port: raw.remotePort ?? 0,
        source: address,
        counted: true,
      };
      h.begin(raw, admission, (s) => secured.push(s));
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    return { port: (server.address() as net.AddressInfo).port, h };
  }

  /** A raw connection that sends a ClientHello's record header and waits; resolves when closed. */
  function stall(port: number, source: string): { closed: Promise<number> } {
    const t0 = performance.now();
    const s = net.connect({ host: "127.0.0.1", port, localAddress: source }, () =>
      s.write(Buffer.from("1603010200", "hex")),
    );
    s.on("error", () => {});
    return {
      closed: new Promise((resolve) => s.once("close", () => resolve(performance.now() - t0))),
    };
  }

  it("refuses beyond the total and per source, counting each refusal and logging it at debug", async () => {
    const { port, h } = await listen({ total: 4, perSource: 2, deadlineMs: 10_000 });
    const held = [
      stall(port, "127.0.6.1"),
      stall(port, "127.0.6.1"),
      stall(port, "127.0.6.1"),
      stall(port, "127.0.6.2"),
      stall(port, "127.0.6.2"),
    ];
    await sleep(300);
    const extra = stall(port, "127.0.6.3"); // the total is full
    await extra.closed;
    // One of the three from 127.0.6.1, whichever the listener accepted last.
    await Promise.race(held.slice(0, 3).map((x) => x.closed));
    expect(h.size).toBe(4);
    expect(stats.drops.get("tls-handshake-per-ip-limit")).toBe(1);
    expect(stats.drops.get("tls-handshake-limit")).toBe(1);
    expect(lines.filter((l) => l.includes("tls handshake refused"))).toHaveLength(2);
    h.closeAll();
    await Promise.all(held.map((x) => x.closed));
    expect(h.size).toBe(0);
  });

  it("ends a handshake at its deadline, and one whose client sent FIN at once", async () => {
    const { port, h } = await listen({ total: 10, perSource: 0, deadlineMs: 400 });
    const slow = stall(port, "127.0.6.4");
    const leaving = net.connect({ host: "127.0.0.1", port, localAddress: "127.0.6.5" }, () =>
      leaving.end(Buffer.from("1603010200", "hex")),
    );
    leaving.on("error", () => {});
    leaving.on("data", () => {});
    const left = new Promise<number>((resolve) => {
      const t0 = performance.now();
      leaving.once("close", () => resolve(performance.now() - t0));
    });
    expect(await left).toBeLessThan(300);
    const ms = await slow.closed;
    expect(ms).toBeGreaterThanOrEqual(350);
    expect(ms).toBeLessThan(2000);
    expect(h.size).toBe(0);
  });

  it("hands a completed handshake on and frees its place", async () => {
    const { port, h } = await listen({ total: 1, perSource: 1, deadlineMs: 5000 });
    for (let i = 0; i < 2; i++) {
      const c = tls.connect({ host: "127.0.0.1", port, rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => {
        c.once("secureConnect", resolve);
        c.once("error", reject);
      });
      await sleep(50);
      expect(h.size).toBe(0);
      c.destroy();
    }
    expect(secured).toHaveLength(2);
    expect(stats.drops.size).toBe(0);
  });
});
