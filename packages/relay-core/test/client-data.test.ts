import { describe, expect, it } from "vitest";
import type { TransportAddress } from "../src/codec/address.js";
import { readChannelNumber } from "../src/codec/attributes.js";
import { AttributeType, Method } from "../src/codec/constants.js";
import { decodeStun } from "../src/codec/message.js";
import { StunMessageBuilder } from "../src/codec/message-builder.js";
import { decodeText, Harness, PEER, text } from "./client-harness.js";

const HOUR = 3_600_000;
const OTHER_PEER: TransportAddress = { family: 4, address: "127.0.0.4", port: 9000 };

function allocated(options: ConstructorParameters<typeof Harness>[0] = {}): Harness {
  const h = new Harness(options);
  h.client.allocate(h.now);
  if (!h.runUntil(() => h.client.state === "allocated")) throw new Error("no allocation");
  return h;
}

function sentOf(h: Harness, method: number): Uint8Array[] {
  return h.sentByClient
    .map((s) => s.bytes)
    .filter((b) => {
      const d = decodeStun(b);
      return d.ok && d.message.method === method;
    });
}

describe("TurnClient permissions and channels against TurnServer", () => {
  it("binds channels from 0x4000 up and gives the same peer the same number", () => {
    const h = allocated();
    expect(h.client.bindChannel(PEER, h.now)).toBe(0x4000);
    expect(h.client.bindChannel(OTHER_PEER, h.now)).toBe(0x4001);
    expect(h.client.bindChannel({ ...PEER }, h.now)).toBe(0x4000);
    expect(h.client.channelFor(PEER)).toBeUndefined();
    h.runUntil(() => h.eventsOf("channel-bound").length === 2);
    expect(h.eventsOf("channel-bound")).toEqual([
      { type: "channel-bound", peer: PEER, channel: 0x4000 },
      { type: "channel-bound", peer: OTHER_PEER, channel: 0x4001 },
    ]);
    expect(h.client.channelFor(PEER)).toBe(0x4000);
    expect(
      sentOf(h, Method.ChannelBind).map((b) => {
        const d = decodeStun(b);
        return d.ok ? readChannelNumber(d.message) : undefined;
      }),
    ).toEqual([0x4000, 0x4001]);
  });

  it("moves data both ways over a channel", () => {
    const h = allocated();
    const channel = h.client.bindChannel(PEER, h.now);
    h.runUntil(() => h.client.channelFor(PEER) === channel);
    h.clientSends(h.client.encodeChannelData(channel, text("to the peer")));
    h.advance(10);
    expect(h.peerInbox.map((d) => [d.peer, decodeText(d.payload), d.relayPort])).toEqual([
      [PEER, "to the peer", h.relayPort],
    ]);
    h.peerSends(text("to the client"));
    h.advance(10);
    expect(h.clientInbox.map((d) => [d.peer, d.channel, decodeText(d.payload)])).toEqual([
      [PEER, channel, "to the client"],
    ]);
  });

  it("refreshes permissions and channels so peer data still flows at t = 1 h", () => {
    const h = allocated({ client: { keepaliveInterval: 0 } });
    const channel = h.client.bindChannel(PEER, h.now);
    h.client.createPermission(OTHER_PEER.address, h.now);
    h.advance(HOUR);
    expect(h.client.state).toBe("allocated");
    // Channel peer: ChannelData; permission-only peer: a Data indication.
    h.peerSends(text("late channel data"));
    h.peerSends(text("late indication"), OTHER_PEER);
    h.advance(10);
    expect(h.clientInbox.map((d) => [d.peer, d.channel, decodeText(d.payload)])).toEqual([
      [PEER, channel, "late channel data"],
      [OTHER_PEER, 0, "late indication"],
    ]);
    h.clientSends(h.client.encodeChannelData(channel, text("late reply")));
    h.clientSends(h.client.sendIndication(OTHER_PEER, text("late send")));
    h.advance(10);
    expect(h.peerInbox.map((d) => [d.peer, decodeText(d.payload)])).toEqual([
      [PEER, "late reply"],
      [OTHER_PEER, "late send"],
    ]);
    // ChannelBind every 540 s; CreatePermission every 240 s for each peer IP (the channel's
    // peer needs its permission kept too, RFC 8656 §12). Stale nonces (600 s on the server) add
    // a retry now and then.
    expect(sentOf(h, Method.ChannelBind).length).toBeGreaterThanOrEqual(7);
    expect(sentOf(h, Method.CreatePermission).length).toBeGreaterThanOrEqual(2 * 14);
    expect(h.server.stats.drops["no-permission"]).toBe(0);
    expect(h.server.stats.drops["no-channel"]).toBe(0);
    expect(h.eventsOf("channel-bind-failed")).toEqual([]);
  });

  it("discards a Data indication from a peer it asked no permission for (RFC 8656 §11.4)", () => {
    const h = allocated();
    const indication = (peer: TransportAddress) =>
      new StunMessageBuilder(Method.Data, 1, new Uint8Array(12).fill(9))
        .xorAddress(AttributeType.XorPeerAddress, peer)
        .bytes(AttributeType.Data, text("spoofed?"))
        .build();
    expect(h.client.handleInput(indication(OTHER_PEER), h.now)).toBeUndefined();
    h.client.createPermission(OTHER_PEER.address, h.now);
    const d = h.client.handleInput(indication(OTHER_PEER), h.now);
    expect(d?.peer).toEqual(OTHER_PEER);
  });

  it("asks for permissions and channels before allocation and sends them once allocated", () => {
    const h = new Harness();
    h.client.createPermission("127.0.0.4", h.now);
    const channel = h.client.bindChannel(PEER, h.now);
    h.client.allocate(h.now);
    h.runUntil(() => h.eventsOf("channel-bound").length > 0);
    expect(h.eventsOf("permission-created")).toEqual([
      { type: "permission-created", peerIp: "127.0.0.4" },
    ]);
    expect(h.eventsOf("channel-bound")).toEqual([{ type: "channel-bound", peer: PEER, channel }]);
  });

  it("stops refreshing a removed permission, so the server lets it lapse", () => {
    const h = allocated({ client: { keepaliveInterval: 0 } });
    h.client.createPermission(PEER.address, h.now);
    h.runUntil(() => h.eventsOf("permission-created").length > 0);
    h.client.removePermission(PEER.address);
    h.advance(301_000);
    h.peerSends(text("too late"));
    h.advance(10);
    expect(h.clientInbox).toEqual([]);
    expect(sentOf(h, Method.CreatePermission).length).toBe(1);
  });

  it("reports a permission the server forbids", () => {
    const h = allocated();
    // The server's policy allows loopback only; 10.0.0.1 is private (RFC 1918).
    h.client.createPermission("10.0.0.1", h.now);
    h.runUntil(() => h.eventsOf("permission-failed").length > 0);
    expect(h.eventsOf("permission-failed")).toEqual([
      { type: "permission-failed", peerIp: "10.0.0.1", code: 403, reason: "Forbidden" },
    ]);
    h.advance(HOUR);
    expect(sentOf(h, Method.CreatePermission).length).toBe(1);
  });

  it("reports a channel the server refuses and frees nothing it still holds", () => {
    const h = allocated();
    const channel = h.client.bindChannel({ family: 4, address: "10.0.0.1", port: 1 }, h.now);
    h.runUntil(() => h.eventsOf("channel-bind-failed").length > 0);
    expect(h.eventsOf("channel-bind-failed")[0]).toMatchObject({ channel, code: 403 });
    // The number was never bound, so it is free again.
    expect(h.client.bindChannel(PEER, h.now)).toBe(channel + 1);
  });

  it("keeps an unbound channel's number reserved through the cool-down", () => {
    const h = allocated({ client: { keepaliveInterval: 0 } });
    const first = h.client.bindChannel(PEER, h.now);
    h.runUntil(() => h.client.channelFor(PEER) === first);
    h.client.unbindChannel(first);
    // Late data on the channel still reaches the right peer until the binding ends.
    h.peerSends(text("still bound"));
    h.advance(10);
    expect(h.clientInbox.at(-1)?.channel).toBe(first);
    // The number is not handed to another peer while the server may still hold it.
    const next = h.client.bindChannel(OTHER_PEER, h.now);
    expect(next).not.toBe(first);
    h.advance(16 * 60_000);
    expect(h.client.channelFor(PEER)).toBeUndefined();
  });

  it("decodes data without events: ChannelData of an unknown channel is dropped", () => {
    const h = allocated();
    const dropped = h.client.stats.dropped;
    expect(h.client.handleInput(h.client.encodeChannelData(0x4abc, text("x")), h.now)).toBe(
      undefined,
    );
    expect(h.client.decodeData(new Uint8Array([0x40, 0x00, 0x00, 0x09]))).toBeUndefined();
    expect(h.client.stats.dropped).toBe(dropped + 1);
    expect(h.client.pollOutput()).toBeUndefined();
  });

  it("pads ChannelData on TCP and carries data over a TCP control connection", () => {
    const h = allocated({ transport: "tcp" });
    const channel = h.client.bindChannel(PEER, h.now);
    h.runUntil(() => h.client.channelFor(PEER) === channel);
    const frame = h.client.encodeChannelData(channel, text("abcde"));
    expect(frame.length).toBe(12);
    h.clientSends(frame);
    h.peerSends(text("xyz"));
    h.advance(10);
    expect(h.peerInbox.map((d) => decodeText(d.payload))).toEqual(["abcde"]);
    expect(h.clientInbox.map((d) => decodeText(d.payload))).toEqual(["xyz"]);
  });

  it("builds Send indications the server relays to a permitted peer", () => {
    const h = allocated();
    h.client.createPermission(PEER.address, h.now);
    h.runUntil(() => h.eventsOf("permission-created").length > 0);
    const indication = h.client.sendIndication(PEER, text("hello"));
    const d = decodeStun(indication);
    expect(d.ok && d.message.method).toBe(Method.Send);
    expect(d.ok && d.message.attributes.map((a) => a.type)).toEqual([
      AttributeType.XorPeerAddress,
      AttributeType.Data,
    ]);
    h.clientSends(indication);
    h.advance(10);
    expect(h.peerInbox.map((p) => decodeText(p.payload))).toEqual(["hello"]);
  });
});
