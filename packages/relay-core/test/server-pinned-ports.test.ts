// Pinned relay ports: credentials "<expiry>:<user>;port=<P>" get exactly port P (UDP and TCP
// allocations), only inside the pinned range, only for one user at a time; a newer allocation of
// the same user takes the port over at once; dynamic allocations never get a pinned port.
import { describe, expect, it } from "vitest";
import {
  CombinedCredentials,
  SharedSecretCredentials,
  StaticCredentials,
} from "../src/auth/credentials.js";
import { mintPinnedCredentials, pinnedCredentialSecret } from "../src/auth/pinned-username.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { readErrorCode } from "../src/codec/attributes.js";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { TurnServerOptions } from "../src/server/options.js";
import { Harness, type OutputOf, Response, TestClient, UNIX_T0, USERS } from "./harness.js";

const SECRET = "platform-token";
const PINNED = { min: 40000, max: 40009 };

function harness(options: Partial<TurnServerOptions> = {}): Harness {
  return new Harness({
    credentials: new CombinedCredentials([
      new StaticCredentials(USERS),
      new SharedSecretCredentials([SECRET]),
    ]),
    minPort: 50000,
    maxPort: 50009,
    pinnedPorts: PINNED,
    ...options,
  });
}

/** A UDP (or, with `connection`, TCP) client holding credentials pinned to `port`. */
function pinnedClient(
  h: Harness,
  user: string,
  port: number,
  at: { port?: number; connection?: number; ttl?: number; secret?: string } = {},
): TestClient {
  const c = mintPinnedCredentials(at.secret ?? SECRET, UNIX_T0, at.ttl ?? 3600, user, port);
  return new TestClient(h, {
    port: at.port ?? 40000,
    ...(at.connection !== undefined ? { connection: at.connection } : {}),
    username: c.username,
    password: c.password,
  });
}

const reason = (r: Response) => readErrorCode(r.msg)?.reason ?? "";

const tcp = (b: StunMessageBuilder) => {
  b.requestedTransport(TransportProtocol.Tcp);
};

/** Allocate a TCP relay (RFC 6062 §5.1) over the client's connection; returns the success. */
function allocateTcp(h: Harness, c: TestClient): Response {
  c.learn(c.ask(c.build(Method.Allocate, tcp)));
  c.send(c.buildSigned(Method.Allocate, tcp));
  const commands = h.drain();
  if (commands[0]?.type === "transmit") return c.verified(new Response(commands[0].data));
  const [open] = commands as OutputOf<"open-relay">[];
  expect(open).toMatchObject({ type: "open-relay", protocol: "tcp" });
  h.server.handleRelayBound(open!.relay, h.now);
  const [sent] = h.expectOutputs([
    { type: "transmit", errorCode: 0 },
    { type: "allocation-created", transport: "tcp" },
  ]) as [OutputOf<"transmit">];
  return c.verified(new Response(sent.data));
}

describe("pinned relay ports", () => {
  it("gives a UDP allocation exactly the port its credentials pin", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40007);
    const r = c.allocate();
    expect(r.code).toBe(0);
    expect(r.xorAddress(AttributeType.XorRelayedAddress)).toEqual({
      family: 4,
      address: "127.0.0.1",
      port: 40007,
    });
  });

  it("gives a TCP allocation (RFC 6062) exactly the port its credentials pin", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40002, { connection: 7 });
    const r = allocateTcp(h, c);
    expect(r.code).toBe(0);
    expect(r.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(40002);
  });

  it("pins the port on both families of a dual-stack allocation", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40001);
    const r = c.allocate({
      extra: (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 6),
    });
    expect(r.code).toBe(0);
    expect(c.relays.map((x) => [x.family, x.port])).toEqual([
      [4, 40001],
      [6, 40001],
    ]);
  });

  it("refuses a port outside the pinned range with 403 and a reason saying so", () => {
    const h = harness();
    for (const port of [39999, 40010, 50001]) {
      const r = pinnedClient(h, "acme-pg", port, { port: port }).allocate();
      expect(r.code).toBe(403);
      expect(reason(r)).toBe(
        `Forbidden: pinned port ${port} is outside this relay's pinned range 40000-40009`,
      );
    }
    expect(h.server.allocationCount).toBe(0);
  });

  it("refuses pinned credentials with 403 on a relay without a pinned range", () => {
    const h = harness({ pinnedPorts: undefined });
    const r = pinnedClient(h, "acme-pg", 40007).allocate();
    expect(r.code).toBe(403);
    expect(reason(r)).toBe(
      "Forbidden: pinned port 40007 refused, this relay has no pinned port range",
    );
  });

  it("refuses a username whose pin is no port with 403", () => {
    const h = harness();
    // Signed as pinned credentials are (a pin that is no port cannot come from mintPinnedCredentials).
    const c = mintRestCredentials(
      pinnedCredentialSecret(SECRET),
      UNIX_T0,
      3600,
      "acme-pg;port=040007",
    );
    const r = new TestClient(h, { username: c.username, password: c.password }).allocate();
    expect(r.code).toBe(403);
    expect(reason(r)).toMatch(/pinned port in USERNAME is outside/);
  });

  it("refuses another user's pin on a held port with 403, and the holder keeps it", () => {
    const h = harness();
    const holder = pinnedClient(h, "acme-pg", 40007, { port: 1 });
    expect(holder.allocate().code).toBe(0);
    const other = pinnedClient(h, "globex", 40007, { port: 2 });
    const r = other.allocate();
    expect(r.code).toBe(403);
    expect(reason(r)).toBe("Forbidden: pinned port 40007 is held by another user");
    expect(holder.refresh(600).code).toBe(0);
    expect(h.server.allocations(h.now).map((a) => [a.user, a.pinnedPort])).toEqual([
      ["acme-pg", 40007],
    ]);
  });

  it("refuses another user's pin on the other address family of a held port: one port, one user", () => {
    const h = harness();
    expect(pinnedClient(h, "acme-pg", 40007, { port: 1 }).allocate().code).toBe(0);
    const other = pinnedClient(h, "globex", 40007, { port: 2 }).allocate({
      extra: (b) => b.addressFamily(AttributeType.RequestedAddressFamily, 6),
    });
    expect(other.code).toBe(403);
    expect(reason(other)).toBe("Forbidden: pinned port 40007 is held by another user");
    // The same user's IPv6 allocation with that pin is its own (a tunnel per relay address).
    const v6 = pinnedClient(h, "acme-pg", 40007, { port: 3 }).allocate({
      extra: (b) => b.addressFamily(AttributeType.RequestedAddressFamily, 6),
    });
    expect(v6.code).toBe(0);
    expect(h.server.allocationCount).toBe(2);
  });

  it("hands the port to a newer allocation of the same user at once, releasing the stale one", () => {
    const h = harness();
    const stale = pinnedClient(h, "acme-pg", 40007, { port: 1 });
    expect(stale.allocate().code).toBe(0);
    const staleRelay = stale.relayFor(4);
    // The tunnel restarted: a new 5-tuple, fresh credentials (later expiry), the same user.
    h.advance(30);
    const fresh = pinnedClient(h, "acme-pg", 40007, { port: 2, ttl: 7200 });
    const alloc = (b: StunMessageBuilder) => {
      b.requestedTransport(TransportProtocol.Udp);
    };
    fresh.learn(fresh.ask(fresh.build(Method.Allocate, alloc)));
    fresh.send(fresh.buildSigned(Method.Allocate, alloc));
    // The stale socket closes BEFORE the new one binds the same port: the runtime executes
    // commands in order, so the bind finds the port free.
    const [, , open] = h.expectOutputs([
      { type: "close-relay", relay: staleRelay },
      { type: "allocation-ended", reason: "taken-over", client: { port: 1 } },
      { type: "open-relay", port: 40007 },
    ]) as [unknown, unknown, OutputOf<"open-relay">];
    h.server.handleRelayBound(open.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit", errorCode: 0 },
      { type: "allocation-created" },
    ]) as [OutputOf<"transmit">];
    expect(
      fresh.verified(new Response(sent.data)).xorAddress(AttributeType.XorRelayedAddress)?.port,
    ).toBe(40007);
    // The stale 5-tuple has no allocation any more (RFC 8656 §5: 437).
    expect(stale.refresh(600).code).toBe(437);
    expect(h.server.allocationCount).toBe(1);
  });

  it("takes a TCP allocation's port over from the same user's stale TCP allocation", () => {
    const h = harness();
    const stale = pinnedClient(h, "acme-pg", 40004, { connection: 1 });
    expect(allocateTcp(h, stale).code).toBe(0);
    const fresh = pinnedClient(h, "acme-pg", 40004, { connection: 2, port: 40001 });
    fresh.learn(fresh.ask(fresh.build(Method.Allocate, tcp)));
    fresh.send(fresh.buildSigned(Method.Allocate, tcp));
    const [, , open] = h.expectOutputs([
      { type: "close-relay" },
      { type: "allocation-ended", reason: "taken-over" },
      { type: "open-relay", protocol: "tcp", port: 40004 },
    ]) as [unknown, unknown, OutputOf<"open-relay">];
    h.server.handleRelayBound(open.relay, h.now);
    h.expectOutputs([{ type: "transmit", errorCode: 0 }, { type: "allocation-created" }]);
  });

  it("fails with 508 naming the port when the pinned port cannot be bound, without moving it", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40005);
    const alloc = (b: StunMessageBuilder) => {
      b.requestedTransport(TransportProtocol.Udp);
    };
    c.learn(c.ask(c.build(Method.Allocate, alloc)));
    c.send(c.buildSigned(Method.Allocate, alloc));
    const [open] = h.expectOutputs([{ type: "open-relay", port: 40005 }]) as [
      OutputOf<"open-relay">,
    ];
    h.server.handleRelayBindFailed(open.relay, h.now);
    const [sent] = h.expectOutputs([{ type: "transmit", errorCode: 508 }]) as [
      OutputOf<"transmit">,
    ];
    const r = c.verified(new Response(sent.data));
    expect(reason(r)).toBe("Insufficient Capacity: pinned port 40005 could not be bound");
    // The port is free again for the next attempt.
    expect(pinnedClient(h, "acme-pg", 40005, { port: 9 }).allocate().code).toBe(0);
  });

  it("satisfies EVEN-PORT with an even pinned port, and refuses an odd one or a reservation with 508", () => {
    const h = harness();
    const even = pinnedClient(h, "acme-pg", 40006, { port: 1 }).allocate({
      extra: (b) => b.evenPort(false),
    });
    expect(even.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(40006);
    expect(even.has(AttributeType.ReservationToken)).toBe(false);
    const odd = pinnedClient(h, "acme-pg", 40005, { port: 2 }).allocate({
      extra: (b) => b.evenPort(false),
    });
    expect(odd.code).toBe(508);
    expect(reason(odd)).toBe("Insufficient Capacity: EVEN-PORT refused, pinned port 40005 is odd");
    const reserve = pinnedClient(h, "acme-pg", 40002, { port: 3 }).allocate({
      extra: (b) => b.evenPort(true),
    });
    expect(reserve.code).toBe(508);
    expect(reason(reserve)).toMatch(/cannot reserve the next port/);
  });

  it("never gives a dynamic allocation a port of the pinned range, even when the dynamic range is full", () => {
    // Dynamic 50000-50009 right next to pinned 50010-50019.
    const h = harness({ pinnedPorts: { min: 50010, max: 50019 } });
    const ports: number[] = [];
    for (let i = 0; i < 10; i++) {
      const c = new TestClient(h, { port: 1000 + i, username: USERS[i % 3]![0] });
      const r = c.allocate({
        extra:
          i % 2 === 0
            ? (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 6)
            : undefined,
      });
      expect(r.code).toBe(0);
      ports.push(...c.relays.map((x) => x.port));
    }
    for (const p of ports) expect(p).toBeLessThanOrEqual(50009);
    // Full: the next dynamic Allocate gets 508, while a pinned one still gets its port.
    expect(new TestClient(h, { port: 2000, username: "carol" }).allocate().code).toBe(508);
    const pinned = pinnedClient(h, "acme-pg", 50015, { port: 2001 }).allocate();
    expect(pinned.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(50015);
  });

  it("releases the pin when the allocation ends, so another user may take the port", () => {
    const h = harness();
    const first = pinnedClient(h, "acme-pg", 40003, { port: 1 });
    expect(first.allocate().code).toBe(0);
    first.send(first.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 0)));
    h.expectOutputs([
      { type: "close-relay" },
      { type: "allocation-ended", reason: "deleted" },
      { type: "transmit", errorCode: 0 },
    ]);
    expect(pinnedClient(h, "globex", 40003, { port: 2 }).allocate().code).toBe(0);
  });

  it("still applies the peer policy to a pinned allocation", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40008);
    expect(c.allocate().code).toBe(0);
    // Loopback and private peers stay forbidden (403), a documentation peer the policy allows passes.
    expect(c.createPermission("127.0.0.1").code).toBe(403);
    expect(c.createPermission("10.0.0.5").code).toBe(403);
    expect(c.createPermission("198.51.100.10").code).toBe(0);
  });

  it("lists allocations with user, pin, transport, relayed and client addresses and peers", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40007, { port: 1234 });
    expect(c.allocate().code).toBe(0);
    expect(c.createPermission("198.51.100.10").code).toBe(0);
    const plain = new TestClient(h, { port: 4321, username: "bob" });
    expect(plain.allocate().code).toBe(0);
    const list = h.server.allocations(h.now);
    expect(list).toHaveLength(2);
    expect(list[0]).toMatchObject({
      user: "acme-pg",
      pinnedPort: 40007,
      transport: "udp",
      client: { transport: "udp", address: "192.0.2.10", port: 1234 },
      relayed: [{ family: 4, address: "127.0.0.1", port: 40007 }],
      peers: ["198.51.100.10"],
      createdAt: h.now,
      expiresAt: h.now + 600_000,
    });
    expect(list[1]).toMatchObject({ user: "bob", pinnedPort: undefined, peers: [] });
    // Nothing that could authenticate: no password or key anywhere in the description.
    expect(JSON.stringify(list)).not.toMatch(/pass|key/i);
  });
});

describe("revoked users", () => {
  it("get 403 'credentials revoked' for valid credentials, pinned or not, static or REST", () => {
    const h = harness({ revokedUsers: ["acme-pg", "bob"] });
    const pinned = pinnedClient(h, "acme-pg", 40007, { port: 1 }).allocate();
    expect(pinned.code).toBe(403);
    expect(reason(pinned)).toBe("Forbidden: credentials revoked");
    const rest = mintRestCredentials(SECRET, UNIX_T0, 3600, "acme-pg");
    expect(
      new TestClient(h, { port: 2, username: rest.username, password: rest.password }).allocate()
        .code,
    ).toBe(403);
    expect(new TestClient(h, { port: 3, username: "bob" }).allocate().code).toBe(403);
    expect(new TestClient(h, { port: 4, username: "alice" }).allocate().code).toBe(0);
    expect(h.server.stats.authFailures.revoked).toBe(3);
  });

  it("lose their live allocations as soon as the list names them, and come back when it no longer does", () => {
    const h = harness();
    const c = pinnedClient(h, "acme-pg", 40007, { port: 1 });
    expect(c.allocate().code).toBe(0);
    const other = new TestClient(h, { port: 2, username: "alice" });
    expect(other.allocate().code).toBe(0);
    expect(h.server.setRevokedUsers(["acme-pg"], h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: c.relayFor(4) },
      { type: "allocation-ended", reason: "revoked" },
    ]);
    expect(c.refresh(600).code).toBe(403);
    expect(other.refresh(600).code).toBe(0);
    h.server.setRevokedUsers([], h.now);
    expect(pinnedClient(h, "acme-pg", 40007, { port: 3 }).allocate().code).toBe(0);
  });
});
