// End to end: the health listener (--health-listen, what Kubernetes probes) cannot be used to
// starve the relay. A real turnpike-relay process runs under an open-file limit of 256
// (`prlimit --nofile=256:256`): at start it says which caps it lowered to fit (config/
// fd-budget.ts); then 300 idle connections to the health port and 100 to the TURN port, and
// a half-sent HTTP request. Before the caps the health connections took every descriptor, so
// UDP Allocates answered 508 and TCP accepts stopped; a half-sent request was held ~29 s (Node
// checks its request timeouts every 30 s). Now the health listener holds at most its cap,
// Allocates and TCP clients are served meanwhile, and every idle or half-sent health connection
// is closed within a few seconds.

import net from "node:net";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { type ManagedProcess, sleep, spawnManaged } from "@turnpike/test-support/process";
import { Method, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { httpGet, TURNPIKE_BIN } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-health-limits-token";
const NOFILE = 256;
/** What fd-budget.ts leaves at 256 files: a sixteenth for health, the rest after a reserve. */
const HEALTH_CAP = 16;
const CONNECTIONS_CAP = 112;

interface Held {
  socket: net.Socket;
  opened: number;
  closedByRelay: boolean;
  closedAt: number;
}

/** A TCP connection from `source` that sends `bytes` (or nothing) and waits. */
function hold(port: number, source: string, bytes?: string): Promise<Held> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: source });
    const h: Held = {
      socket,
      opened: performance.now(),
      closedByRelay: false,
      closedAt: Number.POSITIVE_INFINITY,
    };
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.once("connect", () => {
      if (bytes !== undefined) socket.write(bytes);
      resolve(h);
    });
    socket.once("close", () => {
      h.closedByRelay = true;
      h.closedAt = performance.now();
      resolve(h);
    });
  });
}

async function holdMany(n: number, port: number, source: (i: number) => string): Promise<Held[]> {
  const out: Held[] = [];
  for (let i = 0; i < n; i += 50) {
    const batch = Array.from({ length: Math.min(50, n - i) }, (_, j) => hold(port, source(i + j)));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

describe(`turnpike-relay under an open-file limit of ${NOFILE}, its health port held open by strangers`, () => {
  let range: PortRange;
  let relay: ManagedProcess | undefined;
  let port: number;
  let healthPort: number;

  beforeAll(async () => {
    range = reservePortRange(20);
    port = await freePort();
    healthPort = await freePort();
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, TURNPIKE_TOKEN: TOKEN };
    const args = [
      `--nofile=${NOFILE}:${NOFILE}`,
      "--",
      process.execPath,
      TURNPIKE_BIN,
      "--listen",
      `127.0.0.1:${port}`,
      "--health-listen",
      `127.0.0.1:${healthPort}`,
      "--min-port",
      String(range.min),
      "--max-port",
      String(range.max),
      "--allow-loopback-peers",
      "--kernel-path",
      "off",
      "--log-level",
      "warn",
      ...(process.env.TEST_UDP_IO ? ["--udp-io", process.env.TEST_UDP_IO] : []),
      ...(process.env.TEST_WORKERS ? ["--workers", process.env.TEST_WORKERS] : []),
    ];
    relay = spawnManaged("prlimit", args, { env });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await httpGet(healthPort, "/readyz", 500).catch(() => undefined);
      if (r?.status === 200) break;
      if (relay.exited || Date.now() > deadline) {
        throw new Error(`turnpike-relay not ready under prlimit:\n${relay.stderr}`);
      }
      await sleep(100);
    }
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("says at start which caps it lowered to fit the limit", () => {
    expect(relay!.stderr).toContain(
      `WARN lowered --max-connections 10000 to ${CONNECTIONS_CAP} and --health-max-connections 64 to ${HEALTH_CAP}: this process may open ${NOFILE} files (RLIMIT_NOFILE)`,
    );
  });

  it(`holds at most ${HEALTH_CAP} health connections, keeps serving Allocates and TCP clients, and closes idle and half-sent requests within a few seconds`, async () => {
    const halfSent = await hold(healthPort, "127.0.0.1", "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    const idle = await holdMany(300, healthPort, () => "127.0.0.1");
    const turn = await holdMany(100, port, (i) => `127.0.4.${1 + (i % 10)}`);
    try {
      await sleep(500);
      const healthOpen = [halfSent, ...idle].filter((h) => !h.closedByRelay).length;
      // UDP Allocates still get relay sockets, TCP accepts still work.
      const clients: TurnClientLite[] = [];
      const codes: number[] = [];
      try {
        for (let i = 0; i < 5; i++) {
          const creds = restCredentials(TOKEN, `u${i}`);
          const c = await TurnClientLite.open({
            port,
            username: creds.username,
            password: creds.credential,
          });
          clients.push(c);
          codes.push((await c.allocate()).code);
        }
        const tcp = await TurnClientLite.open({
          port,
          transport: "tcp",
          localAddress: "127.0.5.1",
        });
        clients.push(tcp);
        codes.push((await tcp.request(Method.Binding, () => {}, { auth: false })).code);
      } finally {
        for (const c of clients) c.close();
      }
      console.info(
        `[e2e-health-limits] ${healthOpen} of 301 health connections held; Allocates and a TCP Binding answered ${codes.join(", ")}`,
      );
      expect(healthOpen).toBeLessThanOrEqual(HEALTH_CAP);
      expect(codes).toEqual([0, 0, 0, 0, 0, 0]);
      // Every health connection the relay held is closed by it within a few seconds.
      const deadline = Date.now() + 10_000;
      while ([halfSent, ...idle].some((h) => !h.closedByRelay) && Date.now() < deadline) {
        await sleep(100);
      }
      const longest = Math.max(...[halfSent, ...idle].map((h) => h.closedAt - h.opened)) / 1000;
      console.info(
        `[e2e-health-limits] half-sent request closed after ${((halfSent.closedAt - halfSent.opened) / 1000).toFixed(1)} s, the longest idle one after ${longest.toFixed(1)} s`,
      );
      expect(longest).toBeLessThan(8);
      expect((await httpGet(healthPort, "/healthz")).status).toBe(200);
    } finally {
      for (const h of [halfSent, ...idle, ...turn]) h.socket.destroy();
    }
  }, 60_000);
});
