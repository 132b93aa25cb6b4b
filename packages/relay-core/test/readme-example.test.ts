// The README's example, run as a real test so it cannot rot. The block between the markers
// must equal the ```ts block of README.md's "Use it in your own property tests" section.
import { readFileSync } from "node:fs";
import { join } from "node:path";
// --- README example start
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AttributeType,
  decodeStun,
  listenerId,
  longTermKeyMd5,
  MessageClass,
  Method,
  PeerAddressPolicy,
  RouteKind,
  readString,
  SeededRandom,
  StaticCredentials,
  StunMessageBuilder,
  TurnServer,
} from "../src/index.js"; // in your project: "@turnpike/relay-core"

it("never relays to a peer the client did not permit", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (packets) => {
      const server = new TurnServer({
        realm: "example.org",
        credentials: new StaticCredentials([["alice", "secret"]]),
        random: new SeededRandom(1),
        relayAddresses: { ip4: { bind: "127.0.0.1" } },
        peerPolicy: new PeerAddressPolicy({ allowLoopback: true }),
      });
      const now = 1_000;
      const send = (bytes: Uint8Array) =>
        server.handleUdpClient(listenerId(0), bytes, "127.0.0.1", 5000, now);
      const responses = () => {
        const out: Uint8Array[] = [];
        for (let c = server.pollOutput(); c; c = server.pollOutput()) {
          if (c.type === "open-relay") server.handleRelayBound(c.relay, now);
          if (c.type === "transmit") out.push(c.data);
        }
        return out;
      };
      // Allocate: a 401 brings the nonce, the signed retry gets the relay.
      const allocate = (nonce?: string) => {
        const b = new StunMessageBuilder(
          Method.Allocate,
          MessageClass.Request,
          new Uint8Array(12).fill(nonce ? 2 : 1),
        );
        b.requestedTransport(17);
        if (nonce) {
          b.string(AttributeType.Username, "alice").string(AttributeType.Realm, "example.org");
          b.string(AttributeType.Nonce, nonce).messageIntegrity(
            longTermKeyMd5("alice", "example.org", "secret"),
          );
        }
        return b.fingerprint().build();
      };
      send(allocate());
      const [challenge] = responses();
      const decoded = decodeStun(challenge!);
      if (!decoded.ok) throw new Error(decoded.error);
      send(allocate(readString(decoded.message, AttributeType.Nonce)));
      responses();
      expect(server.stats.allocationsActive).toBe(1);
      // Whatever else the client sends, nothing reaches a peer: it never created a permission.
      for (const p of packets) {
        expect(send(p)).not.toBe(RouteKind.ToPeer);
        responses();
      }
    }),
  );
});
// --- README example end

describe("README", () => {
  it("shows exactly the example this file runs", () => {
    const self = readFileSync(import.meta.filename, "utf8");
    const example = self
      .split("// --- README example start\n")[1]!
      .split("// --- README example end")[0]!;
    const readme = readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");
    const section = readme.split("## Use it in your own property tests")[1] ?? "";
    const block = section.split("```ts\n")[1]?.split("```")[0];
    expect(block).toBe(example);
  });
});
