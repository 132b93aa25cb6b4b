// Two relay engines in this process as two workers of one relay (shared/: shared memory,
// secret, routed messages), each on its own listening ports so a test picks the engine a
// client reaches: a pinned relay port the same user's stale allocation holds on the other
// engine is released there and taken here, over UDP and over TCP (RFC 6062), across protocols
// too; another user's stays theirs whatever the protocol; a RESERVATION-TOKEN is redeemed on
// the engine the Allocate reaches; an RFC 6062 data connection that reaches the other engine
// is handed over to the one owning its CONNECTION-ID, and stays counted against its source
// until that one says it authenticated; one handed to an engine that is restarting is closed;
// a user's bandwidth limit holds over both engines. Messages between the engines are
// structured clones delivered on a later turn of the event loop, as between worker threads.
import { createHash, randomBytes } from "node:crypto";
import dgram from "node:dgram";
import { bandwidthLimit, readBytes, readXorAddress } from "@turnpike/relay-core";
import { connectionRefused, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { rfc6062Echo } from "@turnpike/test-support/rfc6062";
import {
  AttributeType,
  Method,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { afterEach, describe, expect, it } from "vitest";
import { mintCredentials } from "../src/credentials.js";
import type { WorkerContext } from "../src/shared/context.js";
import { createSharedState, openSharedState } from "../src/shared/shared-state.js";
import { portSlice } from "../src/workers/port-slices.js";
import {
  eventually,
  type InProcessEngine,
  leftOver,
  openResources,
  startEngine,
  TOKEN,
  UDP_PATHS,
  USER,
} from "./in-process.js";

interface LinkOptions {
  readonly maxConnectionsPerIp?: number;
  /** Per-user bandwidth (bytes per second) held for both engines. */
  readonly maxBpsPerUser?: number;
  /**
   * A worker that is restarting: messages for it are lost, or (`bounce`) answered
   * "undeliverable" as the supervisor does (workers/routing.ts).
   */
  readonly restarting?: { readonly worker: number; readonly bounce: boolean };
}

/** Two workers' contexts, their messages routed to each other in this process. */
function linkedWorkers(
  range: { min: number; max: number },
  pinned: { min: number; max: number },
  o: LinkOptions = {},
): WorkerContext[] {
  const count = 2;
  const init = createSharedState({
    workers: count,
    maxAllocations: 100,
    maxAllocationsPerUser: 100,
    maxConnections: 100,
    maxConnectionsPerIp: o.maxConnectionsPerIp ?? 100,
    unauthenticatedRate: 0,
    pinnedPorts: pinned,
    dynamicPorts: range.max - range.min + 1,
    perUserBandwidth: o.maxBpsPerUser ? bandwidthLimit(o.maxBpsPerUser) : undefined,
  });
  const secret = new Uint8Array(randomBytes(32));
  const handlers: ((from: number, message: unknown) => void)[][] = [[], []];
  const deliver = (to: number, from: number, message: unknown) =>
    setImmediate(() => {
      for (const h of handlers[to]!) h(from, message);
    });
  return [0, 1].map((index) => ({
    index,
    count,
    shared: openSharedState(init, index),
    secret,
    route: (to: number, message: unknown) => {
      const copy = structuredClone(message);
      if (o.restarting?.worker !== to) deliver(to, index, copy);
      else if (o.restarting.bounce) deliver(index, to, { r: "undeliverable", message: copy });
    },
    onRoute: (h: (from: number, message: unknown) => void) => handlers[index]!.push(h),
    portSlice: portSlice(range.min, range.max, index, count),
  }));
}

function pinned(user: string, port: number) {
  const c = mintCredentials(TOKEN, {
    user,
    port,
    ttl: 600,
    uris: [],
    nowSeconds: Math.floor(Date.now() / 1000),
  });
  return { username: c.username, password: c.password };
}

/** A UDP (RFC 8656) or TCP (RFC 6062) allocation; its relayed port when it succeeded. */
async function allocate(
  engine: InProcessEngine,
  relayed: "udp" | "tcp",
  creds: { username: string; password: string },
) {
  const transport = relayed === "udp" ? "udp" : "tcp";
  const port = engine.relay.addresses()[transport][0]!.port;
  const client = await TurnClientLite.open({ port, transport, ...creds });
  clients.push(client);
  const r = await client.request(Method.Allocate, (b) =>
    b.requestedTransport(relayed === "udp" ? TransportProtocol.Udp : TransportProtocol.Tcp),
  );
  return {
    client,
    code: r.code,
    port: readXorAddress(r.message, AttributeType.XorRelayedAddress)?.port,
  };
}

/** A data connection to `engine` with a ConnectionBind for `id` (RFC 6062 §5.4). */
async function connectionBind(engine: InProcessEngine, id: number) {
  const port = engine.relay.addresses().tcp[0]!.port;
  const client = await TurnClientLite.open({ port, transport: "tcp", ...USER });
  clients.push(client);
  const answer = client
    .request(Method.ConnectionBind, (b) => b.uint32(AttributeType.ConnectionId, id))
    .then(
      (r) => r.code,
      (err: Error) => err.message,
    );
  return { client, answer };
}

const clients: TurnClientLite[] = [];
let engines: InProcessEngine[] = [];
let range: PortRange | undefined;
let before: Record<string, number> = {};

/**
 * Two linked engines on `udpIo`; the reserved range's lower half relays dynamic allocations
 * (ten ports per engine), its upper half is the pinned range both honour.
 */
async function startWorkers(udpIo: "batch" | "dgram", o: LinkOptions & { args?: string[] } = {}) {
  range = reservePortRange(40);
  before = openResources();
  const dynamic = { min: range.min, max: range.min + 19 };
  const pinned = { min: range.min + 20, max: range.max };
  const args = ["--pinned-ports", `${pinned.min}-${pinned.max}`, ...(o.args ?? [])];
  // Each engine applies its configuration's limits to the shared memory when it starts.
  if (o.maxConnectionsPerIp !== undefined) {
    args.push("--max-connections-per-ip", String(o.maxConnectionsPerIp));
  }
  for (const w of linkedWorkers(dynamic, pinned, o)) {
    engines.push(
      await startEngine(udpIo, dynamic, args, w, {
        maxBytesPerSecondPerUser: o.maxBpsPerUser,
      }),
    );
  }
  return { pin: range.min + 22, first: engines[0]!, second: engines[1]! };
}

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await Promise.all(engines.map((e) => e.relay.close()));
  engines = [];
  range?.release();
  range = undefined;
  // Both engines closed: nothing of theirs (nor of the clients) is left open.
  expect(await leftOver(before)).toEqual({});
});

describe.each(UDP_PATHS)("two engines as workers on the %s path", (udpIo) => {
  for (const relayed of ["udp", "tcp"] as const) {
    it(`releases a pinned ${relayed} port that the same user's stale allocation holds on the other engine, and takes it`, async () => {
      const { pin, first, second } = await startWorkers(udpIo);
      const stale = await allocate(first, relayed, pinned("acme", pin));
      expect(stale).toMatchObject({ code: 0, port: pin });
      // The tunnel restarted and came back through the other worker, with fresh credentials.
      const fresh = await allocate(second, relayed, pinned("acme", pin));
      expect(fresh).toMatchObject({ code: 0, port: pin });
      expect((await stale.client.refresh(600)).code).toBe(437);
      expect(first.lines.join("\n")).toContain(
        "pinned port taken over by a newer allocation of the same user",
      );
    });
  }

  it("leaves a pinned port another user holds on the other engine with that user", async () => {
    const { pin, first, second } = await startWorkers(udpIo);
    const holder = await allocate(first, "udp", pinned("acme", pin));
    expect(holder).toMatchObject({ code: 0, port: pin });
    const intruder = await allocate(second, "udp", pinned("globex", pin));
    expect(intruder.code).not.toBe(0);
    expect((await holder.client.refresh(600)).code).toBe(0);
  });

  it("hands an RFC 6062 data connection that reaches the other engine to the one owning its CONNECTION-ID", async () => {
    const { first, second } = await startWorkers(udpIo);
    const payload = randomBytes(256 << 10);
    const reply = await rfc6062Echo({
      port: first.relay.addresses().tcp[0]!.port,
      dataPort: second.relay.addresses().tcp[0]!.port,
      username: "alice",
      password: "in-process",
      payload,
    });
    const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
    expect(reply.length).toBe(payload.length);
    expect(sha(reply)).toBe(sha(payload));
    expect(second.lines.join("\n")).toContain("connection handed over");
    // The holder lets go of the data connection once the client closed it.
    await eventually("the held connection closes", async () => {
      second.stats.beforeCollect?.();
      return second.stats.connectionsActive === 0;
    });
  });

  it("refuses another user's pinned port over TCP while it is held over UDP on the other engine (and the reverse), and nothing of theirs listens on it", async () => {
    const { pin, first, second } = await startWorkers(udpIo);
    const holder = await allocate(first, "udp", pinned("acme", pin));
    expect(holder).toMatchObject({ code: 0, port: pin });
    expect((await allocate(second, "tcp", pinned("globex", pin))).code).toBe(403);
    expect((await allocate(first, "tcp", pinned("globex", pin))).code).toBe(403);
    expect(await connectionRefused(pin)).toBe(true);
    const tcpHolder = await allocate(second, "tcp", pinned("initech", pin + 1));
    expect(tcpHolder).toMatchObject({ code: 0, port: pin + 1 });
    expect((await allocate(first, "udp", pinned("globex", pin + 1))).code).toBe(403);
    expect((await holder.client.refresh(600)).code).toBe(0);
    expect((await tcpHolder.client.refresh(600)).code).toBe(0);
  });

  it("takes a pinned port over from the same user's stale allocation of the other protocol on the other engine", async () => {
    const { pin, first, second } = await startWorkers(udpIo);
    const stale = await allocate(first, "udp", pinned("acme", pin));
    expect(stale).toMatchObject({ code: 0, port: pin });
    const fresh = await allocate(second, "tcp", pinned("acme", pin));
    expect(fresh).toMatchObject({ code: 0, port: pin });
    expect((await stale.client.refresh(600)).code).toBe(437);
    expect((await fresh.client.refresh(600)).code).toBe(0);
  });

  it("redeems a RESERVATION-TOKEN on the engine the Allocate reaches, once (RFC 8656 §7.2)", async () => {
    const { first, second } = await startWorkers(udpIo);
    const udpPort = (e: InProcessEngine) => e.relay.addresses().udp[0]!.port;
    const maker = await TurnClientLite.open({ port: udpPort(first), ...USER });
    clients.push(maker);
    const made = await maker.request(Method.Allocate, (b) =>
      b.requestedTransport(TransportProtocol.Udp).evenPort(true),
    );
    expect(made.code).toBe(0);
    const even = readXorAddress(made.message, AttributeType.XorRelayedAddress)!.port;
    const token = readBytes(made.message, AttributeType.ReservationToken)!.slice();
    const redeem = async (engine: InProcessEngine) => {
      const c = await TurnClientLite.open({ port: udpPort(engine), ...USER });
      clients.push(c);
      const r = await c.request(Method.Allocate, (b) =>
        b.requestedTransport(TransportProtocol.Udp).bytes(AttributeType.ReservationToken, token),
      );
      return {
        code: r.code,
        port: readXorAddress(r.message, AttributeType.XorRelayedAddress)?.port,
      };
    };
    expect(await redeem(second)).toEqual({ code: 0, port: even + 1 });
    expect((await redeem(first)).code).toBe(508);
    expect((await redeem(second)).code).toBe(508);
  });

  it("keeps a data connection counted against its source when the engine it was handed to refuses its ConnectionBind", async () => {
    const { second } = await startWorkers(udpIo, { maxConnectionsPerIp: 2 });
    // Even CONNECTION-IDs are the first engine's: the second hands them over, the first
    // knows no such id and answers 400 (RFC 6062 §5.4). The connections stay open, unbound.
    for (const id of [2, 4]) expect(await (await connectionBind(second, id)).answer).toBe(400);
    const third = await TurnClientLite.open({
      port: second.relay.addresses().tcp[0]!.port,
      transport: "tcp",
    });
    clients.push(third);
    expect(await third.waitClosedByPeer()).toBe(true);
  });

  for (const bounce of [true, false]) {
    it(`closes a data connection handed to an engine that is restarting (${bounce ? "told at once" : "never answered"}), and frees its slot`, async () => {
      const { second } = await startWorkers(udpIo, {
        maxConnectionsPerIp: 1,
        restarting: { worker: 0, bounce },
        args: ["--tcp-idle-timeout", "1"],
      });
      const held = await connectionBind(second, 2);
      expect(await held.answer).toBe("connection closed by the server");
      const next = await TurnClientLite.open({
        port: second.relay.addresses().tcp[0]!.port,
        transport: "tcp",
      });
      clients.push(next);
      expect((await next.request(Method.Binding)).code).toBe(0);
    });
  }

  it("holds one user's bandwidth limit over its allocations on both engines", async () => {
    const rate = 64 << 10;
    const { first, second } = await startWorkers(udpIo, { maxBpsPerUser: rate });
    // A peer that counts what arrives, with room in its socket for all of it.
    const peer = dgram.createSocket({ type: "udp4", recvBufferSize: 4 << 20 });
    await new Promise<void>((r) => peer.bind(0, "127.0.0.1", r));
    let received = 0;
    peer.on("message", (m) => {
      received += m.length;
    });
    const at = { family: 4 as const, address: "127.0.0.1", port: peer.address().port };
    const senders: TurnClientLite[] = [];
    for (const engine of [first, second]) {
      const c = await TurnClientLite.open({ port: engine.relay.addresses().udp[0]!.port, ...USER });
      clients.push(c);
      expect((await c.allocate()).code).toBe(0);
      expect((await c.channelBind(0x4000, at)).code).toBe(0);
      senders.push(c);
    }
    // 200 KB at once, half through each engine: the burst (64 KiB) gets through, and what
    // refills meanwhile, not the burst of each engine (128 KiB).
    const payload = Buffer.alloc(1000, 7);
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      for (const c of senders) for (let j = 0; j < 5; j++) c.sendChannelData(0x4000, payload);
      await new Promise((r) => setImmediate(r));
    }
    const elapsed = performance.now() - started;
    let seen = -1;
    await eventually("the peer stops receiving", async () => {
      await new Promise((r) => setTimeout(r, 200));
      const settled = received === seen;
      seen = received;
      return settled;
    });
    peer.close();
    const lease = 16 << 10;
    expect(received).toBeLessThanOrEqual(rate + (rate * elapsed) / 1000 + 2 * lease);
    expect(received).toBeGreaterThan(rate / 2);
  });
});
