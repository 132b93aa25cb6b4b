/** Encoding one STUN message (RFC 8489 §5, §14), attribute by attribute. */
import { createHmac } from "node:crypto";
import { encodeAddressValue, type TransportAddress } from "./address.js";
import {
  AttributeType,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  type MessageClass,
  REASON_PHRASES,
} from "./constants.js";
import { crc32 } from "./crc32.js";
import { messageType } from "./message.js";

const utf8Encoder = new TextEncoder();

/**
 * Builds one STUN message. Attributes are appended in call order with RFC 8489 §14 padding;
 * `messageIntegrity*` and `fingerprint` must come last, in that order (§14.5-§14.7).
 */
export class StunMessageBuilder {
  #buf: Uint8Array;
  #len = HEADER_LENGTH;

  /** `capacity`: the expected size, so a large message (a Data indication) is written once. */
  constructor(method: number, cls: MessageClass, transactionId: Uint8Array, capacity = 256) {
    this.#buf = new Uint8Array(Math.max(HEADER_LENGTH, capacity));
    const type = messageType(method, cls);
    this.#buf[0] = type >>> 8;
    this.#buf[1] = type & 0xff;
    this.#buf[4] = 0x21;
    this.#buf[5] = 0x12;
    this.#buf[6] = 0xa4;
    this.#buf[7] = 0x42;
    this.#buf.set(transactionId.subarray(0, 12), 8);
  }

  /** A raw attribute; `value` is copied and padded to 4 bytes. */
  bytes(type: number, value: Uint8Array): this {
    this.#reserve(4 + value.length + 3);
    const b = this.#buf;
    b[this.#len] = type >>> 8;
    b[this.#len + 1] = type & 0xff;
    b[this.#len + 2] = value.length >>> 8;
    b[this.#len + 3] = value.length & 0xff;
    b.set(value, this.#len + 4);
    const padded = (value.length + 3) & ~3;
    b.fill(0, this.#len + 4 + value.length, this.#len + 4 + padded);
    this.#len += 4 + padded;
    return this;
  }

  /** A raw attribute value of `length` bytes written by `write` (avoids a temporary buffer). */
  #fixed(type: number, length: number): Uint8Array {
    this.#reserve(4 + length);
    const b = this.#buf;
    b[this.#len] = type >>> 8;
    b[this.#len + 1] = type & 0xff;
    b[this.#len + 2] = 0;
    b[this.#len + 3] = length;
    const view = b.subarray(this.#len + 4, this.#len + 4 + length);
    view.fill(0);
    this.#len += 4 + length;
    return view;
  }

  string(type: number, value: string): this {
    return this.bytes(type, utf8Encoder.encode(value));
  }

  uint32(type: number, value: number): this {
    const v = this.#fixed(type, 4);
    v[0] = value >>> 24;
    v[1] = (value >>> 16) & 0xff;
    v[2] = (value >>> 8) & 0xff;
    v[3] = value & 0xff;
    return this;
  }

  /** XOR-MAPPED-, XOR-PEER- or XOR-RELAYED-ADDRESS. An unparsable address is a programmer error. */
  xorAddress(type: number, addr: TransportAddress): this {
    const v = encodeAddressValue(addr, this.#buf.subarray(8, 20));
    if (!v) throw new Error(`invalid IP address ${addr.address}`);
    return this.bytes(type, v);
  }

  /** MAPPED-ADDRESS or ALTERNATE-SERVER. */
  address(type: number, addr: TransportAddress): this {
    const v = encodeAddressValue(addr);
    if (!v) throw new Error(`invalid IP address ${addr.address}`);
    return this.bytes(type, v);
  }

  /** ERROR-CODE (RFC 8489 §14.8); the reason defaults to the RFC's phrase. */
  errorCode(code: number, reason = REASON_PHRASES[code] ?? ""): this {
    const text = utf8Encoder.encode(reason);
    const v = new Uint8Array(4 + text.length);
    v[2] = Math.floor(code / 100) & 0x07;
    v[3] = code % 100;
    v.set(text, 4);
    return this.bytes(AttributeType.ErrorCode, v);
  }

  /** ADDRESS-ERROR-CODE (RFC 8656 §18.12): family, then an ERROR-CODE-like value. */
  addressErrorCode(family: 4 | 6, code: number, reason = REASON_PHRASES[code] ?? ""): this {
    const text = utf8Encoder.encode(reason);
    const v = new Uint8Array(4 + text.length);
    v[0] = family === 4 ? 0x01 : 0x02;
    v[2] = Math.floor(code / 100) & 0x07;
    v[3] = code % 100;
    v.set(text, 4);
    return this.bytes(AttributeType.AddressErrorCode, v);
  }

  unknownAttributes(types: readonly number[]): this {
    const v = new Uint8Array(types.length * 2);
    types.forEach((t, i) => {
      v[i * 2] = t >>> 8;
      v[i * 2 + 1] = t & 0xff;
    });
    return this.bytes(AttributeType.UnknownAttributes, v);
  }

  channelNumber(channel: number): this {
    const v = this.#fixed(AttributeType.ChannelNumber, 4);
    v[0] = channel >>> 8;
    v[1] = channel & 0xff;
    return this;
  }

  requestedTransport(protocol: number): this {
    this.#fixed(AttributeType.RequestedTransport, 4)[0] = protocol;
    return this;
  }

  addressFamily(type: number, family: 4 | 6): this {
    this.#fixed(type, 4)[0] = family === 4 ? 0x01 : 0x02;
    return this;
  }

  evenPort(reserveNext: boolean): this {
    this.#fixed(AttributeType.EvenPort, 1)[0] = reserveNext ? 0x80 : 0;
    // fixed() wrote a 1-byte value; keep the 4-byte alignment (RFC 8489 §14 padding).
    this.#reserve(3);
    this.#buf.fill(0, this.#len, this.#len + 3);
    this.#len += 3;
    return this;
  }

  /** PASSWORD-ALGORITHMS (RFC 8489 §14.11): each algorithm with empty parameters. */
  passwordAlgorithms(algorithms: readonly number[]): this {
    const v = new Uint8Array(algorithms.length * 4);
    algorithms.forEach((a, i) => {
      v[i * 4] = a >>> 8;
      v[i * 4 + 1] = a & 0xff;
    });
    return this.bytes(AttributeType.PasswordAlgorithms, v);
  }

  passwordAlgorithm(algorithm: number): this {
    const v = this.#fixed(AttributeType.PasswordAlgorithm, 4);
    v[0] = algorithm >>> 8;
    v[1] = algorithm & 0xff;
    return this;
  }

  /** An attribute with an empty value, e.g. DONT-FRAGMENT. */
  flag(type: number): this {
    this.#fixed(type, 0);
    return this;
  }

  /** MESSAGE-INTEGRITY (RFC 8489 §14.5): HMAC-SHA1 over the message so far. */
  messageIntegrity(key: Uint8Array): this {
    return this.#integrity("sha1", AttributeType.MessageIntegrity, 20, key);
  }

  /** MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6), full 32 bytes. */
  messageIntegritySha256(key: Uint8Array): this {
    return this.#integrity("sha256", AttributeType.MessageIntegritySha256, 32, key);
  }

  #integrity(alg: "sha1" | "sha256", type: number, size: number, key: Uint8Array): this {
    this.#setLength(this.#len - HEADER_LENGTH + 4 + size);
    const mac = createHmac(alg, key).update(this.#buf.subarray(0, this.#len)).digest();
    this.#fixed(type, size).set(mac.subarray(0, size));
    return this;
  }

  /** FINGERPRINT (RFC 8489 §14.7): always the last attribute. */
  fingerprint(): this {
    this.#setLength(this.#len - HEADER_LENGTH + 8);
    const crc = (crc32(this.#buf, 0, this.#len) ^ FINGERPRINT_XOR) >>> 0;
    this.uint32(AttributeType.Fingerprint, crc);
    return this;
  }

  /** The finished message: a view of exactly its bytes (no copy); the builder can be dropped. */
  build(): Uint8Array {
    this.#setLength(this.#len - HEADER_LENGTH);
    return this.#buf.subarray(0, this.#len);
  }

  #setLength(length: number): void {
    this.#buf[2] = (length >>> 8) & 0xff;
    this.#buf[3] = length & 0xff;
  }

  #reserve(extra: number): void {
    if (this.#len + extra <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + extra));
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }
}
