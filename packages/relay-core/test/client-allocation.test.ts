import { describe, expect, it } from "vitest";
import { SharedSecretCredentials } from "../src/auth/credentials.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { hasAttribute, readString, readUint32 } from "../src/codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { CLIENT, Harness, PASSWORD, USERNAME } from "./client-harness.js";

const HOUR = 3_600_000;

function sentMethods(h: Harness): { method: number; signed: boolean; username?: string }[] {
  return h.sentByClient.map(({ bytes }) => {
    const d = decodeStun(bytes);
    if (!d.ok) throw new Error("client sent an invalid message");
    return {
      method: d.message.method,
      signed: hasAttribute(d.message, AttributeType.MessageIntegrity),
      username: readString(d.message, AttributeType.Username),
    };
  });
}

describe("TurnClient allocation against TurnServer", () => {
  it("allocates after the 401 challenge and reports the relayed and mapped addresses", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    expect(h.client.state).toBe("allocating");
    expect(h.runUntil(() => h.client.state === "allocated")).toBe(true);

    const [allocated] = h.eventsOf("allocated");
    expect(allocated?.relayed.address).toBe("127.0.0.1");
    expect(allocated?.relayed.port).toBeGreaterThanOrEqual(49152);
    expect(allocated?.mapped).toEqual({ family: 4, address: CLIENT.address, port: CLIENT.port });
    expect(allocated?.lifetime).toBe(600);
    expect(h.client.relayedAddress).toEqual(allocated?.relayed);
    expect(h.client.realm).toBe("turnpike.test");
    // RFC 8489 §9.2.3: the first Allocate carries no credentials, the retry is signed.
    const sent = sentMethods(h);
    expect(sent.slice(0, 2)).toEqual([
      { method: Method.Allocate, signed: false, username: undefined },
      { method: Method.Allocate, signed: true, username: USERNAME },
    ]);
    expect(h.server.allocationCount).toBe(1);
    // Two round trips of 5 ms each way.
    expect(h.events.find((e) => e.event.type === "allocated")?.at).toBe(20);
  });

  it("asks for LIFETIME and IPv4 by default, and the server's grant is what counts", () => {
    const h = new Harness({ client: { lifetime: 1800 } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    const d = decodeStun(h.sentByClient[1]!.bytes);
    expect(d.ok && readUint32(d.message, AttributeType.Lifetime)).toBe(1800);
    expect(d.ok && hasAttribute(d.message, AttributeType.RequestedAddressFamily)).toBe(false);
    expect(h.client.lifetime).toBe(1800);
  });

  it("fails with the server's error when the password is wrong", () => {
    const h = new Harness({ client: { password: "not-it" } });
    h.client.allocate(h.now);
    h.advance(5_000);
    expect(h.client.state).toBe("failed");
    expect(h.eventsOf("allocate-failed")).toEqual([
      { type: "allocate-failed", code: ErrorCode.Unauthorized, reason: "Unauthorized" },
    ]);
    // One challenge, one signed attempt, then it stops.
    expect(sentMethods(h).length).toBe(2);
    expect(h.client.pollTimeout()).toBeUndefined();
  });

  it("keeps the allocation alive across hours by refreshing before it expires", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.advance(3 * HOUR);
    expect(h.client.state).toBe("allocated");
    expect(h.server.allocationCount).toBe(1);
    expect(h.serverOutputs.some((c) => c.output.type === "allocation-ended")).toBe(false);
    // Lifetime 600 s, refreshed 60 s before its end: every 540 s plus the 10 ms round trip.
    const refreshes = h.eventsOf("refreshed");
    expect(refreshes.length).toBe(Math.floor((3 * HOUR - 20) / 540_010));
    expect(refreshes.every((r) => r.lifetime === 600)).toBe(true);
  });

  it("lets the allocation expire on the server when nobody drives the client", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    // The runtime stops calling handleTimeout: only the server's clock moves.
    h.server.handleTimeout(h.now + 600_001);
    expect(h.server.allocationCount).toBe(0);
  });

  it("refreshes a short lifetime at three quarters of it", () => {
    const h = new Harness({ lifetimes: { defaultAllocation: 100, maxAllocation: 100 } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    const allocatedAt = h.now;
    h.runUntil(() => h.eventsOf("refreshed").length > 0);
    expect(h.now - allocatedAt).toBeGreaterThanOrEqual(75_000);
    expect(h.now - allocatedAt).toBeLessThan(75_100);
    h.advance(HOUR);
    expect(h.server.allocationCount).toBe(1);
  });

  it("release sends Refresh LIFETIME=0 and the server deletes the allocation", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.client.createPermission("127.0.0.3", h.now);
    h.runUntil(() => h.eventsOf("permission-created").length > 0);
    h.client.release(h.now);
    expect(h.client.state).toBe("released");
    h.runUntil(() => h.eventsOf("released").length > 0);
    const ended = h.serverOutputs.find((c) => c.output.type === "allocation-ended")?.output;
    expect(ended?.type === "allocation-ended" && ended.reason).toBe("deleted");
    expect(h.server.allocationCount).toBe(0);
    const last = decodeStun(h.sentByClient.at(-1)!.bytes);
    expect(last.ok && last.message.method).toBe(Method.Refresh);
    expect(last.ok && readUint32(last.message, AttributeType.Lifetime)).toBe(0);
    // Nothing is refreshed any more.
    h.advance(HOUR);
    expect(h.client.pollTimeout()).toBeUndefined();
    expect(h.client.state).toBe("released");
  });

  it("recovers from stale nonces by retrying with the fresh one", () => {
    // Nonces live 30 s on the server; every refresh (each 540 s) meets a stale one.
    const h = new Harness({ lifetimes: { nonce: 30 }, client: { keepaliveInterval: 0 } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.client.createPermission("127.0.0.3", h.now);
    h.advance(HOUR);
    expect(h.client.state).toBe("allocated");
    expect(h.server.allocationCount).toBe(1);
    expect(h.server.stats.authFailures["stale-nonce"]).toBeGreaterThan(10);
    expect(h.eventsOf("refreshed").length).toBe(Math.floor(HOUR / 540_000));
    expect(h.eventsOf("permission-failed")).toEqual([]);
  });

  it("gives up after a bounded number of stale nonces in a row", () => {
    // A server whose nonces are stale at once: every signed request gets 438.
    const h = new Harness({ lifetimes: { nonce: 0.000001 }, client: { maxStaleNonceRetries: 2 } });
    h.client.allocate(h.now);
    h.advance(5_000);
    expect(h.client.state).toBe("failed");
    expect(h.eventsOf("allocate-failed")[0]?.code).toBe(ErrorCode.StaleNonce);
    // Unsigned, signed, then two stale-nonce retries.
    expect(h.sentByClient.length).toBe(4);
  });

  it("switches to renewed credentials, and back to the allocation's own when the server insists (441)", () => {
    const h = new Harness({
      users: [
        [USERNAME, PASSWORD],
        ["bob", "builder"],
      ],
      client: { keepaliveInterval: 0 },
    });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.client.setCredentials("bob", "builder");
    expect(h.client.usesAllocationCredentials).toBe(false);
    h.client.refresh(h.now);
    h.runUntil(() => h.eventsOf("refreshed").length > 0);
    const usernames = sentMethods(h)
      .filter((m) => m.method === Method.Refresh)
      .map((m) => m.username);
    // RFC 8656 §5: the server answers 441 to "bob", the retry uses "alice" who created it.
    expect(usernames).toEqual(["bob", USERNAME]);
    expect(h.client.state).toBe("allocated");
    expect(h.client.usesAllocationCredentials).toBe(true);
    // A new Allocate (after a release) uses the renewed credentials.
    h.client.release(h.now);
    h.runUntil(() => h.eventsOf("released").length > 0);
    const before = h.sentByClient.length;
    h.client.allocate(h.now);
    h.runUntil(() => h.eventsOf("allocated").length === 2);
    expect(
      sentMethods(h)
        .slice(before)
        .map((m) => m.username),
    ).toContain("bob");
  });

  it("falls back after a 441 to the renewed credentials the server last accepted, not expired ones", () => {
    // TURN REST: the server ties the allocation to the <user> part, so a renewed "alice" is
    // accepted in place; "mallory" gets 441 and the retry must use the renewed alice.
    const alice1 = mintRestCredentials("s", 0, 3600, "alice");
    const alice2 = mintRestCredentials("s", 1, 3600, "alice");
    const mallory = mintRestCredentials("s", 2, 3600, "mallory");
    const h = new Harness({
      server: { credentials: new SharedSecretCredentials(["s"]) },
      client: { username: alice1.username, password: alice1.password, keepaliveInterval: 0 },
    });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.client.setCredentials(alice2.username, alice2.password);
    h.client.refresh(h.now);
    h.runUntil(() => h.eventsOf("refreshed").length === 1);
    expect(h.client.usesAllocationCredentials).toBe(false);
    h.client.setCredentials(mallory.username, mallory.password);
    h.client.refresh(h.now);
    h.runUntil(() => h.eventsOf("refreshed").length === 2);
    const usernames = sentMethods(h)
      .filter((m) => m.method === Method.Refresh)
      .map((m) => m.username);
    expect(usernames).toEqual([alice2.username, mallory.username, alice2.username]);
    expect(h.client.usesAllocationCredentials).toBe(true);
  });

  it("says whether refresh() queued a Refresh: not before the allocation, not while one is in flight", () => {
    const h = new Harness({ client: { keepaliveInterval: 0 } });
    expect(h.client.refresh(h.now)).toBe(false);
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    const refreshes = () => sentMethods(h).filter((m) => m.method === Method.Refresh).length;
    expect(h.client.refresh(h.now)).toBe(true);
    h.pump();
    expect(refreshes()).toBe(1);
    // The first one is unanswered yet: a second call queues nothing.
    expect(h.client.refresh(h.now)).toBe(false);
    h.pump();
    expect(refreshes()).toBe(1);
    h.runUntil(() => h.eventsOf("refreshed").length === 1);
    expect(h.client.refresh(h.now)).toBe(true);
  });

  it("retransmits over UDP with RTO doubling until a dropped Allocate gets through", () => {
    // The first three datagrams towards the server are lost.
    const h = new Harness({
      fate: (direction, seq) => ({
        copies: direction === "to-server" && seq < 3 ? 0 : 1,
        delay: 0,
      }),
    });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    // Sent at 0, 500, 1500 (lost), 3500 (answered at 3510), then the signed one.
    expect(h.sentByClient.slice(0, 4).map((s) => s.at)).toEqual([0, 500, 1500, 3500]);
    expect(h.client.stats.retransmissions).toBe(3);
    expect(h.events.find((e) => e.event.type === "allocated")?.at).toBe(3520);
  });

  it("times out after Rc sends and a last wait of Rm * RTO, then fails", () => {
    const h = new Harness({ fate: () => ({ copies: 0, delay: 0 }) });
    h.client.allocate(h.now);
    h.advance(60_000);
    expect(h.sentByClient.map((s) => s.at)).toEqual([0, 500, 1500, 3500, 7500, 15500, 31500]);
    expect(h.events).toEqual([
      { at: 39_500, event: { type: "transaction-timeout", method: Method.Allocate } },
    ]);
    expect(h.client.state).toBe("failed");
  });

  it("uses smaller retransmission timers when configured", () => {
    const h = new Harness({
      fate: () => ({ copies: 0, delay: 0 }),
      client: { retransmission: { rto: 10, rc: 3, rm: 4 } },
    });
    h.client.allocate(h.now);
    h.advance(1_000);
    expect(h.sentByClient.map((s) => s.at)).toEqual([0, 10, 30]);
    expect(h.events[0]?.at).toBe(70);
  });

  it("over TCP sends each request once and times out after 39.5 s", () => {
    const h = new Harness({ transport: "tcp" });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    expect(h.client.stats.retransmissions).toBe(0);
    // A server that stops answering: the refresh times out once, and the allocation is failed.
    const silent = new Harness({ transport: "tcp" });
    silent.client.allocate(0);
    silent.client.handleTimeout(0);
    let sends = 0;
    for (let out = silent.client.pollOutput(); out; out = silent.client.pollOutput()) {
      if (out.type === "transmit") sends++;
    }
    silent.client.handleTimeout(39_499);
    expect(silent.client.pollOutput()).toBeUndefined();
    silent.client.handleTimeout(39_500);
    expect(silent.client.pollOutput()).toEqual({
      type: "transaction-timeout",
      method: Method.Allocate,
    });
    expect(sends).toBe(1);
    expect(silent.client.state).toBe("failed");
  });

  it("keeps the server's 5-tuple alive with Binding requests and sees a dead server", () => {
    const h = new Harness({ client: { keepaliveInterval: 15 } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.advance(60_000);
    const bindings = sentMethods(h).filter((m) => m.method === Method.Binding);
    expect(bindings.length).toBe(4);
    expect(h.client.lastActivity).toBeGreaterThan(h.now - 16_000);
    // The server goes silent: the keep-alive times out.
    h.fate = (direction) => ({ copies: direction === "to-client" ? 0 : 1, delay: 0 });
    const silentFrom = h.now;
    h.runUntil(() => h.eventsOf("transaction-timeout").length > 0);
    expect(h.eventsOf("transaction-timeout")[0]?.method).toBe(Method.Binding);
    expect(h.now - silentFrom).toBeLessThanOrEqual(15_000 + 39_500);
    expect(h.client.lastActivity).toBeLessThanOrEqual(silentFrom);
  });

  it("keeps alive with Refresh when asked, and so learns within one interval that a restarted server lost the allocation", () => {
    // A Binding keep-alive cannot tell: the restarted server answers it as if nothing happened.
    const binding = new Harness({ client: { keepaliveInterval: 15 } });
    binding.client.allocate(binding.now);
    binding.runUntil(() => binding.client.state === "allocated");
    binding.server.closeAll(binding.now);
    binding.advance(60_000);
    expect(binding.client.state).toBe("allocated");

    const h = new Harness({ client: { keepaliveInterval: 15, keepaliveRequest: "refresh" } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.advance(60_000);
    const sent = sentMethods(h);
    expect(sent.filter((m) => m.method === Method.Binding)).toEqual([]);
    expect(sent.filter((m) => m.method === Method.Refresh).length).toBe(4);
    expect(h.eventsOf("refreshed").length).toBe(4);
    // The server restarts between two keep-alives: its allocations are gone.
    h.server.closeAll(h.now);
    const restartedAt = h.now;
    h.runUntil(() => h.client.state !== "allocated");
    expect(h.client.state).toBe("failed");
    expect(h.eventsOf("refresh-failed")).toEqual([
      { type: "refresh-failed", code: ErrorCode.AllocationMismatch, reason: "Allocation Mismatch" },
    ]);
    expect(h.now - restartedAt).toBeLessThanOrEqual(15_000 + 1_000);
  });

  it("answers 437 to a Refresh for an allocation the server no longer has by failing", () => {
    const h = new Harness({ client: { keepaliveInterval: 0 } });
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    h.server.closeAll(h.now);
    h.client.refresh(h.now);
    h.runUntil(() => h.client.state !== "allocated");
    expect(h.client.state).toBe("failed");
    expect(h.eventsOf("refresh-failed")).toEqual([
      { type: "refresh-failed", code: ErrorCode.AllocationMismatch, reason: "Allocation Mismatch" },
    ]);
  });

  it("re-allocates from the failed state", () => {
    const h = new Harness({ client: { password: "wrong" } });
    h.client.allocate(h.now);
    h.advance(1_000);
    expect(h.client.state).toBe("failed");
    h.client.setCredentials(USERNAME, PASSWORD);
    h.client.allocate(h.now);
    expect(h.runUntil(() => h.client.state === "allocated")).toBe(true);
  });

  it("sends no request with a malformed class and never answers the server", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    h.runUntil(() => h.client.state === "allocated");
    for (const { bytes } of h.sentByClient) {
      const d = decodeStun(bytes);
      expect(d.ok && d.message.messageClass).toBe(MessageClass.Request);
      // RFC 8489 §14.7: every request ends with FINGERPRINT.
      expect(d.ok && hasAttribute(d.message, AttributeType.Fingerprint)).toBe(true);
    }
  });
});
