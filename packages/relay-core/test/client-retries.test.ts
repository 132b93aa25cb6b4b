/**
 * When the TurnClient sends a request again, and when it gives up, against a scripted server:
 * retransmissions over UDP (RFC 8489 §6.2.1), 438 Stale Nonce (§9.2.5), 300 Try Alternate
 * (§10) and the release, a Refresh with LIFETIME 0 (RFC 8656 §8.1, §8.3).
 */
import { describe, expect, it } from "vitest";
import type { TurnClient } from "../src/client/turn-client.js";
import type { TurnClientEvent } from "../src/client/types.js";
import type { TransportAddress } from "../src/codec/address.js";
import { readString, readUint32, verifyMessageIntegrity } from "../src/codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../src/codec/constants.js";
import type { StunMessage } from "../src/codec/message.js";
import { allocated, answer, challenge, KEY, newClient, nextEvent, sent } from "./client-script.js";

/** Fire the client's timers up to `until` (inclusive): what it sent, and its events. */
function runTimers(client: TurnClient, until: number) {
  const sends: { at: number; bytes: Uint8Array }[] = [];
  const events: TurnClientEvent[] = [];
  for (let at = client.pollTimeout(); at !== undefined && at <= until; at = client.pollTimeout()) {
    client.handleTimeout(at);
    for (let out = client.pollOutput(); out !== undefined; out = client.pollOutput()) {
      if (out.type === "transmit") sends.push({ at, bytes: out.data });
      else events.push(out);
    }
  }
  return { sends, events };
}

describe("retransmissions over UDP (RFC 8489 §6.2.1)", () => {
  it("sends the very same request again, and takes an answer until Rm * RTO after the last send", () => {
    const client = newClient({ transport: "udp" });
    client.allocate(0);
    const first = sent(client);
    const { sends, events } = runTimers(client, 39_499);
    expect(sends.map((s) => s.at)).toEqual([500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    for (const s of sends) expect(s.bytes).toEqual(first.bytes);
    expect(events).toEqual([]);
    // 39,499 ms: the transaction is still open, so the challenge counts.
    client.handleInput(challenge(first), 39_499);
    expect(sent(client).transactionId).not.toEqual(first.transactionId);
    expect(client.stats).toMatchObject({ requests: 2, retransmissions: 6, timeouts: 0 });
  });

  it("ends the transaction at Rm * RTO after the last send, and drops the answer after it", () => {
    const client = newClient({ transport: "udp" });
    client.allocate(0);
    const first = sent(client);
    expect(runTimers(client, 39_500).events).toEqual([
      { type: "transaction-timeout", method: Method.Allocate },
    ]);
    client.handleInput(challenge(first), 39_501);
    expect(client.state).toBe("failed");
    expect(client.stats).toMatchObject({ requests: 1, timeouts: 1, dropped: 1 });
  });
});

describe("438 Stale Nonce (RFC 8489 §9.2.5)", () => {
  it("sends the request again once, in a new transaction signed with the 438's NONCE", () => {
    const client = allocated({ lifetime: 900 });
    client.refresh(10);
    const refresh = sent(client);
    client.handleInput(challenge(refresh, ErrorCode.StaleNonce, "nonce-2"), 11);
    const retry = sent(client);
    expect(client.pollOutput()).toBeUndefined();
    expect(retry.method).toBe(Method.Refresh);
    expect(retry.transactionId).not.toEqual(refresh.transactionId);
    expect(readString(retry, AttributeType.Nonce)).toBe("nonce-2");
    expect(readUint32(retry, AttributeType.Lifetime)).toBe(900);
    expect(verifyMessageIntegrity(retry, KEY)).toBe(true);
    // A late answer to the stale transaction is no answer to the retry.
    const late = answer(refresh, MessageClass.SuccessResponse, (b) =>
      b.uint32(AttributeType.Lifetime, 900),
    );
    client.handleInput(late, 12);
    expect(client.stats.dropped).toBe(1);
    expect(nextEvent(client)).toBeUndefined();
    client.handleInput(
      answer(retry, MessageClass.SuccessResponse, (b) => b.uint32(AttributeType.Lifetime, 900)),
      13,
    );
    expect(nextEvent(client)).toEqual({ type: "refreshed", lifetime: 900 });
    // Later requests are signed with the fresh nonce from the start.
    client.refresh(20);
    expect(readString(sent(client), AttributeType.Nonce)).toBe("nonce-2");
  });

  it("gives a request maxStaleNonceRetries retries in a row, then reports the 438", () => {
    const client = allocated({ maxStaleNonceRetries: 1 });
    client.refresh(10);
    client.handleInput(challenge(sent(client), ErrorCode.StaleNonce, "nonce-2"), 11);
    client.handleInput(challenge(sent(client), ErrorCode.StaleNonce, "nonce-3"), 12);
    expect(nextEvent(client)).toEqual({
      type: "refresh-failed",
      code: ErrorCode.StaleNonce,
      reason: "Stale Nonce",
    });
    expect(client.state).toBe("failed");
  });
});

describe("300 Try Alternate (RFC 8489 §10)", () => {
  const tryAlternate = (request: StunMessage, ...alternates: TransportAddress[]) =>
    answer(request, MessageClass.ErrorResponse, (b) => {
      b.errorCode(ErrorCode.TryAlternate);
      for (const a of alternates) b.address(AttributeType.AlternateServer, a);
    });

  it("reports the ALTERNATE-SERVER and sends nothing more to this server", () => {
    const client = newClient();
    client.allocate(0);
    client.handleInput(challenge(sent(client)), 1);
    const alt: TransportAddress = { family: 4, address: "198.51.100.9", port: 3478 };
    client.handleInput(tryAlternate(sent(client), alt), 2);
    expect(nextEvent(client)).toEqual({
      type: "allocate-failed",
      code: 300,
      reason: "Try Alternate",
      alternateServer: alt,
    });
    expect(client.state).toBe("failed");
    expect(client.pollTimeout()).toBeUndefined();
  });

  it("reports the first ALTERNATE-SERVER, the one of the request's family, when two come", () => {
    const client = newClient();
    client.allocate(0);
    client.handleInput(challenge(sent(client)), 1);
    const v4: TransportAddress = { family: 4, address: "198.51.100.9", port: 3478 };
    const v6: TransportAddress = { family: 6, address: "2001:db8::9", port: 3478 };
    client.handleInput(tryAlternate(sent(client), v4, v6), 2);
    expect(nextEvent(client)).toMatchObject({ type: "allocate-failed", alternateServer: v4 });
  });

  it("reports a 300 that names no ALTERNATE-SERVER as a plain failure", () => {
    const client = newClient();
    client.allocate(0);
    client.handleInput(tryAlternate(sent(client)), 1);
    expect(nextEvent(client)).toEqual({
      type: "allocate-failed",
      code: 300,
      reason: "Try Alternate",
    });
  });
});

describe("release: Refresh with LIFETIME 0 (RFC 8656 §8.1, §8.3)", () => {
  it("sends LIFETIME 0 over UDP until answered, and takes a 437 as released", () => {
    const client = allocated({ transport: "udp", lifetime: 900 });
    client.release(10);
    expect(client.state).toBe("released");
    const release = sent(client);
    expect(release.method).toBe(Method.Refresh);
    expect(readUint32(release, AttributeType.Lifetime)).toBe(0);
    const { sends } = runTimers(client, 1_510);
    expect(sends.map((s) => s.at)).toEqual([510, 1_510]);
    for (const s of sends) expect(s.bytes).toEqual(release.bytes);
    // RFC 8656 §8.3: the allocation was already gone, which is what was asked.
    client.handleInput(
      answer(release, MessageClass.ErrorResponse, (b) => b.errorCode(ErrorCode.AllocationMismatch)),
      1_600,
    );
    expect(nextEvent(client)).toEqual({ type: "released" });
    expect(client.pollTimeout()).toBeUndefined();
  });

  it("answers a 438 to the release with LIFETIME 0 again, signed with the fresh NONCE", () => {
    const client = allocated();
    client.release(10);
    client.handleInput(challenge(sent(client), ErrorCode.StaleNonce, "nonce-2"), 11);
    const retry = sent(client);
    expect(readUint32(retry, AttributeType.Lifetime)).toBe(0);
    expect(readString(retry, AttributeType.Nonce)).toBe("nonce-2");
    client.handleInput(
      answer(retry, MessageClass.SuccessResponse, (b) => b.uint32(AttributeType.Lifetime, 0)),
      12,
    );
    expect(nextEvent(client)).toEqual({ type: "released" });
  });

  it("is released all the same when the server never answers, once the transaction times out", () => {
    const client = allocated();
    client.release(10);
    sent(client);
    expect(runTimers(client, 39_510)).toEqual({
      sends: [],
      events: [{ type: "transaction-timeout", method: Method.Refresh }, { type: "released" }],
    });
    expect(client.pollTimeout()).toBeUndefined();
  });
});
