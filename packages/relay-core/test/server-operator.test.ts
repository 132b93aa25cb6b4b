// What the server tells its operator, and what the operator may do to live allocations: every
// refused request says why in its transmit output (for the runtime's log, never on the wire),
// and TurnServer.endAllocations ends a user's allocations, or one by its id, without revoking
// its credentials.
import { describe, expect, it } from "vitest";
import {
  CombinedCredentials,
  SharedSecretCredentials,
  StaticCredentials,
} from "../src/auth/credentials.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { AttributeType, Method } from "../src/codec/constants.js";
import type { Refusal } from "../src/server/types.js";
import { Harness, type OutputOf, Response, TestClient, UNIX_T0, USERS } from "./harness.js";

const SECRET = "operator-token";

function harness(options: ConstructorParameters<typeof Harness>[0] = {}): Harness {
  return new Harness({
    credentials: new CombinedCredentials([
      new StaticCredentials(USERS),
      new SharedSecretCredentials([SECRET]),
    ]),
    ...options,
  });
}

let nextPort = 1;

function restUser(h: Harness, user: string, ttl = 3600): TestClient {
  const c = mintRestCredentials(SECRET, UNIX_T0, ttl, user);
  return new TestClient(h, { port: nextPort++, username: c.username, password: c.password });
}

/** Sends `bytes` from `c`: exactly one transmit follows; its response and refusal. */
function answer(c: TestClient, bytes: Uint8Array): { code: number; refusal: Refusal | undefined } {
  c.send(bytes);
  const [t] = c.h.expectOutputs([{ type: "transmit" }]) as [OutputOf<"transmit">];
  return { code: new Response(t.data).code, refusal: t.refusal };
}

describe("refusals, as the runtime's log sees them", () => {
  it("leave the first 401 alone: it opens authentication, nothing was refused", () => {
    const h = harness();
    const c = new TestClient(h, { port: nextPort++ });
    expect(answer(c, c.build(Method.Allocate))).toEqual({ code: 401, refusal: undefined });
  });

  it("name the authentication failure and the USERNAME, never a password", () => {
    const h = harness();
    const wrong = new TestClient(h, { port: nextPort++, password: "not-alices" });
    wrong.learn(new Response(wrongFirst(wrong)));
    expect(answer(wrong, wrong.buildSigned(Method.Allocate))).toEqual({
      code: 401,
      refusal: { reason: "bad-integrity", username: "alice" },
    });
    const stranger = new TestClient(h, { port: nextPort++, username: "mallory", password: "x" });
    stranger.learn(new Response(wrongFirst(stranger)));
    expect(answer(stranger, stranger.buildSigned(Method.Allocate)).refusal).toEqual({
      reason: "unknown-user",
      username: "mallory",
    });
    const expired = restUser(h, "alice", -60);
    expired.learn(new Response(wrongFirst(expired)));
    expect(answer(expired, expired.buildSigned(Method.Allocate)).refusal).toEqual({
      reason: "expired",
      username: expired.username,
    });
    const stale = new TestClient(h, { port: nextPort++ });
    stale.learn(new Response(wrongFirst(stale)));
    h.advance(3600);
    expect(answer(stale, stale.buildSigned(Method.Allocate))).toEqual({
      code: 438,
      refusal: { reason: "stale-nonce", username: "alice" },
    });
  });

  it("name the peer and the policy rule that refused a permission, and send only 403 Forbidden", () => {
    const h = harness();
    const c = new TestClient(h, { port: nextPort++ });
    expect(c.allocate().code).toBe(0);
    const r = answer(
      c,
      c.buildSigned(Method.CreatePermission, (b) =>
        b.xorAddress(AttributeType.XorPeerAddress, { family: 4, address: "127.0.0.1", port: 0 }),
      ),
    );
    expect(r).toEqual({
      code: 403,
      refusal: { reason: "peer-policy", peer: "127.0.0.1", policy: "loopback", username: "alice" },
    });
  });

  it("say which limit refused an Allocate, a revoked user, and a request without an allocation", () => {
    const h = harness({ maxAllocationsPerUser: 1 });
    const first = restUser(h, "quota");
    expect(first.allocate().code).toBe(0);
    const second = restUser(h, "quota");
    second.learn(new Response(wrongFirst(second)));
    expect(answer(second, second.buildSigned(Method.Allocate, udp)).refusal).toEqual({
      reason: "user-quota",
      username: second.username,
    });
    const none = new TestClient(h, { port: nextPort++, username: "bob" });
    none.learn(new Response(wrongFirst(none)));
    expect(answer(none, none.buildSigned(Method.Refresh)).refusal).toEqual({
      reason: "no-allocation",
      username: "bob",
    });
    h.server.setRevokedUsers(["carol"], h.now);
    const carol = new TestClient(h, { port: nextPort++, username: "carol" });
    carol.learn(new Response(wrongFirst(carol)));
    expect(answer(carol, carol.buildSigned(Method.Allocate, udp))).toEqual({
      code: 403,
      refusal: { reason: "revoked", username: "carol" },
    });
  });
});

describe("TurnServer.endAllocations", () => {
  it("ends every allocation of a user named as the revocation list names it, and it may allocate again", () => {
    const h = harness();
    const staticAlice = new TestClient(h, { port: nextPort++ });
    const restAlice = restUser(h, "alice");
    const bob = new TestClient(h, { port: nextPort++, username: "bob" });
    for (const c of [staticAlice, restAlice, bob]) expect(c.allocate().code).toBe(0);
    expect(h.server.endAllocations({ users: ["rest:alice"] }, h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: restAlice.relayFor(4) },
      { type: "allocation-ended", reason: "operator" },
    ]);
    expect(h.server.endAllocations({ users: ["alice"] }, h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: staticAlice.relayFor(4) },
      { type: "allocation-ended", reason: "operator" },
    ]);
    expect(h.server.endAllocations({ users: ["alice", ""] }, h.now)).toBe(0);
    expect(h.server.endAllocations({ users: [] }, h.now)).toBe(0);
    // Not revoked: the same credentials allocate again.
    expect(restUser(h, "alice").allocate().code).toBe(0);
    expect(h.server.stats.allocationsActive).toBe(2);
  });

  it("ends one allocation by the id discovery shows, and nothing for an id it does not hold", () => {
    const h = harness();
    const a = new TestClient(h, { port: nextPort++ });
    const b = new TestClient(h, { port: nextPort++, username: "bob" });
    expect(a.allocate().code).toBe(0);
    expect(b.allocate().code).toBe(0);
    const id = h.server.allocations(h.now).find((x) => x.user === "bob")!.id;
    expect(h.server.endAllocations({ id }, h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: b.relayFor(4) },
      { type: "allocation-ended", reason: "operator" },
    ]);
    expect(h.server.endAllocations({ id }, h.now)).toBe(0);
    expect(h.server.allocations(h.now).map((x) => x.user)).toEqual(["alice"]);
  });

  it("leaves an Allocate still waiting for its relay socket to be answered", () => {
    const h = harness();
    const c = new TestClient(h, { port: nextPort++ });
    c.learn(new Response(wrongFirst(c)));
    c.send(c.buildSigned(Method.Allocate, udp));
    const [open] = h.expectOutputs([{ type: "open-relay" }]) as [OutputOf<"open-relay">];
    expect(h.server.endAllocations({ users: ["alice"] }, h.now)).toBe(0);
    h.server.handleRelayBound(open.relay, h.now);
    h.expectOutputs([{ type: "transmit" }, { type: "allocation-created" }]);
  });
});

function udp(b: Parameters<NonNullable<Parameters<TestClient["build"]>[1]>>[0]): void {
  b.requestedTransport(17);
}

/** The 401 to an Allocate without credentials (to learn the nonce from). */
function wrongFirst(c: TestClient): Uint8Array {
  c.send(c.build(Method.Allocate, udp));
  const [t] = c.h.expectOutputs([{ type: "transmit" }]) as [OutputOf<"transmit">];
  return t.data;
}
