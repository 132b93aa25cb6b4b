// Inputs that once crashed a relay or leaked its resources (found in review), kept as tests.
import { describe, expect, it } from "vitest";
import {
  CombinedCredentials,
  type CredentialStore,
  type KeyLookup,
  SharedSecretCredentials,
  StaticCredentials,
} from "../src/auth/credentials.js";
import { restPassword } from "../src/auth/rest-credentials.js";
import { readErrorCode } from "../src/codec/attributes.js";
import { AttributeType, MessageClass, Method, TransportProtocol } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { listenerId, type RelayId } from "../src/ids.js";
import { PeerAddressPolicy } from "../src/policy/peer-address-policy.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, REALM, TestClient, UNIX_T0, USERS } from "./harness.js";

describe("peer transport addresses", () => {
  it("refuses a channel to port 0 and drops a Send to port 0 (nothing a socket could send)", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission("198.51.100.1").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.1", 0).code).toBe(400);
    expect(c.sendIndication("198.51.100.1", 0, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["invalid-indication"]).toBe(1);
    // The same peer on a real port still works.
    expect(c.sendIndication("198.51.100.1", 5000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
  });
});

describe("client source addresses", () => {
  it("drops a request from a scoped IPv6 source instead of throwing while answering it", () => {
    const h = new Harness();
    const tid = new Uint8Array(12).fill(3);
    const request = new StunMessageBuilder(Method.Binding, 0, tid).build();
    expect(h.server.handleUdpClient(listenerId(0), request, "fe80::1%eth0", 5000, h.now)).toBe(
      RouteKind.None,
    );
    expect(h.drain()).toEqual([]);
    expect(h.server.stats.drops["unsupported-source"]).toBe(1);
  });
});

describe("unknown comprehension-required attributes (RFC 8489 §14)", () => {
  it("lists at most 16 of them, however many a datagram carries", () => {
    const b = new StunMessageBuilder(Method.Binding, 0, new Uint8Array(12));
    for (let t = 0x1000; t < 0x1000 + 16_000; t++) b.bytes(t, new Uint8Array(0));
    const decoded = decodeStun(b.build());
    expect(decoded.ok).toBe(true);
    if (decoded.ok) expect(decoded.message.unknownRequired.length).toBe(16);
  });
});

describe("TCP allocations (RFC 6062)", () => {
  it("refuse ChannelBind and drop Send indications: they relay over connections only", () => {
    const h = new Harness();
    const c = new TestClient(h, { connection: 9 });
    h.server.handleConnectionOpened(c.connection!, c.listener, "tcp", c.address, c.port);
    const tcp = (x: StunMessageBuilder) => {
      x.requestedTransport(TransportProtocol.Tcp);
    };
    c.learn(c.ask(c.build(Method.Allocate, tcp)));
    c.send(c.buildSigned(Method.Allocate, tcp));
    const [open] = h.expectOutputs([{ type: "open-relay", protocol: "tcp" }]) as unknown as [
      { relay: RelayId },
    ];
    h.server.handleRelayBound(open.relay, h.now);
    h.expectOutputs([{ type: "transmit", errorCode: 0 }, { type: "allocation-created" }]);
    expect(c.createPermission("198.51.100.1").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(400);
    expect(c.sendIndication("198.51.100.1", 5000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
  });
});

// ---------------------------------------------------------------------------------------------
// A relay shared by many users: no memory held for strangers before authentication, users of two
// credential stores kept apart, no relaying to the relay itself, no ConnectionBind probing.

const SECRET = "rest-secret";

/** A real store, with its lookups counted: what the server asks before it answers. */
class CountingStore implements CredentialStore {
  lookups = 0;
  constructor(readonly inner: CredentialStore) {}
  lookup(...args: Parameters<CredentialStore["lookup"]>): KeyLookup {
    this.lookups++;
    return this.inner.lookup(...args);
  }
}

/** `alice` as a TURN REST user (minted with SECRET), valid for an hour from the harness's T0. */
function restAlice(h: Harness, options: { address?: string; port?: number; connection?: number }) {
  const username = `${UNIX_T0 + 3600}:alice`;
  return new TestClient(h, { ...options, username, password: restPassword(SECRET, username) });
}

/** An Allocate with the given USERNAME, a nonce from a real 401 and integrity from a zero key. */
function strangerAllocate(c: TestClient, username: string): Uint8Array {
  const b = new StunMessageBuilder(Method.Allocate, MessageClass.Request, c.newTransactionId())
    .requestedTransport(TransportProtocol.Udp)
    .string(AttributeType.Username, username)
    .string(AttributeType.Realm, REALM)
    .string(AttributeType.Nonce, c.nonce ?? "")
    .messageIntegrity(new Uint8Array(16));
  return b.fingerprint().build();
}

describe("USERNAME flood before authentication (RFC 8489 §14.3)", () => {
  it("refuses a USERNAME of 509 bytes or more with 400 before deriving any key", () => {
    const store = new CountingStore(new SharedSecretCredentials([SECRET]));
    const h = new Harness({ credentials: store });
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate, (b) => b.requestedTransport(TransportProtocol.Udp))));
    const prefix = `${UNIX_T0 + 86400}:`;
    for (const length of [509, 60_000]) {
      const r = c.ask(strangerAllocate(c, prefix + "a".repeat(length - prefix.length)));
      expect(r.code, `USERNAME of ${length} bytes`).toBe(400);
    }
    expect(store.lookups).toBe(0);
    expect(h.server.stats.authFailures["oversized-attribute"]).toBe(2);
    // 508 bytes is a legal USERNAME: looked up, and refused for its integrity (401).
    const r = c.ask(strangerAllocate(c, prefix + "a".repeat(508 - prefix.length)));
    expect(r.code).toBe(401);
    expect(store.lookups).toBe(1);
  });

  it("keeps no key for made-up REST usernames whose MESSAGE-INTEGRITY fails, however many", () => {
    const rest = new SharedSecretCredentials([SECRET]);
    const h = new Harness({ credentials: rest, maxUnauthenticatedRate: 0 });
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate, (b) => b.requestedTransport(TransportProtocol.Udp))));
    for (let i = 0; i < 2000; i++) {
      const username = `${UNIX_T0 + 86400}:${i}-${"a".repeat(480)}`;
      expect(c.ask(strangerAllocate(c, username)).code).toBe(401);
    }
    expect(rest.cacheSize).toBe(0);
    expect(h.server.stats.authFailures["bad-integrity"]).toBe(2000);
    // The holder of real credentials gets in, and only then is a key cached.
    const alice = restAlice(h, { port: 40001 });
    expect(alice.allocate().code).toBe(0);
    expect(rest.cacheSize).toBe(1);
  });
});

describe("principals: a static user and a TURN REST user of the same name are two users", () => {
  const both = () =>
    new CombinedCredentials([new StaticCredentials(USERS), new SharedSecretCredentials([SECRET])]);

  it("refuses Refresh, CreatePermission and ChannelBind on static alice's allocation to REST alice (441)", () => {
    const h = new Harness({ credentials: both() });
    const alice = new TestClient(h, { port: 40000 });
    expect(alice.allocate().code).toBe(0);
    expect(alice.createPermission("198.51.100.1").code).toBe(0);
    // Same 5-tuple (a spoofed UDP source), REST credentials for a user also named alice.
    const mallory = restAlice(h, { port: 40000 });
    expect(mallory.refresh(3600).code).toBe(441);
    expect(mallory.refresh(0).code).toBe(441);
    expect(mallory.createPermission("198.51.100.2").code).toBe(441);
    expect(mallory.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(441);
    expect(h.server.stats.authFailures["wrong-credentials"]).toBe(4);
    // Static alice's allocation is untouched and still hers.
    expect(alice.refresh(600).code).toBe(0);
    expect(alice.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(0);
  });

  it("counts static and REST users of the same name against separate per-user quotas", () => {
    const h = new Harness({ credentials: both(), maxAllocationsPerUser: 1 });
    expect(new TestClient(h, { port: 40000 }).allocate().code).toBe(0);
    expect(restAlice(h, { port: 40001 }).allocate().code).toBe(0);
    expect(new TestClient(h, { port: 40002 }).allocate().code).toBe(486);
    expect(restAlice(h, { port: 40003 }).allocate().code).toBe(486);
  });

  it("refuses REST alice a ConnectionBind to static alice's peer connection (RFC 6062 §5.4)", () => {
    const h = new Harness({ credentials: both() });
    const alice = new TestClient(h, { connection: 9, port: 40000 });
    const relay = tcpAllocate(h, alice);
    expect(alice.createPermission("198.51.100.1").code).toBe(0);
    const id = h.server.handlePeerConnectionAccepted(relay, "198.51.100.1", 6000, h.now);
    expect(id).toBeDefined();
    h.expectOutputs([{ type: "transmit", method: Method.ConnectionAttempt }]);
    const mallory = restAlice(h, { connection: 10, port: 40001 });
    const r = mallory.request(Method.ConnectionBind, (b) =>
      b.uint32(AttributeType.ConnectionId, id!),
    );
    expect(r.code).toBe(400);
    // Alice herself binds it (her nonce is bound to her IP, so the data connection reuses it).
    const data = new TestClient(h, { connection: 11, port: 40002 });
    data.nonce = alice.nonce;
    data.send(
      data.buildSigned(Method.ConnectionBind, (b) => b.uint32(AttributeType.ConnectionId, id!)),
    );
    h.expectOutputs([
      { type: "transmit", errorCode: 0 },
      { type: "bind-connection", peerConnection: id, dataConnection: 11 },
    ]);
  });
});

describe("ConnectionBind probing (RFC 6062 §5.4)", () => {
  it("answers another user's CONNECTION-ID exactly like an unknown one", () => {
    const h = new Harness();
    const alice = new TestClient(h, { connection: 9, port: 40000 });
    const relay = tcpAllocate(h, alice);
    expect(alice.createPermission("198.51.100.1").code).toBe(0);
    const id = h.server.handlePeerConnectionAccepted(relay, "198.51.100.1", 6000, h.now)!;
    h.expectOutputs([{ type: "transmit", method: Method.ConnectionAttempt }]);
    const bob = new TestClient(h, { connection: 10, port: 40001, username: "bob" });
    const bind = (connectionId: number) => {
      const r = bob.request(Method.ConnectionBind, (b) =>
        b.uint32(AttributeType.ConnectionId, connectionId),
      );
      return {
        code: r.code,
        reason: readErrorCode(r.msg)?.reason,
        attributes: r.msg.attributes.map((a) => [a.type, a.length]),
      };
    };
    const unknown = bind(id ^ 0x5a5a5a5a);
    const othersId = bind(id);
    expect(unknown.code).toBe(400);
    expect(othersId).toEqual(unknown);
  });
});

describe("self-relay: the relay's own addresses as peers, refused unless allowSelf", () => {
  const OWN = "203.0.113.10";
  const selfPolicy = (extra: { allowSelf?: boolean } = {}) =>
    new PeerAddressPolicy({
      allow: ["198.51.100.0/24", "203.0.113.0/24", "0.0.0.0/0"],
      self: {
        addresses: [OWN],
        ports: { udp: [3478], tcp: [3478, 8080] },
        relayPorts: { min: 49152, max: 65535 },
      },
      ...extra,
    });

  it("refuses channels and drops Send indications to its own address outside the relay range", () => {
    const h = new Harness({ peerPolicy: selfPolicy() });
    const c = new TestClient(h);
    c.allocate();
    // A permission is per IP: the relay's address passes (other allocations live on it)...
    expect(c.createPermission(OWN).code).toBe(0);
    // ...its listening ports, sshd and anything else outside the relay range do not.
    expect(c.channelBind(0x4000, OWN, 3478).code).toBe(403);
    expect(c.channelBind(0x4001, OWN, 8080).code).toBe(403);
    expect(c.channelBind(0x4002, OWN, 22).code).toBe(403);
    expect(c.sendIndication(OWN, 22, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops["forbidden-peer"]).toBe(1);
    // Another allocation's relayed address on this relay (a relay/relay candidate pair): fine.
    expect(c.channelBind(0x4003, OWN, 50000).code).toBe(0);
    expect(c.sendIndication(OWN, 50001, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
    // "Any local address" is refused even though the allow list covers 0.0.0.0/0.
    expect(c.createPermission("0.0.0.0").code).toBe(403);
  });

  it("refuses an RFC 6062 Connect to its own sshd", () => {
    const h = new Harness({ peerPolicy: selfPolicy() });
    const c = new TestClient(h, { connection: 9 });
    tcpAllocate(h, c);
    expect(c.createPermission(OWN).code).toBe(0);
    const r = c.request(Method.Connect, (b) =>
      b.xorAddress(AttributeType.XorPeerAddress, { family: 4, address: OWN, port: 22 }),
    );
    expect(r.code).toBe(403);
  });

  it("lets everything through with allowSelf (--allow-self-peer)", () => {
    const h = new Harness({ peerPolicy: selfPolicy({ allowSelf: true }) });
    const c = new TestClient(h);
    c.allocate();
    expect(c.channelBind(0x4000, OWN, 22).code).toBe(0);
  });
});

/** A TCP allocation (RFC 6062 §5.1) for `c`, which must be on a connection; its relay id. */
function tcpAllocate(h: Harness, c: TestClient): RelayId {
  const tcp = (x: StunMessageBuilder) => {
    x.requestedTransport(TransportProtocol.Tcp);
  };
  c.learn(c.ask(c.build(Method.Allocate, tcp)));
  c.send(c.buildSigned(Method.Allocate, tcp));
  const [open] = h.expectOutputs([{ type: "open-relay", protocol: "tcp" }]) as unknown as [
    { relay: RelayId },
  ];
  h.server.handleRelayBound(open.relay, h.now);
  h.expectOutputs([{ type: "transmit", errorCode: 0 }, { type: "allocation-created" }]);
  return open.relay;
}
