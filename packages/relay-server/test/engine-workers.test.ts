// Two relay engines in this process as two workers of one relay (shared/: limits, secret,
// routed messages), each on its own listening ports so a test picks the engine a client
// reaches: a pinned relay port the same user's stale allocation holds on the other engine is
// released there and taken here, over UDP and over TCP (RFC 6062); another user's stays
// theirs; an RFC 6062 data connection that reaches the other engine is handed over to the
// one owning its CONNECTION-ID. Messages between the engines are structured clones delivered
// on a later turn of the event loop, as between worker threads.
import { createHash, randomBytes } from "node:crypto";
import { readXorAddress } from "@turnpike/relay-core";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
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
import { createSharedLimits, SharedLimits } from "../src/shared/shared-limits.js";
import { portSlice } from "../src/workers/pool.js";
import {
  eventually,
  type InProcessEngine,
  leftOver,
  openResources,
  startEngine,
  TOKEN,
  UDP_PATHS,
} from "./in-process.js";

/** Two workers' contexts, their messages routed to each other in this process. */
function linkedWorkers(range: { min: number; max: number }): WorkerContext[] {
  const count = 2;
  const init = createSharedLimits({
    workers: count,
    maxAllocations: 100,
    maxAllocationsPerUser: 100,
    maxConnections: 100,
    maxConnectionsPerIp: 100,
    unauthenticatedRate: 0,
  });
  const secret = new Uint8Array(randomBytes(32));
  const handlers: ((from: number, message: unknown) => void)[][] = [[], []];
  return [0, 1].map((index) => ({
    index,
    count,
    limits: new SharedLimits(init, index),
    secret,
    route: (to: number, message: unknown) => {
      const copy = structuredClone(message);
      setImmediate(() => {
        for (const h of handlers[to]!) h(index, copy);
      });
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

const clients: TurnClientLite[] = [];
let engines: InProcessEngine[] = [];
let range: PortRange | undefined;
let before: Record<string, number> = {};

/**
 * Two linked engines on `udpIo`; the reserved range's lower half relays dynamic allocations
 * (ten ports per engine), its upper half is the pinned range both honour.
 */
async function startWorkers(udpIo: "batch" | "dgram") {
  range = reservePortRange(40);
  before = openResources();
  const dynamic = { min: range.min, max: range.min + 19 };
  const pinnedPorts = `${range.min + 20}-${range.max}`;
  for (const w of linkedWorkers(dynamic)) {
    engines.push(await startEngine(udpIo, dynamic, ["--pinned-ports", pinnedPorts], w));
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
});
