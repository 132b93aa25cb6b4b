/**
 * A scripted TURN server for TurnClient tests: answers built by hand with StunMessageBuilder,
 * signed (or not) as each test needs, to show what the client accepts and what it discards.
 */
import { expect } from "vitest";
import { longTermKeyMd5 } from "../src/auth/long-term-key.js";
import { TurnClient } from "../src/client/turn-client.js";
import type { TurnClientEvent, TurnClientOptions } from "../src/client/types.js";
import type { TransportAddress } from "../src/codec/address.js";
import { AttributeType, MessageClass } from "../src/codec/constants.js";
import { decodeStun, type StunMessage } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { SeededRandom } from "../src/rng.js";

export const REALM = "scripted";
export const KEY = longTermKeyMd5("alice", REALM, "secret");
export const RELAYED: TransportAddress = { family: 4, address: "203.0.113.7", port: 50000 };
export const MAPPED: TransportAddress = { family: 4, address: "198.51.100.2", port: 4444 };
export const PEER: TransportAddress = { family: 4, address: "192.0.2.77", port: 5432 };

export function newClient(options: Partial<TurnClientOptions> = {}): TurnClient {
  return new TurnClient({
    username: "alice",
    password: "secret",
    random: new SeededRandom("scripted"),
    transport: "tcp",
    keepaliveInterval: 0,
    ...options,
  });
}

/** The client's next output, which must be a transmit: the message it sent. */
export function sent(client: TurnClient): StunMessage {
  const out = client.pollOutput();
  if (out?.type !== "transmit") throw new Error(`nothing sent (next output: ${out?.type})`);
  const d = decodeStun(out.data);
  if (!d.ok) throw new Error(`client sent an invalid message: ${d.error}`);
  return d.message;
}

/** The client's next output, which must not be a transmit (undefined when there is none). */
export function nextEvent(client: TurnClient): TurnClientEvent | undefined {
  const out = client.pollOutput();
  if (out?.type === "transmit") throw new Error("a transmit where an event was expected");
  return out;
}

export function answer(
  request: StunMessage,
  cls: MessageClass,
  fill: (b: StunMessageBuilder) => void,
  key: Uint8Array | null = KEY,
  method = request.method,
): Uint8Array {
  const b = new StunMessageBuilder(method, cls, request.transactionId);
  fill(b);
  if (key) b.messageIntegrity(key);
  return b.fingerprint().build();
}

export function challenge(request: StunMessage, code = 401, nonce = "nonce-1"): Uint8Array {
  return answer(
    request,
    MessageClass.ErrorResponse,
    (b) => b.errorCode(code).string(AttributeType.Realm, REALM).string(AttributeType.Nonce, nonce),
    null,
  );
}

export function allocateSuccess(request: StunMessage, key = KEY): Uint8Array {
  return answer(
    request,
    MessageClass.SuccessResponse,
    (b) =>
      b
        .xorAddress(AttributeType.XorRelayedAddress, RELAYED)
        .uint32(AttributeType.Lifetime, 600)
        .xorAddress(AttributeType.XorMappedAddress, MAPPED),
    key,
  );
}

/** Drive a client through the 401 dance to "allocated" against the script. */
export function allocated(options: Partial<TurnClientOptions> = {}): TurnClient {
  const client = newClient(options);
  client.allocate(0);
  client.handleInput(challenge(sent(client)), 1);
  client.handleInput(allocateSuccess(sent(client)), 2);
  expect(client.state).toBe("allocated");
  while (client.pollOutput()) {
    // drain
  }
  return client;
}
