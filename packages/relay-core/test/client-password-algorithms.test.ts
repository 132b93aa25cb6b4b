// PASSWORD-ALGORITHMS from the client's side (RFC 8489 §9.2.1, §9.2.3, §9.2.5): SHA-256 when
// the server offers it, the server's list echoed byte for byte, and no retry when the list
// was stripped on the way, so the bid-down protection works from our side too.
import { describe, expect, it } from "vitest";
import { StaticCredentials } from "../src/auth/credentials.js";
import { longTermKeyMd5, longTermKeySha256 } from "../src/auth/long-term-key.js";
import { NONCE_COOKIE } from "../src/auth/nonce.js";
import { TurnClient } from "../src/client/turn-client.js";
import type { TurnClientOutput } from "../src/client/types.js";
import {
  hasAttribute,
  readBytes,
  readErrorCode,
  readPasswordAlgorithm,
  readString,
  verifyMessageIntegrity,
} from "../src/codec/attributes.js";
import { AttributeType, MessageClass, Method, PasswordAlgorithm } from "../src/codec/constants.js";
import { decodeStun, type StunMessage } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { listenerId } from "../src/ids.js";
import { PeerAddressPolicy } from "../src/policy/peer-address-policy.js";
import { SeededRandom } from "../src/rng.js";
import { TurnServer } from "../src/server/server.js";
import { Harness, PASSWORD, REALM, USERNAME } from "./client-harness.js";

function decode(bytes: Uint8Array): StunMessage {
  const d = decodeStun(bytes);
  if (!d.ok) throw new Error(`invalid message: ${d.error}`);
  return d.message;
}

/** A client talking to a scripted server over TCP (no retransmissions, no keep-alives). */
function scriptedClient(): TurnClient {
  return new TurnClient({
    username: USERNAME,
    password: PASSWORD,
    random: new SeededRandom("password-algorithms"),
    transport: "tcp",
    keepaliveInterval: 0,
  });
}

function transmitted(client: TurnClient): StunMessage | undefined {
  for (let out = client.pollOutput(); out !== undefined; out = client.pollOutput()) {
    if (out.type === "transmit") return decode(out.data);
  }
  return undefined;
}

/** A 401 to `request` with REALM, NONCE and, when given, PASSWORD-ALGORITHMS. */
function challenge(request: StunMessage, nonce: string, algorithms?: number[]): Uint8Array {
  const b = new StunMessageBuilder(
    request.method,
    MessageClass.ErrorResponse,
    request.transactionId,
  )
    .errorCode(401)
    .string(AttributeType.Realm, REALM)
    .string(AttributeType.Nonce, nonce);
  if (algorithms !== undefined) b.passwordAlgorithms(algorithms);
  return b.fingerprint().build();
}

describe("TurnClient PASSWORD-ALGORITHMS (RFC 8489 §9.2.1)", () => {
  it("answers a server offering SHA-256 with PASSWORD-ALGORITHM SHA-256, its list echoed unchanged", () => {
    const h = new Harness();
    h.client.allocate(h.now);
    expect(h.runUntil(() => h.client.state === "allocated")).toBe(true);
    const offered = h.serverOutputs
      .map((o) => o.output)
      .find((o) => o.type === "transmit" && o.errorCode === 401);
    if (offered?.type !== "transmit") throw new Error("no 401 from the server");
    const list = readBytes(decode(offered.data), AttributeType.PasswordAlgorithms);
    expect(list).toBeDefined();
    const signed = decode(h.sentByClient[1]!.bytes);
    expect(readPasswordAlgorithm(signed)).toBe(PasswordAlgorithm.Sha256);
    expect(readBytes(signed, AttributeType.PasswordAlgorithms)).toEqual(list);
    // The key is the SHA-256 one (RFC 8489 §18.5.1.2), not MD5's.
    expect(verifyMessageIntegrity(signed, longTermKeySha256(USERNAME, REALM, PASSWORD))).toBe(true);
    expect(verifyMessageIntegrity(signed, longTermKeyMd5(USERNAME, REALM, PASSWORD))).toBe(false);
  });

  it("keeps MD5 and sends no PASSWORD-ALGORITHM(S) to a server that offers no list (coturn, RFC 5389)", () => {
    const client = scriptedClient();
    client.allocate(0);
    client.handleInput(challenge(transmitted(client)!, "plain-nonce"), 1);
    const signed = transmitted(client)!;
    expect(hasAttribute(signed, AttributeType.PasswordAlgorithm)).toBe(false);
    expect(hasAttribute(signed, AttributeType.PasswordAlgorithms)).toBe(false);
    expect(verifyMessageIntegrity(signed, longTermKeyMd5(USERNAME, REALM, PASSWORD))).toBe(true);
  });

  it("chooses MD5 from a list without SHA-256, and still echoes the list", () => {
    const client = scriptedClient();
    client.allocate(0);
    client.handleInput(challenge(transmitted(client)!, "n", [PasswordAlgorithm.Md5]), 1);
    const signed = transmitted(client)!;
    expect(readPasswordAlgorithm(signed)).toBe(PasswordAlgorithm.Md5);
    expect(Array.from(readBytes(signed, AttributeType.PasswordAlgorithms)!)).toEqual([0, 1, 0, 0]);
    expect(verifyMessageIntegrity(signed, longTermKeyMd5(USERNAME, REALM, PASSWORD))).toBe(true);
  });

  it("does not retry when the nonce cookie announces PASSWORD-ALGORITHMS but the list is missing (§9.2.5)", () => {
    const client = scriptedClient();
    client.allocate(0);
    // "obMatJos2" + "AAAB": the Password algorithms feature bit.
    client.handleInput(challenge(transmitted(client)!, `${NONCE_COOKIE}AAAB-rest-of-nonce`), 1);
    const out: TurnClientOutput[] = [];
    for (let o = client.pollOutput(); o !== undefined; o = client.pollOutput()) out.push(o);
    expect(out.map((o) => o.type)).toEqual(["allocate-failed"]);
    expect(out[0]).toMatchObject({ code: 401 });
    expect(client.state).toBe("failed");
  });

  it("echoes a list trimmed on the way as it arrived, so the server refuses the bid-down with 400", () => {
    const now = 1000;
    const server = new TurnServer({
      realm: REALM,
      credentials: new StaticCredentials([[USERNAME, PASSWORD]]),
      random: new SeededRandom("bid-down server"),
      relayAddresses: { ip4: { bind: "127.0.0.1" } },
      peerPolicy: new PeerAddressPolicy({ allowLoopback: true }),
    });
    const listener = listenerId(0);
    const toServer = (bytes: Uint8Array): StunMessage => {
      server.handleUdpClient(listener, bytes, "192.0.2.1", 4000, now);
      const out = server.pollOutput();
      if (out?.type !== "transmit") throw new Error(`server answered ${out?.type}`);
      return decode(out.data);
    };
    const client = scriptedClient();
    client.allocate(now);
    const first = toServer(transmitted(client)!.bytes);
    const nonce = readString(first, AttributeType.Nonce)!;
    // An attacker removes SHA-256 from the server's list, hoping for MD5.
    client.handleInput(challenge(first, nonce, [PasswordAlgorithm.Md5]), now);
    const signed = transmitted(client)!;
    expect(readPasswordAlgorithm(signed)).toBe(PasswordAlgorithm.Md5);
    const answer = toServer(signed.bytes);
    expect(readErrorCode(answer)?.code).toBe(400);
    expect(server.stats.authFailures["bad-algorithm"]).toBe(1);
    expect(server.allocationCount).toBe(0);
    expect(signed.method).toBe(Method.Allocate);
  });
});
