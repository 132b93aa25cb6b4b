/** Encoding one STUN message (RFC 8489 §5, §14), attribute by attribute. */

import { ipv4ToUint32 } from "../policy/ip.js";
import { encodeAddressValue, type TransportAddress } from "./address.js";
import {
  AddressFamilyCode,
  AttributeType,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  type MessageClass,
  REASON_PHRASES,
} from "./constants.js";
import { crc32 } from "./crc32.js";
import { HMAC_INPUT_OFFSET, type HmacAlgorithm, hmacInput, hmacOfInput } from "./hmac.js";
import { messageType } from "./message.js";
import { keepBytes, takeBytes } from "./slab.js";

const utf8Encoder = new TextEncoder();

/** ERROR-CODE values with the RFC's reason phrase, encoded once per code (RFC 8489 §14.8). */
const STANDARD_ERROR_VALUES = new Map<number, Uint8Array>(
  Object.entries(REASON_PHRASES).map(([code, reason]) => [
    Number(code),
    errorCodeValue(Number(code), reason),
  ]),
);

function errorCodeValue(code: number, reason: string): Uint8Array {
  const text = utf8Encoder.encode(reason);
  const v = new Uint8Array(4 + text.length);
  v[2] = Math.floor(code / 100) & 0x07;
  v[3] = code % 100;
  v.set(text, 4);
  return v;
}

/**
 * Builds one STUN message. Attributes are appended in call order with RFC 8489 §14 padding;
 * `messageIntegrity*` and `fingerprint` must come last, in that order (§14.5-§14.7).
 */
export class StunMessageBuilder {
  #buf: Uint8Array;
  #len = HEADER_LENGTH;

  /** `capacity`: the expected size, so a large message (a Data indication) is written once. */
  constructor(method: number, cls: MessageClass, transactionId: Uint8Array, capacity = 256) {
    this.#buf = takeBytes(Math.max(HEADER_LENGTH, capacity));
    const type = messageType(method, cls);
    this.#buf[0] = type >>> 8;
    this.#buf[1] = type & 0xff;
    this.#buf[4] = 0x21;
    this.#buf[5] = 0x12;
    this.#buf[6] = 0xa4;
    this.#buf[7] = 0x42;
    // Byte by byte: a subarray to copy from would be one more object per message.
    for (let i = 0; i < 12; i++) this.#buf[8 + i] = transactionId[i]!;
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

  /**
   * A raw attribute of `length` bytes, zeroed, for the caller to write at the offset returned
   * in #buf (an offset, not a view: a view per attribute was most of the objects a response
   * allocated).
   */
  #fixed(type: number, length: number): number {
    this.#reserve(4 + length);
    const b = this.#buf;
    const at = this.#len + 4;
    b[this.#len] = type >>> 8;
    b[this.#len + 1] = type & 0xff;
    b[this.#len + 2] = 0;
    b[this.#len + 3] = length;
    b.fill(0, at, at + length);
    this.#len = at + length;
    return at;
  }

  /** A UTF-8 text attribute (USERNAME, REALM, NONCE, SOFTWARE), written in place. */
  string(type: number, value: string): this {
    const n = value.length;
    this.#reserve(4 + n * 3 + 3);
    const b = this.#buf;
    const start = this.#len + 4;
    let length = n;
    for (let i = 0; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0x80) {
        // Not ASCII: the encoder writes it (at most 3 bytes per UTF-16 unit).
        length = utf8Encoder.encodeInto(value, b.subarray(start, start + n * 3)).written;
        break;
      }
      b[start + i] = c;
    }
    b[this.#len] = type >>> 8;
    b[this.#len + 1] = type & 0xff;
    b[this.#len + 2] = length >>> 8;
    b[this.#len + 3] = length & 0xff;
    const padded = (length + 3) & ~3;
    b.fill(0, start + length, start + padded);
    this.#len += 4 + padded;
    return this;
  }

  uint32(type: number, value: number): this {
    const at = this.#fixed(type, 4);
    const b = this.#buf;
    b[at] = value >>> 24;
    b[at + 1] = (value >>> 16) & 0xff;
    b[at + 2] = (value >>> 8) & 0xff;
    b[at + 3] = value & 0xff;
    return this;
  }

  /** XOR-MAPPED-, XOR-PEER- or XOR-RELAYED-ADDRESS. An unparsable address is a programmer error. */
  xorAddress(type: number, addr: TransportAddress): this {
    const ip4 = ipv4ToUint32(addr.address);
    if (ip4 >= 0) {
      // IPv4, written in place (RFC 8489 §14.2): family, port ^ the cookie's top 16 bits,
      // address ^ the cookie; no parsed-address or value buffers.
      const at = this.#fixed(type, 8);
      const b = this.#buf;
      const port = addr.port ^ (MAGIC_COOKIE >>> 16);
      const x = (ip4 ^ MAGIC_COOKIE) >>> 0;
      b[at + 1] = AddressFamilyCode.IPv4;
      b[at + 2] = (port >>> 8) & 0xff;
      b[at + 3] = port & 0xff;
      b[at + 4] = x >>> 24;
      b[at + 5] = (x >>> 16) & 0xff;
      b[at + 6] = (x >>> 8) & 0xff;
      b[at + 7] = x & 0xff;
      return this;
    }
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
    const standard = reason === REASON_PHRASES[code] ? STANDARD_ERROR_VALUES.get(code) : undefined;
    return this.bytes(AttributeType.ErrorCode, standard ?? errorCodeValue(code, reason));
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
    const at = this.#fixed(AttributeType.ChannelNumber, 4);
    this.#buf[at] = channel >>> 8;
    this.#buf[at + 1] = channel & 0xff;
    return this;
  }

  requestedTransport(protocol: number): this {
    this.#buf[this.#fixed(AttributeType.RequestedTransport, 4)] = protocol;
    return this;
  }

  addressFamily(type: number, family: 4 | 6): this {
    this.#buf[this.#fixed(type, 4)] = family === 4 ? 0x01 : 0x02;
    return this;
  }

  evenPort(reserveNext: boolean): this {
    this.#buf[this.#fixed(AttributeType.EvenPort, 1)] = reserveNext ? 0x80 : 0;
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
    const at = this.#fixed(AttributeType.PasswordAlgorithm, 4);
    this.#buf[at] = algorithm >>> 8;
    this.#buf[at + 1] = algorithm & 0xff;
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

  #integrity(alg: HmacAlgorithm, type: number, size: number, key: Uint8Array): this {
    this.#setLength(this.#len - HEADER_LENGTH + 4 + size);
    // The message so far into the HMAC's scratch buffer, byte by byte (no view to copy from).
    const length = this.#len;
    const input = hmacInput(length);
    const b = this.#buf;
    for (let i = 0; i < length; i++) input[HMAC_INPUT_OFFSET + i] = b[i]!;
    const mac = hmacOfInput(alg, key, length);
    const at = this.#fixed(type, size);
    for (let i = 0; i < size; i++) this.#buf[at + i] = mac.charCodeAt(i);
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
    // What the message did not use goes back to the slab; should the builder be written to
    // again, it copies into a buffer of its own (#reserve) rather than into what it gave back.
    keepBytes(this.#buf, this.#len);
    this.#buf = this.#buf.subarray(0, this.#len);
    return this.#buf;
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
