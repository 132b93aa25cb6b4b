// The data path (RFC 8656 §11 Send/Data, §12.4 ChannelData): routes that name a byte range of
// the input, never a copy.
import { describe, expect, it } from "vitest";
import { readBytes, readXorAddress } from "../src/codec/attributes.js";
import { encodeChannelData } from "../src/codec/channel-data.js";
import { AttributeType, MessageClass, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { connectionId, type RelayId } from "../src/ids.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, TestClient } from "./harness.js";

const cases = [
  { family: 4 as const, client: "192.0.2.10", peer: "198.51.100.1" },
  { family: 6 as const, client: "2001:db8:c::10", peer: "2001:db8:beef::1" },
];

describe("ping-pong relay (RFC 8656 §12.4)", () => {
  for (const { family, client, peer } of cases) {
    it(`ping-pong relay over IPv${family}: ChannelData out, ChannelData back`, () => {
      const h = new Harness();
      const c = new TestClient(h, { address: client, port: 40000 });
      const r = c.allocate({
        extra: (b) => b.addressFamily(AttributeType.RequestedAddressFamily, family),
      });
      expect(r.xorAddress(AttributeType.XorRelayedAddress)?.family).toBe(family);
      const relay = c.relayFor(family);
      expect(c.channelBind(0x4000, peer, 5000).code).toBe(0);
      // Client -> peer: the payload is bytes 4..4+len of the very datagram received.
      const ping = encodeChannelData(0x4000, Uint8Array.of(0x70, 0x69, 0x6e, 0x67, 0xaa));
      const padded = new Uint8Array(ping.length + 3);
      padded.set(ping); // UDP may carry padding after the frame (RFC 8656 §12.5): ignored
      const s = h.server;
      expect(s.handleUdpClient(c.listener, padded, client, 40000, h.now)).toBe(RouteKind.ToPeer);
      expect(s.route).toMatchObject({
        relay,
        peerAddress: peer,
        peerPort: 5000,
        start: 4,
        end: 9,
      });
      expect(s.route.data).toBe(padded);
      // Peer -> client: ChannelData header for channel 0x4000 in front of the whole datagram.
      const pong = Uint8Array.of(0x70, 0x6f, 0x6e, 0x67);
      expect(s.handlePeerData(relay, pong, peer, 5000, h.now)).toBe(RouteKind.ToClient);
      expect(s.route).toMatchObject({ channel: 0x4000, start: 0, end: 4 });
      expect(s.route.data).toBe(pong);
      expect(s.route.client).toMatchObject({ address: client, port: 40000, transport: "udp" });
      // Another port of the same peer IP is not the bound peer: a Data indication.
      expect(s.handlePeerData(relay, pong, peer, 5001, h.now)).toBe(RouteKind.ToClient);
      expect(s.route.channel).toBe(0);
      h.expectNoOutputs();
    });
  }

  it("without a channel, peer data comes back as a Data indication with XOR-PEER-ADDRESS and DATA", () => {
    for (const { family, client, peer } of cases) {
      const h = new Harness();
      const c = new TestClient(h, { address: client });
      c.allocate({ extra: (b) => b.addressFamily(AttributeType.RequestedAddressFamily, family) });
      c.createPermission(peer);
      const payload = Uint8Array.from({ length: 37 }, (_, i) => i);
      const route = h.peerData(c.relayFor(family), payload, peer, 6000);
      expect(route.kind).toBe(RouteKind.ToClient);
      expect(route.channel).toBe(0);
      const d = decodeStun(route.bytes);
      if (!d.ok) throw new Error(d.error);
      expect(d.message.method).toBe(Method.Data);
      expect(d.message.messageClass).toBe(MessageClass.Indication);
      expect(readXorAddress(d.message, AttributeType.XorPeerAddress)).toEqual({
        family,
        address: peer,
        port: 6000,
      });
      expect(Array.from(readBytes(d.message, AttributeType.Data)!)).toEqual(Array.from(payload));
      h.expectNoOutputs();
    }
  });

  it("Send indication routes the DATA byte range", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    c.createPermission("198.51.100.1");
    const payload = Uint8Array.of(9, 8, 7, 6, 5);
    const msg = new StunMessageBuilder(Method.Send, MessageClass.Indication, c.newTransactionId())
      .xorAddress(AttributeType.XorPeerAddress, { family: 4, address: "198.51.100.1", port: 7 })
      .bytes(AttributeType.Data, payload)
      .fingerprint()
      .build();
    const s = h.server;
    expect(s.handleUdpClient(c.listener, msg, c.address, c.port, h.now)).toBe(RouteKind.ToPeer);
    expect(s.route.data).toBe(msg);
    expect(s.route).toMatchObject({
      relay: c.relayFor(4),
      peerAddress: "198.51.100.1",
      peerPort: 7,
    });
    expect(Array.from(msg.subarray(s.route.start, s.route.end))).toEqual(Array.from(payload));
    h.expectNoOutputs();
  });

  it("drops Send indications without DATA, with DONT-FRAGMENT, or to another family", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    c.createPermission("198.51.100.1");
    const send = (fill: (b: StunMessageBuilder) => void) => {
      const b = new StunMessageBuilder(Method.Send, MessageClass.Indication, c.newTransactionId());
      fill(b);
      return c.send(b.build()).kind;
    };
    const peer = { family: 4 as const, address: "198.51.100.1", port: 7 };
    expect(send((b) => b.xorAddress(AttributeType.XorPeerAddress, peer))).toBe(RouteKind.None);
    expect(
      send((b) =>
        b
          .xorAddress(AttributeType.XorPeerAddress, peer)
          .bytes(AttributeType.Data, Uint8Array.of(1))
          .flag(AttributeType.DontFragment),
      ),
    ).toBe(RouteKind.None);
    expect(c.sendIndication("2001:db8:beef::1", 7, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops).toMatchObject({ "invalid-indication": 2, "family-mismatch": 1 });
    h.expectNoOutputs();
  });

  it("drops ChannelData on an unbound channel, from a stranger, or with a length past the datagram", () => {
    const h = new Harness();
    const c = new TestClient(h);
    c.allocate();
    c.channelBind(0x4000, "198.51.100.1", 5000);
    expect(c.channelData(0x4001, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    const stranger = new TestClient(h, { port: 40999 });
    expect(stranger.channelData(0x4000, Uint8Array.of(1)).kind).toBe(RouteKind.None);
    const short = encodeChannelData(0x4000, Uint8Array.of(1, 2, 3)).subarray(0, 6);
    expect(c.send(short).kind).toBe(RouteKind.None);
    expect(h.server.stats.drops).toMatchObject({
      "no-channel": 1,
      "no-allocation": 1,
      "malformed-channel-data": 1,
    });
    expect(h.peerData(9999 as RelayId, Uint8Array.of(1), "198.51.100.1", 5000).kind).toBe(
      RouteKind.None,
    );
    h.expectNoOutputs();
  });

  it("relays for a TCP client: ChannelData frames in, ChannelData routes out", () => {
    const h = new Harness();
    const c = new TestClient(h, { connection: 11 });
    c.allocate();
    c.channelBind(0x4000, "198.51.100.1", 5000);
    expect(c.channelData(0x4000, Uint8Array.of(1, 2))).toMatchObject({
      kind: RouteKind.ToPeer,
      start: 4,
      end: 6,
    });
    const back = h.peerData(c.relayFor(4), Uint8Array.of(3), "198.51.100.1", 5000);
    expect(back.kind).toBe(RouteKind.ToClient);
    expect(back.client).toMatchObject({ transport: "tcp", connection: 11 });
    expect(h.server.handleStreamClient(connectionId(12), Uint8Array.of(0, 1), h.now)).toBe(
      RouteKind.None,
    );
    expect(h.server.stats.drops["unknown-connection"]).toBe(1);
  });
});
