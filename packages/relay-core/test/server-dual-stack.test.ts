// Dual stack (RFC 8656 §7.2 REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY, 440, 443).
import { describe, expect, it } from "vitest";
import { readBytes } from "../src/codec/attributes.js";
import { AttributeType, Method } from "../src/codec/constants.js";
import type { RelayId } from "../src/ids.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, Response, TestClient } from "./harness.js";

const requested = (family: 4 | 6) => ({
  extra: (b: { addressFamily(t: number, f: 4 | 6): unknown }) => {
    b.addressFamily(AttributeType.RequestedAddressFamily, family);
  },
});
const additional = {
  extra: (b: { addressFamily(t: number, f: 4 | 6): unknown }) => {
    b.addressFamily(AttributeType.AdditionalAddressFamily, 6);
  },
};

describe("dual stack (RFC 8656 §7.2)", () => {
  it("REQUESTED-ADDRESS-FAMILY IPv6 gives an IPv6 relayed address", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.allocate(requested(6));
    expect(r.xorAddress(AttributeType.XorRelayedAddress)).toMatchObject({
      family: 6,
      address: "::1",
    });
    expect(c.relays.map((x) => x.family)).toEqual([6]);
  });

  it("ADDITIONAL-ADDRESS-FAMILY IPv6 gives an IPv4 and an IPv6 relayed address", () => {
    const h = new Harness();
    const c = new TestClient(h);
    const r = c.allocate(additional);
    const relayed = r.msg.attributes.filter((a) => a.type === AttributeType.XorRelayedAddress);
    expect(relayed).toHaveLength(2);
    expect(c.relays.map((x) => x.family)).toEqual([4, 6]);
    expect(c.createPermission("198.51.100.1", "2001:db8:beef::1").code).toBe(0);
    // Each peer goes out through the relay socket of its family.
    expect(c.sendIndication("2001:db8:beef::1", 1, Uint8Array.of(1)).relay).toBe(c.relayFor(6));
    expect(c.sendIndication("198.51.100.1", 1, Uint8Array.of(1)).relay).toBe(c.relayFor(4));
    h.server.closeAll(h.now);
    h.expectOutputs([
      { type: "close-relay", relay: c.relayFor(4) },
      { type: "close-relay", relay: c.relayFor(6) },
      { type: "allocation-ended", families: [4, 6] },
    ]);
  });

  it("answers 400 for ADDITIONAL-ADDRESS-FAMILY IPv4 or both family attributes", () => {
    const h = new Harness();
    const c = new TestClient(h);
    expect(
      c.allocate({ extra: (b) => b.addressFamily(AttributeType.AdditionalAddressFamily, 4) }).code,
    ).toBe(400);
    expect(
      c.allocate({
        extra: (b) =>
          b
            .addressFamily(AttributeType.RequestedAddressFamily, 4)
            .addressFamily(AttributeType.AdditionalAddressFamily, 6),
      }).code,
    ).toBe(400);
  });

  it("440 when a family is not configured", () => {
    const v4only = new Harness({ relayAddresses: { ip4: { bind: "127.0.0.1" } } });
    expect(new TestClient(v4only).allocate(requested(6)).code).toBe(440);
    const v6only = new Harness({ relayAddresses: { ip6: { bind: "::1" } } });
    expect(new TestClient(v6only, { port: 1 }).allocate().code).toBe(440);
    expect(new TestClient(v6only, { port: 2 }).allocate(requested(6)).code).toBe(0);
  });

  it("ADDITIONAL-ADDRESS-FAMILY without an IPv6 relay: IPv4 only, with ADDRESS-ERROR-CODE 440", () => {
    const h = new Harness({ relayAddresses: { ip4: { bind: "127.0.0.1" } } });
    const c = new TestClient(h);
    const r = c.allocate(additional);
    expect(r.code).toBe(0);
    expect(c.relays.map((x) => x.family)).toEqual([4]);
    const aec = readBytes(r.msg, AttributeType.AddressErrorCode)!;
    expect([aec[0], (aec[2]! & 7) * 100 + aec[3]!]).toEqual([0x02, 440]);
  });

  it("an IPv6 relay that cannot be bound leaves the IPv4 one, with ADDRESS-ERROR-CODE 508", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.learn(c.ask(c.build(Method.Allocate)));
    const fill = (
      b: Parameters<NonNullable<(typeof additional)["extra"]>>[0] & {
        requestedTransport(p: number): unknown;
      },
    ) => {
      b.requestedTransport(17);
      b.addressFamily(AttributeType.AdditionalAddressFamily, 6);
    };
    c.send(c.buildSigned(Method.Allocate, fill as never));
    const [v4, v6] = h.expectOutputs([
      { type: "open-relay", family: 4 },
      { type: "open-relay", family: 6 },
    ]) as unknown as [{ relay: RelayId }, { relay: RelayId }];
    h.server.handleRelayBound(v4.relay, h.now);
    h.expectNoOutputs();
    for (let i = 1; i < 8; i++) {
      h.server.handleRelayBindFailed(v6.relay, h.now);
      h.expectOutputs([{ type: "open-relay", relay: v6.relay }]);
    }
    h.server.handleRelayBindFailed(v6.relay, h.now);
    const [sent] = h.expectOutputs([
      { type: "transmit", errorCode: 0 },
      { type: "allocation-created", relayed: [{ family: 4 }] },
    ]) as unknown as [{ data: Uint8Array }];
    const r = c.verified(new Response(sent.data));
    const aec = readBytes(r.msg, AttributeType.AddressErrorCode)!;
    expect([aec[0], (aec[2]! & 7) * 100 + aec[3]!]).toEqual([0x02, 508]);
  });

  it("Refresh with REQUESTED-ADDRESS-FAMILY and LIFETIME 0 deletes only that family of a dual allocation (RFC 8656 §8.2)", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate(additional);
    const [v4, v6] = [c.relayFor(4), c.relayFor(6)];
    expect(c.createPermission("198.51.100.1", "2001:db8:beef::1").code).toBe(0);
    expect(c.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(0);
    expect(c.channelBind(0x4001, "2001:db8:beef::1", 5000).code).toBe(0);
    const refresh = (family: 4 | 6, lifetime: number) =>
      c.buildSigned(Method.Refresh, (b) =>
        b
          .addressFamily(AttributeType.RequestedAddressFamily, family)
          .uint32(AttributeType.Lifetime, lifetime),
      );
    c.send(refresh(6, 0));
    const [, sent] = h.expectOutputs([
      { type: "close-relay", relay: v6 },
      { type: "transmit", errorCode: 0 },
    ]) as unknown as [unknown, { data: Uint8Array }];
    expect(c.verified(new Response(sent.data)).uint32(AttributeType.Lifetime)).toBe(0);
    // The IPv4 half relays on; the IPv6 half, its permission and its channel are gone.
    expect(h.server.stats).toMatchObject({
      allocationsActive: 1,
      permissionsActive: 1,
      channelsActive: 1,
    });
    expect(c.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.ToPeer);
    expect(c.channelData(0x4001, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(c.sendIndication("2001:db8:beef::1", 7, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.peerData(v6, Uint8Array.of(1), "2001:db8:beef::1", 5000).kind).toBe(RouteKind.None);
    expect(h.peerData(v4, Uint8Array.of(1), "198.51.100.1", 5000).kind).toBe(RouteKind.ToClient);
    expect(h.server.allocations(h.now)[0]!.relayed.map((r) => r.family)).toEqual([4]);
    expect(c.createPermission("2001:db8:beef::2").code).toBe(443);
    expect(c.refresh().code).toBe(0);
    // The family is gone: asking for it again is a mismatch; the last family ends it all.
    expect(c.ask(refresh(6, 0)).code).toBe(443);
    c.send(refresh(4, 0));
    h.expectOutputs([
      { type: "close-relay", relay: v4 },
      { type: "allocation-ended", reason: "deleted", families: [4] },
      { type: "transmit", errorCode: 0 },
    ]);
    expect(h.server.stats).toMatchObject({
      allocationsActive: 0,
      permissionsActive: 0,
      channelsActive: 0,
    });
  });

  it("443 peer family mismatch", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    expect(c.createPermission("2001:db8:beef::1").code).toBe(443);
    expect(c.channelBind(0x4000, "2001:db8:beef::1", 5000).code).toBe(443);
    const d = new TestClient(h, { port: 2, username: "bob" });
    d.allocate(requested(6));
    expect(d.createPermission("198.51.100.1").code).toBe(443);
  });
});
