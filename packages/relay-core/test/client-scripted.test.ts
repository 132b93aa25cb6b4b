/**
 * The TurnClient against a scripted server: answers built by hand with StunMessageBuilder, to
 * show what the client accepts and what it discards (RFC 8489 §6.3.3, §9.2.5).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { longTermKeyMd5 } from "../src/auth/long-term-key.js";
import { readString, verifyMessageIntegrity } from "../src/codec/attributes.js";
import { AttributeType, MessageClass, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { PeerConnectionId } from "../src/ids.js";
import {
  allocated,
  allocateSuccess,
  answer,
  challenge,
  KEY,
  MAPPED,
  newClient,
  nextEvent,
  PEER,
  REALM,
  RELAYED,
  sent,
} from "./client-script.js";

describe("TurnClient response checks", () => {
  it("drops a success whose MESSAGE-INTEGRITY was made with another key", () => {
    const client = newClient();
    client.allocate(0);
    client.handleInput(challenge(sent(client)), 1);
    const signed = sent(client);
    expect(verifyMessageIntegrity(signed, KEY)).toBe(true);
    client.handleInput(allocateSuccess(signed, longTermKeyMd5("alice", REALM, "guess")), 2);
    expect(client.state).toBe("allocating");
    expect(client.stats.dropped).toBe(1);
    // The same success without any MESSAGE-INTEGRITY is dropped too.
    client.handleInput(
      answer(
        signed,
        MessageClass.SuccessResponse,
        (b) => b.xorAddress(AttributeType.XorRelayedAddress, RELAYED),
        null,
      ),
      3,
    );
    expect(client.state).toBe("allocating");
    // The genuine one still counts: the transaction stayed open.
    client.handleInput(allocateSuccess(signed), 4);
    expect(client.state).toBe("allocated");
    expect(nextEvent(client)).toEqual({
      type: "allocated",
      relayed: RELAYED,
      mapped: MAPPED,
      lifetime: 600,
    });
  });

  it("drops responses to transactions it never started, or of another method", () => {
    const client = newClient();
    client.allocate(0);
    const request = sent(client);
    const stranger = new StunMessageBuilder(
      Method.Allocate,
      MessageClass.ErrorResponse,
      new Uint8Array(12).fill(9),
    )
      .errorCode(401)
      .string(AttributeType.Realm, REALM)
      .string(AttributeType.Nonce, "n")
      .build();
    client.handleInput(stranger, 1);
    client.handleInput(challenge(request, 401, "n"), 1);
    // A second answer to the same (finished) transaction is ignored.
    client.handleInput(challenge(request, 401, "n"), 1);
    const wrongMethod = answer(
      request,
      MessageClass.ErrorResponse,
      (b) => b.errorCode(400),
      null,
      Method.Refresh,
    );
    client.handleInput(wrongMethod, 1);
    expect(client.stats.dropped).toBe(3);
    expect(client.stats.requests).toBe(2);
  });

  it("drops a signed error response with a forged MESSAGE-INTEGRITY", () => {
    const client = allocated();
    client.refresh(10);
    const refresh = sent(client);
    client.handleInput(
      answer(refresh, MessageClass.ErrorResponse, (b) => b.errorCode(437), new Uint8Array(16)),
      11,
    );
    expect(client.state).toBe("allocated");
    client.handleInput(
      answer(refresh, MessageClass.ErrorResponse, (b) => b.errorCode(437)),
      12,
    );
    expect(client.state).toBe("failed");
  });

  it("drops a message whose FINGERPRINT does not match", () => {
    const client = newClient();
    client.allocate(0);
    const bytes = challenge(sent(client));
    bytes[bytes.length - 1]! ^= 1;
    client.handleInput(bytes, 1);
    expect(client.stats.requests).toBe(1);
    expect(client.stats.dropped).toBe(1);
  });

  it("never throws on arbitrary bytes, in any state, and decodeData only reads", () => {
    const states = [newClient(), allocated(), allocated({ requestedTransport: "tcp" })];
    states[2]!.bindChannel(PEER, 3);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), fc.integer({ min: 0, max: 2 }), (bytes, i) => {
        const client = states[i]!;
        client.decodeData(bytes);
        client.handleInput(bytes, 5);
        client.handleConnectionBindResponse(bytes);
        client.handleTimeout(6);
        while (client.pollOutput()) {
          // drain
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("never throws on mutations of genuine answers", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(),
        (which, edits, cut) => {
          const client = newClient();
          client.allocate(0);
          const request = sent(client);
          const bytes = which === 0 ? challenge(request) : allocateSuccess(request);
          for (const [at, value] of edits) bytes[at % bytes.length] = value;
          client.handleInput(bytes.subarray(0, bytes.length - (cut % 8)), 1);
          expect(["allocating", "failed", "allocated"]).toContain(client.state);
          // Only a genuine Allocate success can allocate (a 401 never does).
          if (client.state === "allocated") expect(which).toBe(1);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe("TurnClient RFC 6062 against a scripted server", () => {
  it("Connect yields the CONNECTION-ID of the success", () => {
    const client = allocated({ requestedTransport: "tcp" });
    client.connect(PEER, 10);
    const request = sent(client);
    expect(request.method).toBe(Method.Connect);
    client.handleInput(
      answer(request, MessageClass.SuccessResponse, (b) =>
        b.uint32(AttributeType.ConnectionId, 77),
      ),
      11,
    );
    expect(nextEvent(client)).toEqual({ type: "connected", peer: PEER, connectionId: 77 });
  });

  it("a ConnectionAttempt indication becomes an event; one without CONNECTION-ID is dropped", () => {
    const client = allocated({ requestedTransport: "tcp" });
    const indication = (withId: boolean) => {
      const b = new StunMessageBuilder(
        Method.ConnectionAttempt,
        MessageClass.Indication,
        new Uint8Array(12).fill(3),
      ).xorAddress(AttributeType.XorPeerAddress, PEER);
      if (withId) b.uint32(AttributeType.ConnectionId, 5);
      return b.fingerprint().build();
    };
    client.handleInput(indication(false), 10);
    expect(nextEvent(client)).toBeUndefined();
    client.handleInput(indication(true), 11);
    expect(nextEvent(client)).toEqual({ type: "connection-attempt", peer: PEER, connectionId: 5 });
    expect(client.lastActivity).toBe(11);
  });

  it("ConnectionBind: a stale nonce gets one signed retry with the fresh nonce, then gives up", () => {
    const client = allocated({ requestedTransport: "tcp" });
    const first = decodeStun(client.connectionBindRequest(9 as PeerConnectionId));
    if (!first.ok) throw new Error("invalid ConnectionBind");
    expect(readString(first.message, AttributeType.Nonce)).toBe("nonce-1");
    const result = client.handleConnectionBindResponse(challenge(first.message, 438, "nonce-2"));
    expect(result).toMatchObject({ ok: false, code: 438 });
    if (result.ok || result.retry === undefined) throw new Error("no retry");
    const retry = decodeStun(result.retry);
    if (!retry.ok) throw new Error("invalid retry");
    expect(readString(retry.message, AttributeType.Nonce)).toBe("nonce-2");
    expect(verifyMessageIntegrity(retry.message, KEY)).toBe(true);
    const again = client.handleConnectionBindResponse(challenge(retry.message, 438, "nonce-3"));
    expect(again).toEqual({ ok: false, code: 438, reason: "Stale Nonce" });
    // The control connection keeps its own nonce.
    client.refresh(20);
    expect(readString(sent(client), AttributeType.Nonce)).toBe("nonce-1");
  });

  it("ConnectionBind: a success must be signed with our key and answer our request", () => {
    const client = allocated({ requestedTransport: "tcp" });
    const request = decodeStun(client.connectionBindRequest(9 as PeerConnectionId));
    if (!request.ok) throw new Error("invalid ConnectionBind");
    const forged = answer(
      request.message,
      MessageClass.SuccessResponse,
      () => {},
      new Uint8Array(16),
    );
    expect(client.handleConnectionBindResponse(forged)).toMatchObject({ ok: false, code: 0 });
    const good = answer(request.message, MessageClass.SuccessResponse, () => {});
    expect(client.handleConnectionBindResponse(good)).toEqual({ ok: true, connectionId: 9 });
    // Answered once: a replay is unknown.
    expect(client.handleConnectionBindResponse(good)).toMatchObject({ ok: false, code: 0 });
  });
});
