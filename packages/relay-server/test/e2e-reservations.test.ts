// RESERVATION-TOKENs (RFC 8656 §7.2, §14.9) through a real turnpike-relay process: a client
// reserves the port next to its even one (EVEN-PORT R=1) and allocates it with the token from
// another 5-tuple, as an RTP/RTCP pair does. The kernel hashes each UDP 5-tuple to one worker,
// so with several workers that Allocate often reaches another worker than the reservation; it
// must be honoured there all the same, once.
import { mintRestCredentials, readBytes, readXorAddress } from "@turnpike/relay-core";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import {
  AttributeType,
  Method,
  type StunMessageBuilder,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-reservations-token";

describe("turnpike-relay RESERVATION-TOKEN from another 5-tuple", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;

  beforeAll(async () => {
    range = reservePortRange(100);
    relay = await startTurnpike({ minPort: range.min, maxPort: range.max, token: TOKEN });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  async function allocate(build: (b: StunMessageBuilder) => void) {
    const c = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 600, "rtp");
    const client = await TurnClientLite.open({
      port: relay!.port,
      username: c.username,
      password: c.password,
    });
    const r = await client.request(Method.Allocate, (b) => {
      b.requestedTransport(TransportProtocol.Udp);
      build(b);
    });
    const port =
      r.code === 0 ? readXorAddress(r.message, AttributeType.XorRelayedAddress)?.port : undefined;
    return { client, r, port };
  }

  it("allocates the reserved port with the token from a new 5-tuple, 120 times out of 120, and never twice", async () => {
    const failures: string[] = [];
    for (let i = 0; i < 120; i++) {
      const maker = await allocate((b) => b.evenPort(true));
      expect(maker.r.code, maker.r.reason).toBe(0);
      const token = readBytes(maker.r.message, AttributeType.ReservationToken)!.slice();
      const redeemer = await allocate((b) => b.bytes(AttributeType.ReservationToken, token));
      if (redeemer.r.code !== 0 || redeemer.port !== maker.port! + 1) {
        failures.push(`${i}: ${redeemer.r.code} ${redeemer.r.reason} port ${redeemer.port}`);
      }
      if (i % 20 === 0) {
        // Single use: the same token again, from yet another 5-tuple.
        const again = await allocate((b) => b.bytes(AttributeType.ReservationToken, token));
        expect(again.r.code).toBe(508);
        again.client.close();
      }
      for (const c of [maker, redeemer]) {
        if (c.r.code === 0) await c.client.refresh(0);
        c.client.close();
      }
    }
    expect(failures).toEqual([]);
  });
});
