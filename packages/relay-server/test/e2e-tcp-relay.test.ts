// RFC 6062 through a real turnpike-relay with relay-core's own TurnClient: a peer connects to
// the relayed TCP address (ConnectionAttempt), the client binds a data connection
// (ConnectionBind), and the pipe honours TCP half-close: a peer that sends its request and
// then FIN still gets the whole reply (RFC 6062 §5.5: each side's end is forwarded). The
// relayed address is the relay's side of every peer connection (§5.2), and only peers with a
// permission may connect to it (§5.3).
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { mintRestCredentials, readUint32 } from "@turnpike/relay-core";
import { restCredentials } from "@turnpike/test-support/credentials";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { rfc6062Download, rfc6062Echo } from "@turnpike/test-support/rfc6062";
import {
  AttributeType,
  Method,
  type TransportAddress,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { batchIoAvailability } from "@turnpike/udp-batch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-tcp-relay-token";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("RFC 6062 TCP relaying through turnpike-relay", () => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    range = reservePortRange(50);
    relay = await startTurnpike({ minPort: range.min, maxPort: range.max, token: TOKEN });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("delivers a peer's whole reply after the peer half-closes its side", async () => {
    const creds = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, "e2e");
    const payload = randomBytes(1 << 20);
    const reply = await rfc6062Echo({
      port: relay!.port,
      username: creds.username,
      password: creds.password,
      payload,
    });
    expect(reply.length).toBe(payload.length);
    expect(sha(reply)).toBe(sha(payload));
  });

  it("relays a dialled peer's bytes intact to a client that reads slowly", async () => {
    // The relay reads a peer it dialled into one reused buffer (stream/peers.ts): a write to
    // the client that cannot finish at once must keep its bytes while the next read arrives.
    const payload = randomBytes(8 << 20);
    const service = net.createServer((s) => {
      s.on("error", () => {});
      s.end(payload);
    });
    await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
    try {
      const creds = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, "download");
      const got = await rfc6062Download({
        port: relay!.port,
        username: creds.username,
        password: creds.password,
        peer: {
          family: 4,
          address: "127.0.0.1",
          port: (service.address() as net.AddressInfo).port,
        },
        pauseMs: 2,
      });
      expect(got.length).toBe(payload.length);
      expect(sha(got)).toBe(sha(payload));
    } finally {
      await new Promise<void>((r) => service.close(() => r()));
    }
  });

  /** A TCP client holding a TCP allocation (RFC 6062 §5.1); its relayed address. */
  async function tcpAllocation(user: string) {
    const creds = restCredentials(TOKEN, user);
    const c = await TurnClientLite.open({
      port: relay!.port,
      transport: "tcp",
      username: creds.username,
      password: creds.credential,
    });
    const r = await c.request(Method.Allocate, (b) => b.requestedTransport(TransportProtocol.Tcp));
    expect(r.code, r.reason).toBe(0);
    const relayed = (await import("@turnpike/relay-core")).readXorAddress(
      r.message,
      AttributeType.XorRelayedAddress,
    )!;
    return { c, relayed };
  }

  it("dials a Connect's peer from the allocation's relayed transport address", async () => {
    const seen: { address?: string; port?: number }[] = [];
    const service = net.createServer((s) => {
      seen.push({ address: s.remoteAddress, port: s.remotePort });
      s.on("error", () => {});
    });
    await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
    const { c, relayed } = await tcpAllocation("connect-source");
    try {
      const peer: TransportAddress = {
        family: 4,
        address: "127.0.0.1",
        port: (service.address() as net.AddressInfo).port,
      };
      expect((await c.createPermission(peer)).code).toBe(0);
      const connect = await c.request(Method.Connect, (b) =>
        b.xorAddress(AttributeType.XorPeerAddress, peer),
      );
      expect(connect.code, connect.reason).toBe(0);
      expect(readUint32(connect.message, AttributeType.ConnectionId)).toBeDefined();
      // The service's accept may be seen here after the Connect's answer: wait for it.
      for (let i = 0; i < 100 && seen.length === 0; i++)
        await new Promise((r) => setTimeout(r, 10));
      expect(seen).toHaveLength(1);
      expect(seen[0]?.address).toBe(relayed.address);
      // The relayed port too, where the native module loads (udp-batch's tcpBind): node:net
      // alone cannot set SO_REUSEPORT on a connecting socket.
      if (batchIoAvailability().available) expect(seen[0]?.port).toBe(relayed.port);
    } finally {
      c.close();
      await new Promise<void>((r) => service.close(() => r()));
    }
  });

  it("accepts peer connections on a relayed address only from peers with a permission", async () => {
    const { c, relayed } = await tcpAllocation("accept-permission");
    const peers: net.Socket[] = [];
    /** A peer connecting from `from`: "closed" when the relay refused it, else "open". */
    const dial = (from: string) =>
      new Promise<"open" | "closed">((resolve) => {
        const s = net.connect({ host: relayed.address, port: relayed.port, localAddress: from });
        peers.push(s);
        s.on("error", () => {});
        s.on("close", () => resolve("closed"));
        s.on("connect", () => setTimeout(() => resolve("open"), 500));
      });
    try {
      const permitted: TransportAddress = { family: 4, address: "127.0.0.2", port: 0 };
      expect((await c.createPermission(permitted)).code).toBe(0);
      // 127.0.0.1 holds no permission: refused, and the client hears nothing of it.
      expect(await dial("127.0.0.1")).toBe("closed");
      expect(c.connectionAttempts).toEqual([]);
      // 127.0.0.2 does: held for ConnectionBind, announced with a ConnectionAttempt.
      expect(await dial("127.0.0.2")).toBe("open");
      expect(c.connectionAttempts).toHaveLength(1);
      expect(c.connectionAttempts[0]?.address).toBe("127.0.0.2");
    } finally {
      for (const p of peers) p.destroy();
      c.close();
    }
  });
});
