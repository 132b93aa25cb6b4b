/**
 * The client's data path (RFC 8656 §11, §12): ChannelData and Data indications from the
 * server read in place into one reused view, and the ChannelData and Send indications a
 * runtime sends. Nothing here changes the client's state.
 */
import type { TransportAddress } from "../codec/address.js";
import { readXorAddress } from "../codec/attributes.js";
import { CHANNEL_DATA_HEADER_LENGTH, encodeChannelData } from "../codec/channel-data.js";
import { AttributeType, MessageClass, Method } from "../codec/constants.js";
import { decodeStun, found, locateAttribute, type StunMessage } from "../codec/message.js";
import { StunMessageBuilder } from "../codec/message-builder.js";
import type { TurnData } from "./types.js";
import type { Wants } from "./wants.js";

export class ClientDataPath {
  /** Valid until the next call into the client. */
  readonly view: TurnData = {
    peer: undefined,
    channel: 0,
    bytes: new Uint8Array(0),
    start: 0,
    end: 0,
  };
  readonly #wants: Wants;
  /** A stream transport: ChannelData is padded to 4 bytes (§12.5). */
  readonly #padded: boolean;

  constructor(wants: Wants, padded: boolean) {
    this.#wants = wants;
    this.#padded = padded;
  }

  /** ChannelData of a known channel or a Data indication, else undefined. */
  decode(bytes: Uint8Array): TurnData | undefined {
    if (bytes.length === 0) return undefined;
    const first = bytes[0]! & 0xc0;
    if (first === 0x40) return this.channelData(bytes);
    if (first !== 0) return undefined;
    const decoded = decodeStun(bytes);
    if (!decoded.ok) return undefined;
    const msg = decoded.message;
    if (msg.messageClass !== MessageClass.Indication || msg.method !== Method.Data) {
      return undefined;
    }
    return this.dataIndication(msg);
  }

  /** RFC 8656 §12.6: data on a channel we bound (and have not forgotten). */
  channelData(bytes: Uint8Array): TurnData | undefined {
    // Decoded in place (no view object per packet); over UDP trailing padding is ignored (§12.5).
    if (bytes.length < CHANNEL_DATA_HEADER_LENGTH) return undefined;
    const length = (bytes[2]! << 8) | bytes[3]!;
    if (CHANNEL_DATA_HEADER_LENGTH + length > bytes.length) return undefined;
    const number = (bytes[0]! << 8) | bytes[1]!;
    const c = this.#wants.channels.get(number);
    if (c === undefined || !c.bound) return undefined;
    const d = this.view;
    d.peer = c.peer;
    d.channel = number;
    d.bytes = bytes;
    d.start = CHANNEL_DATA_HEADER_LENGTH;
    d.end = CHANNEL_DATA_HEADER_LENGTH + length;
    return d;
  }

  /** RFC 8656 §11.4: XOR-PEER-ADDRESS and DATA; anything else makes it invalid. */
  dataIndication(msg: StunMessage): TurnData | undefined {
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    if (peer === undefined || !locateAttribute(msg, AttributeType.Data)) return undefined;
    const payloadOffset = found.offset;
    const payloadLength = found.length;
    // RFC 8656 §11.4: data from an address we asked no permission for is discarded (a spoofed
    // or stray indication must not pass as that peer's traffic).
    if (!this.#wants.permissions.has(peer.address)) return undefined;
    const d = this.view;
    d.peer = peer;
    d.channel = 0;
    d.bytes = msg.bytes;
    d.start = payloadOffset;
    d.end = payloadOffset + payloadLength;
    return d;
  }

  /** A ChannelData message (padded to 4 bytes on TCP/TLS, RFC 8656 §12.5). */
  encodeChannelData(channel: number, payload: Uint8Array): Uint8Array {
    return encodeChannelData(channel, payload, this.#padded);
  }

  /** RFC 8656 §11.1: a Send indication (XOR-PEER-ADDRESS + DATA); `peer` in canonical form. */
  sendIndication(peer: TransportAddress, data: Uint8Array, transactionId: Uint8Array): Uint8Array {
    return new StunMessageBuilder(Method.Send, MessageClass.Indication, transactionId)
      .xorAddress(AttributeType.XorPeerAddress, peer)
      .bytes(AttributeType.Data, data)
      .build();
  }
}
