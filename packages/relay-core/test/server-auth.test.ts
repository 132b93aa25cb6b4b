// Long-term credentials (RFC 8489 §9.2), TURN REST usernames, and RFC 8656 §5 ownership (441).
import { describe, expect, it } from "vitest";
import { SharedSecretCredentials } from "../src/auth/credentials.js";
import { userHash } from "../src/auth/long-term-key.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { AttributeType, MessageClass, Method, PasswordAlgorithm } from "../src/codec/constants.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { RelayId } from "../src/ids.js";
import { Harness, REALM, Response, TestClient, UNIX_T0 } from "./harness.js";

describe("long-term credentials (RFC 8489 §9.2.4)", () => {
  it("unauthenticated Allocate gets 401 with REALM and NONCE", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.ask(c.build(Method.Allocate, (b) => b.requestedTransport(17)));
    expect(r.code).toBe(401);
    expect(r.string(AttributeType.Realm)).toBe(REALM);
    // RFC 8489 §9.2: the nonce cookie advertises PASSWORD-ALGORITHMS support.
    expect(r.string(AttributeType.Nonce)).toMatch(/^obMatJos2/);
    expect(r.has(AttributeType.PasswordAlgorithms)).toBe(true);
    expect(r.has(AttributeType.MessageIntegrity)).toBe(false);
    expect(h.server.stats.challenges).toBe(1);
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("stale nonce gets 438 with a fresh nonce that then works", () => {
    const h = new Harness({ lifetimes: { nonce: 60 } });
    const c = new TestClient(h);
    expect(c.ask(c.build(Method.Allocate)).code).toBe(401);
    c.learn(c.ask(c.build(Method.Allocate)));
    const old = c.nonce;
    h.advance(61);
    const r = c.ask(c.buildSigned(Method.Allocate, (b) => b.requestedTransport(17)));
    expect(r.code).toBe(438);
    c.learn(r);
    expect(c.nonce).not.toBe(old);
    expect(h.server.stats.authFailures["stale-nonce"]).toBe(1);
    expect(c.allocate().code).toBe(0);
  });

  it("a nonce issued to another client IP gets 438", () => {
    // Nonces are bound to the client IP (not the port: RFC 6062 data connections reuse them).
    const h = new Harness();
    const a = new TestClient(h);
    const b = new TestClient(h, { address: "192.0.2.77" });
    a.learn(a.ask(a.build(Method.Allocate)));
    b.nonce = a.nonce;
    const r = b.ask(b.buildSigned(Method.Allocate, (x) => x.requestedTransport(17)));
    expect(r.code).toBe(438);
    expect(h.server.stats.authFailures["invalid-nonce"]).toBe(1);
  });

  it("wrong password gets 401", () => {
    const h = new Harness();
    const c = new TestClient(h, { password: "not-alice-pass" });
    const r = c.allocate();
    expect(r.code).toBe(401);
    expect(h.server.stats.authFailures["bad-integrity"]).toBe(1);
    expect(h.server.stats.allocationsActive).toBe(0);
  });

  it("unknown user gets 401", () => {
    const h = new Harness();
    const c = new TestClient(h, { username: "mallory", password: "x" });
    expect(c.allocate().code).toBe(401);
    expect(h.server.stats.authFailures["unknown-user"]).toBe(1);
  });

  it("MESSAGE-INTEGRITY without USERNAME, REALM or NONCE gets 400", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.ask(c.build(Method.Allocate, (b) => b.messageIntegrity(c.key)));
    expect(r.code).toBe(400);
  });

  it("accepts a TURN REST username and refuses it once expired with 401", () => {
    const secret = "s3cret";
    const h = new Harness({ credentials: new SharedSecretCredentials([secret]) });
    const minted = mintRestCredentials(secret, UNIX_T0, 60, "alice");
    const c = new TestClient(h, { username: minted.username, password: minted.password });
    expect(c.allocate().code).toBe(0);
    const d = new TestClient(h, {
      port: 40001,
      username: minted.username,
      password: minted.password,
    });
    h.advance(61);
    const r = d.allocate();
    expect(r.code).toBe(401);
    expect(h.server.stats.authFailures.expired).toBe(1);
  });

  it("follows a wall-clock jump given with setUnixTimeOffset", () => {
    const secret = "s3cret";
    const h = new Harness({ credentials: new SharedSecretCredentials([secret]) });
    const minted = mintRestCredentials(secret, UNIX_T0, 60, "alice");
    h.server.setUnixTimeOffset((UNIX_T0 + 3600) * 1000 - h.now);
    const c = new TestClient(h, { username: minted.username, password: minted.password });
    expect(c.allocate().code).toBe(401);
  });

  it("SHA-256 password algorithm works: MESSAGE-INTEGRITY-SHA256 with PASSWORD-ALGORITHM", () => {
    const h = new Harness();
    const c = new TestClient(h, { algorithm: "sha256" });
    const r = c.allocate();
    expect(r.code).toBe(0);
    // The response is signed with the same attribute (RFC 8489 §9.2.4), checked by the client.
    expect(r.has(AttributeType.MessageIntegritySha256)).toBe(true);
    expect(r.has(AttributeType.MessageIntegrity)).toBe(false);
    expect(c.refresh(600).code).toBe(0);
  });

  it("bid-down (PASSWORD-ALGORITHMS not echoed as offered) gets 400", () => {
    const h = new Harness();
    const c = new TestClient(h, { algorithm: "sha256" });
    c.learn(c.ask(c.build(Method.Allocate)));
    // An attacker stripped SHA-256 from the 401: the client echoes MD5 only.
    c.offeredAlgorithms = Uint8Array.of(0, PasswordAlgorithm.Md5, 0, 0);
    const r = c.ask(c.buildSigned(Method.Allocate, (b) => b.requestedTransport(17)));
    expect(r.code).toBe(400);
    expect(h.server.stats.authFailures["bad-algorithm"]).toBe(1);
    expect(h.server.stats.allocationsActive).toBe(0);
  });
});

describe("username anonymity: USERHASH (RFC 8489 §9.2.1, §14.4)", () => {
  const anonymous = (c: TestClient, user: Uint8Array, key: Uint8Array) =>
    new StunMessageBuilder(Method.Allocate, MessageClass.Request, c.newTransactionId())
      .requestedTransport(17)
      .bytes(AttributeType.Userhash, user)
      .string(AttributeType.Realm, REALM)
      .string(AttributeType.Nonce, c.nonce ?? "no-nonce")
      .messageIntegrity(key)
      .fingerprint()
      .build();

  it("offers username anonymity in the nonce cookie to a request with USERHASH, and only to it", () => {
    const h = new Harness();
    const c = new TestClient(h);
    // "AAAB": PASSWORD-ALGORITHMS only; "AAAD": username anonymity too (RFC 8489 §18.1).
    const plain = c.ask(c.build(Method.Allocate));
    expect(plain.string(AttributeType.Nonce)).toMatch(/^obMatJos2AAAB/);
    const asking = c.ask(
      c.build(Method.Allocate, (b) => b.bytes(AttributeType.Userhash, userHash("alice", REALM))),
    );
    expect(asking.code).toBe(401);
    expect(asking.string(AttributeType.Nonce)).toMatch(/^obMatJos2AAAD/);
  });

  it("authenticates a static user by USERHASH alone, and the allocation is that user's", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(
      c.ask(
        c.build(Method.Allocate, (b) => b.bytes(AttributeType.Userhash, userHash("alice", REALM))),
      ),
    );
    c.send(anonymous(c, userHash("alice", REALM), c.key));
    const [open] = h.expectOutputs([{ type: "open-relay" }]) as unknown as [{ relay: RelayId }];
    h.server.handleRelayBound(open.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit", errorCode: 0 },
      { type: "allocation-created", username: "alice" },
    ]) as unknown as [{ data: Uint8Array }];
    c.verified(new Response(sent.data));
    expect(h.server.allocations(h.now).map((a) => a.user)).toEqual(["alice"]);
    // The same principal: her requests by USERNAME act on it (no 441).
    expect(c.refresh(600).code).toBe(0);
  });

  it("answers 401 to a USERHASH no known user has (a TURN REST username cannot be found by it)", () => {
    const secret = "s3cret";
    const h = new Harness({ credentials: new SharedSecretCredentials([secret]) });
    const minted = mintRestCredentials(secret, UNIX_T0, 600, "alice");
    const c = new TestClient(h, { username: minted.username, password: minted.password });
    c.learn(c.ask(c.build(Method.Allocate)));
    const r = c.ask(anonymous(c, userHash(minted.username, REALM), c.key));
    expect(r.code).toBe(401);
    expect(r.string(AttributeType.Nonce)).toMatch(/^obMatJos2AAAD/);
    expect(h.server.stats.authFailures["unknown-user"]).toBe(1);
    // A USERHASH that is no SHA-256 (32 bytes) is malformed: 400.
    expect(c.ask(anonymous(c, new Uint8Array(16), c.key)).code).toBe(400);
    expect(h.server.stats.allocationsActive).toBe(0);
  });
});

describe("allocation ownership (RFC 8656 §5)", () => {
  it("441 when another user touches an allocation", () => {
    const h = new Harness();
    const alice = new TestClient(h);
    expect(alice.allocate().code).toBe(0);
    // Bob, from alice's very 5-tuple (same address and port).
    const bob = new TestClient(h, { username: "bob" });
    const r = bob.refresh(600);
    expect(r.code).toBe(441);
    expect(bob.createPermission("198.51.100.1").code).toBe(441);
    expect(h.server.stats.authFailures["wrong-credentials"]).toBe(2);
    expect(alice.refresh(600).code).toBe(0);
  });

  it("answers a new Allocate from another user on a 5-tuple in use with 437 (taken), not 441, and leaves the allocation alone", () => {
    const h = new Harness();
    const alice = new TestClient(h);
    expect(alice.allocate().code).toBe(0);
    // Bob on alice's 5-tuple, as a program that got her stale allocation's ephemeral port.
    const bob = new TestClient(h, { username: "bob" });
    expect(bob.allocate().code).toBe(437);
    expect(h.server.stats.authFailures["wrong-credentials"]).toBe(0);
    expect(alice.refresh(600).code).toBe(0);
  });
});
