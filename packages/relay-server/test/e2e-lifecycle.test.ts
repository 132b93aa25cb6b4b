// End to end: the lifecycle of a real turnpike-relay process. SIGTERM drains (not ready, new
// allocations refused with 508 or redirected with 300 + ALTERNATE-SERVER, live allocations keep
// relaying) and exits 0 within the drain timeout; SIGINT closes at once; afterwards every port
// the process held can be bound again. A wrong option exits 2 with one line on stderr.
import dgram from "node:dgram";
import net from "node:net";
import { restCredentials } from "@turnpike/test-support/credentials";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep, spawnManaged, withTimeout } from "@turnpike/test-support/process";
import {
  alternateServer,
  type EchoPeer,
  startEchoPeer,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import {
  httpGet,
  startTurnpike,
  TURNPIKE_BIN,
  type TurnpikeHandle,
} from "@turnpike/test-support/turnpike";
import { afterEach, describe, expect, it } from "vitest";

const TOKEN = "e2e-lifecycle-token";
const CHANNEL = 0x4000;

function bindUdp(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket("udp4");
    s.once("error", (e) => {
      s.close();
      reject(e);
    });
    s.bind({ port, address: "127.0.0.1", exclusive: true }, () => s.close(() => resolve()));
  });
}

function bindTcp(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen({ port, host: "127.0.0.1", exclusive: true }, () => s.close(() => resolve()));
  });
}

/** Every socket the relay held is free again: its listener (UDP+TCP), health and relay ports. */
async function expectPortsFree(relay: TurnpikeHandle, relayPorts: number[]): Promise<void> {
  await bindUdp(relay.port);
  await bindTcp(relay.port);
  await bindTcp(relay.healthPort);
  for (const p of relayPorts) await bindUdp(p);
}

async function waitReadyz(relay: TurnpikeHandle, status: number, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    const r = await httpGet(relay.healthPort, "/readyz").catch(() => undefined);
    if (r?.status === status) return r;
    if (Date.now() > end) throw new Error(`/readyz never answered ${status} (last ${r?.status})`);
    await sleep(20);
  }
}

interface Live {
  client: TurnClientLite;
  peer: EchoPeer;
  relayedPort: number;
}

/** An allocation with a channel to an echo peer, checked to relay once. */
async function liveAllocation(relay: TurnpikeHandle, user: string): Promise<Live> {
  const peer = await startEchoPeer();
  const creds = restCredentials(TOKEN, user);
  const client = await TurnClientLite.open({
    port: relay.port,
    username: creds.username,
    password: creds.credential,
  });
  const a = await client.allocate();
  expect(a.code, a.reason).toBe(0);
  expect((await client.channelBind(CHANNEL, peer.address)).code).toBe(0);
  await expectRelays(client, "before");
  return { client, peer, relayedPort: a.relayed[0]!.port };
}

async function expectRelays(client: TurnClientLite, text: string): Promise<void> {
  const seen = client.channelData.length;
  client.sendChannelData(CHANNEL, Buffer.from(text));
  await client.waitForChannelData(seen + 1, 2000);
  expect(client.channelData.at(-1)?.data.toString()).toBe(text);
}

async function newAllocate(relay: TurnpikeHandle, user: string) {
  const creds = restCredentials(TOKEN, user);
  const c = await TurnClientLite.open({
    port: relay.port,
    username: creds.username,
    password: creds.credential,
  });
  try {
    return await c.allocate();
  } finally {
    c.close();
  }
}

describe("turnpike-relay process lifecycle", () => {
  let range: PortRange | undefined;
  let relay: TurnpikeHandle | undefined;
  const cleanups: (() => unknown)[] = [];

  afterEach(async () => {
    for (const c of cleanups.splice(0)) await c();
    await relay?.stop("SIGKILL", 1000);
    relay = undefined;
    range?.release();
    range = undefined;
  });

  it("drains on SIGTERM: not ready, new allocations get 508, live ones relay, exit 0 at the drain timeout", async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--drain-timeout", "3"],
    });
    const live = await liveAllocation(relay, "drain");
    cleanups.push(
      () => live.client.close(),
      () => live.peer.close(),
    );

    const t0 = performance.now();
    relay.process.child.kill("SIGTERM");
    const readyz = await waitReadyz(relay, 503);
    expect(JSON.parse(readyz.body).status).toBe("draining");
    expect((await httpGet(relay.healthPort, "/healthz")).status).toBe(200);

    const refused = await newAllocate(relay, "late");
    expect(refused.code).toBe(508);
    // RFC 8656 §7.2: refusing a new allocation leaves the live one alone, mid-drain.
    await expectRelays(live.client, "during drain");
    expect((await live.client.refresh(600)).code).toBe(0);
    await sleep(1000);
    await expectRelays(live.client, "still draining");
    expect(relay.process.exited).toBe(false);

    const exit = await withTimeout(relay.waitExit(), 6000, "relay did not exit after drain");
    const elapsed = performance.now() - t0;
    expect(exit).toEqual({ code: 0, signal: null });
    // It waited for the live allocation, but no longer than --drain-timeout (+ margin).
    expect(elapsed).toBeGreaterThan(2800);
    expect(elapsed).toBeLessThan(3000 + 2500);
    await expectPortsFree(relay, [live.relayedPort]);
  });

  it("redirects new allocations to --alternate-server while draining and exits once the last allocation is gone", async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--drain-timeout", "20", "--alternate-server", "127.0.0.1:3479"],
    });
    const live = await liveAllocation(relay, "alt");
    cleanups.push(
      () => live.client.close(),
      () => live.peer.close(),
    );

    relay.process.child.kill("SIGTERM");
    await waitReadyz(relay, 503);
    const redirected = await newAllocate(relay, "late");
    expect(redirected.code).toBe(300);
    expect(alternateServer(redirected)).toEqual({ family: 4, address: "127.0.0.1", port: 3479 });
    await expectRelays(live.client, "during drain");

    // Deleting the last allocation ends the drain long before the 20 s limit.
    const t0 = performance.now();
    expect((await live.client.refresh(0)).code).toBe(0);
    const exit = await withTimeout(
      relay.waitExit(),
      3000,
      "relay kept draining without allocations",
    );
    expect(exit).toEqual({ code: 0, signal: null });
    expect(performance.now() - t0).toBeLessThan(3000);
    await expectPortsFree(relay, [live.relayedPort]);
  });

  it("closes at once on SIGINT, ending client connections, and frees every port", async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--drain-timeout", "30"],
    });
    const live = await liveAllocation(relay, "int-udp");
    cleanups.push(
      () => live.client.close(),
      () => live.peer.close(),
    );
    const creds = restCredentials(TOKEN, "int-tcp");
    const tcp = await TurnClientLite.open({
      port: relay.port,
      transport: "tcp",
      username: creds.username,
      password: creds.credential,
    });
    cleanups.push(() => tcp.close());
    const tcpAlloc = await tcp.allocate();
    expect(tcpAlloc.code).toBe(0);

    const t0 = performance.now();
    relay.process.child.kill("SIGINT");
    const exit = await withTimeout(relay.waitExit(), 3000, "relay did not exit on SIGINT");
    expect(exit).toEqual({ code: 0, signal: null });
    // Live allocations do not hold a SIGINT (unlike the 30 s drain SIGTERM would do).
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(await tcp.waitClosedByPeer(1000)).toBe(true);
    await expectPortsFree(relay, [live.relayedPort, tcpAlloc.relayed[0]!.port]);
  });

  it("exits 2 with one line on stderr for a wrong option", async () => {
    for (const args of [
      ["--min-port", "70000"],
      ["--listen", "not-an-address"],
      ["--drain-timeout", "-1"],
    ]) {
      const proc = spawnManaged(process.execPath, [TURNPIKE_BIN, ...args], {
        env: { PATH: process.env.PATH ?? "", TURNPIKE_TOKEN: TOKEN },
      });
      const exit = await withTimeout(proc.waitExit(), 10_000, `turnpike-relay ${args.join(" ")}`);
      expect(exit.code, args.join(" ")).toBe(2);
      const lines = proc.stderr.trim().split("\n");
      expect(lines, proc.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^turnpike-relay: .*${args[0]}`));
      expect(proc.stdout).toBe("");
    }
  });
});
