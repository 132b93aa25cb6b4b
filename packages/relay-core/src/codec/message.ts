import { decodeAddressValue, encodeAddressValue, type TransportAddress } from "./address.js";
import {
  AttributeType,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  KNOWN_ATTRIBUTES,
  type MessageClass,
  REASON_PHRASES,
} from "./constants.js";
import { crc32 } from "./crc32.js";
import { type HmacAlgorithm, hmacBinary } from "./hmac.js";
import { keepBytes, takeBytes } from "./slab.js";

/** One attribute TLV, as offsets into the message: decoding copies nothing. */
export interface StunAttribute {
  readonly type: number;
  /** Offset of the value inside `StunMessage.bytes`. */
  readonly offset: number;
  readonly length: number;
}

/** A decoded STUN message: a view over the input bytes (RFC 8489 §5, §14). */
export interface StunMessage {
  /** Exactly the message: header and attributes, no trailing bytes. */
  readonly bytes: Uint8Array;
  readonly method: number;
  readonly messageClass: MessageClass;
  /** The 96-bit transaction id: a view into `bytes`. */
  readonly transactionId: Uint8Array;
  /**
   * The attributes in wire order, up to and including MESSAGE-INTEGRITY,
   * MESSAGE-INTEGRITY-SHA256 and FINGERPRINT. RFC 8489 §14.5/§14.6: attributes after the
   * integrity attributes (other than FINGERPRINT) are ignored, so they are not listed.
   */
  readonly attributes: readonly StunAttribute[];
  /** Comprehension-required attribute types we do not know (RFC 8489 §14: answer 420). */
  readonly unknownRequired: readonly number[];
}

export type StunDecodeError =
  | "too-short"
  | "not-stun"
  | "bad-length"
  | "truncated-attribute"
  | "misplaced-fingerprint"
  | "bad-fingerprint";

export type StunDecodeResult =
  | { readonly ok: true; readonly message: StunMessage }
  | {
      readonly ok: false;
      readonly error: StunDecodeError;
      /** Present when the header was sound, so a request can still get a 400 (RFC 8489 §6.3). */
      readonly header?: {
        readonly method: number;
        readonly messageClass: MessageClass;
        readonly transactionId: Uint8Array;
      };
    };

/** RFC 8489 §5: message type = M11..M0 interleaved with C1 C0. */
export function messageType(method: number, cls: MessageClass): number {
  return (
    (method & 0x000f) |
    ((method & 0x0070) << 1) |
    ((method & 0x0f80) << 2) |
    ((cls & 1) << 4) |
    ((cls & 2) << 7)
  );
}

/** Cheap test for the STUN header shape: top two bits zero and the magic cookie. */
export function looksLikeStun(bytes: Uint8Array): boolean {
  return (
    bytes.length >= HEADER_LENGTH &&
    (bytes[0]! & 0xc0) === 0 &&
    bytes[4] === 0x21 &&
    bytes[5] === 0x12 &&
    bytes[6] === 0xa4 &&
    bytes[7] === 0x42
  );
}

/**
 * Decode one STUN message that occupies all of `bytes` (a datagram, or a frame cut by the
 * stream framer). Never throws: every malformation is a typed error (RFC 8489 §6.3).
 */
export function decodeStun(bytes: Uint8Array): StunDecodeResult {
  if (bytes.length < HEADER_LENGTH) return { ok: false, error: "too-short" };
  if (!looksLikeStun(bytes)) return { ok: false, error: "not-stun" };
  const type = (bytes[0]! << 8) | bytes[1]!;
  const method = (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
  const messageClass = (((type >> 4) & 1) | ((type >> 7) & 2)) as MessageClass;
  const transactionId = bytes.subarray(8, 20);
  const header = { method, messageClass, transactionId };
  const length = (bytes[2]! << 8) | bytes[3]!;
  // RFC 8489 §5: the length never counts the header and is a multiple of 4 (attributes are padded).
  if (length % 4 !== 0 || length + HEADER_LENGTH !== bytes.length) {
    return { ok: false, error: "bad-length", header };
  }
  const attributes: StunAttribute[] = [];
  let unknownRequired: number[] | undefined;
  let afterIntegrity = false;
  let pos = HEADER_LENGTH;
  while (pos < bytes.length) {
    if (pos + 4 > bytes.length) return { ok: false, error: "truncated-attribute", header };
    const attrType = (bytes[pos]! << 8) | bytes[pos + 1]!;
    const attrLength = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
    const valueOffset = pos + 4;
    const next = valueOffset + ((attrLength + 3) & ~3);
    if (next > bytes.length) return { ok: false, error: "truncated-attribute", header };
    if (attrType === AttributeType.Fingerprint) {
      // RFC 8489 §14.7: FINGERPRINT is the last attribute, 4 bytes, and must match.
      if (next !== bytes.length || attrLength !== 4) {
        return { ok: false, error: "misplaced-fingerprint", header };
      }
      if (!fingerprintMatches(bytes, pos)) return { ok: false, error: "bad-fingerprint", header };
      attributes.push({ type: attrType, offset: valueOffset, length: attrLength });
    } else if (
      attrType === AttributeType.MessageIntegrity ||
      attrType === AttributeType.MessageIntegritySha256
    ) {
      // RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256 may follow MESSAGE-INTEGRITY, nothing else counts.
      if (!afterIntegrity || attrType === AttributeType.MessageIntegritySha256) {
        attributes.push({ type: attrType, offset: valueOffset, length: attrLength });
      }
      afterIntegrity = true;
    } else if (!afterIntegrity) {
      attributes.push({ type: attrType, offset: valueOffset, length: attrLength });
      if (attrType < 0x8000 && !KNOWN_ATTRIBUTES.has(attrType)) {
        if (!unknownRequired) unknownRequired = [];
        // One unknown type is enough for a 420; listing at most MAX_UNKNOWN keeps decoding linear
        // (a 64 KiB datagram can carry 16,000 distinct types) and the answer small.
        if (unknownRequired.length < MAX_UNKNOWN && !unknownRequired.includes(attrType)) {
          unknownRequired.push(attrType);
        }
      }
    }
    pos = next;
  }
  return {
    ok: true,
    message: {
      bytes,
      method,
      messageClass,
      transactionId,
      attributes,
      unknownRequired: unknownRequired ?? NO_UNKNOWN,
    },
  };
}
const NO_UNKNOWN: readonly number[] = Object.freeze([]);
const MAX_UNKNOWN = 16;

function fingerprintMatches(bytes: Uint8Array, fingerprintAttrStart: number): boolean {
  // The length field already covers FINGERPRINT because it is last (RFC 8489 §14.7).
  const expected = (crc32(bytes, 0, fingerprintAttrStart) ^ FINGERPRINT_XOR) >>> 0;
  const v = fingerprintAttrStart + 4;
  const actual =
    ((bytes[v]! << 24) | (bytes[v + 1]! << 16) | (bytes[v + 2]! << 8) | bytes[v + 3]!) >>> 0;
  return expected === actual;
}

// ---------------------------------------------------------------------------------------------
// Attribute readers. Each returns undefined when the attribute is absent or malformed, so the
// caller decides between ignoring it and a 400.

/** The first attribute of a type (RFC 8489 §14: only the first occurrence counts). */
export function getAttribute(msg: StunMessage, type: number): StunAttribute | undefined {
  for (const a of msg.attributes) if (a.type === type) return a;
  return undefined;
}

export function hasAttribute(msg: StunMessage, type: number): boolean {
  return getAttribute(msg, type) !== undefined;
}

export function attributeValue(msg: StunMessage, attr: StunAttribute): Uint8Array {
  return msg.bytes.subarray(attr.offset, attr.offset + attr.length);
}

export function readBytes(msg: StunMessage, type: number): Uint8Array | undefined {
  const a = getAttribute(msg, type);
  return a ? attributeValue(msg, a) : undefined;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** UTF-8 text attributes (USERNAME, REALM, NONCE, SOFTWARE); undefined when not valid UTF-8. */
export function readString(msg: StunMessage, type: number): string | undefined {
  const v = readBytes(msg, type);
  if (!v) return undefined;
  try {
    return utf8.decode(v);
  } catch {
    return undefined;
  }
}

export function readUint32(msg: StunMessage, type: number): number | undefined {
  const v = readBytes(msg, type);
  if (v?.length !== 4) return undefined;
  return ((v[0]! << 24) | (v[1]! << 16) | (v[2]! << 8) | v[3]!) >>> 0;
}

/** XOR-MAPPED-, XOR-PEER- and XOR-RELAYED-ADDRESS (RFC 8489 §14.2). */
export function readXorAddress(msg: StunMessage, type: number): TransportAddress | undefined {
  const v = readBytes(msg, type);
  return v ? decodeAddressValue(v, msg.transactionId) : undefined;
}

/** All occurrences of an XOR address attribute: CreatePermission may carry several (RFC 8656 §10). */
export function readAllXorAddresses(
  msg: StunMessage,
  type: number,
): (TransportAddress | undefined)[] {
  const out: (TransportAddress | undefined)[] = [];
  for (const a of msg.attributes) {
    if (a.type === type) out.push(decodeAddressValue(attributeValue(msg, a), msg.transactionId));
  }
  return out;
}

/** MAPPED-ADDRESS and ALTERNATE-SERVER (RFC 8489 §14.1, §14.15). */
export function readAddress(msg: StunMessage, type: number): TransportAddress | undefined {
  const v = readBytes(msg, type);
  return v ? decodeAddressValue(v) : undefined;
}

/** ERROR-CODE (RFC 8489 §14.8): class * 100 + number, and the reason phrase. */
export function readErrorCode(msg: StunMessage): { code: number; reason: string } | undefined {
  const v = readBytes(msg, AttributeType.ErrorCode);
  if (!v || v.length < 4) return undefined;
  const code = (v[2]! & 0x07) * 100 + v[3]!;
  let reason = "";
  try {
    reason = utf8.decode(v.subarray(4));
  } catch {
    reason = "";
  }
  return { code, reason };
}

/** UNKNOWN-ATTRIBUTES (RFC 8489 §14.13): a list of 16-bit types. */
export function readUnknownAttributes(msg: StunMessage): number[] | undefined {
  const v = readBytes(msg, AttributeType.UnknownAttributes);
  if (!v || v.length % 2 !== 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < v.length; i += 2) out.push((v[i]! << 8) | v[i + 1]!);
  return out;
}

/** CHANNEL-NUMBER (RFC 8656 §18.1): 16-bit number followed by 16 bits RFFU. */
export function readChannelNumber(msg: StunMessage): number | undefined {
  const v = readBytes(msg, AttributeType.ChannelNumber);
  if (v?.length !== 4) return undefined;
  return (v[0]! << 8) | v[1]!;
}

/** REQUESTED-TRANSPORT (RFC 8656 §18.8): protocol number then 24 bits RFFU. */
export function readRequestedTransport(msg: StunMessage): number | undefined {
  const v = readBytes(msg, AttributeType.RequestedTransport);
  if (v?.length !== 4) return undefined;
  return v[0];
}

/** REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.6, §18.11): 4 or 6. */
export function readAddressFamily(msg: StunMessage, type: number): 4 | 6 | "invalid" | undefined {
  const v = readBytes(msg, type);
  if (!v) return undefined;
  if (v.length !== 4) return "invalid";
  if (v[0] === 0x01) return 4;
  if (v[0] === 0x02) return 6;
  return "invalid";
}

/** EVEN-PORT (RFC 8656 §18.7): the R bit asks to reserve the next port too. */
export function readEvenPort(msg: StunMessage): { reserveNext: boolean } | undefined {
  const v = readBytes(msg, AttributeType.EvenPort);
  if (!v || v.length < 1) return undefined;
  return { reserveNext: (v[0]! & 0x80) !== 0 };
}

/** PASSWORD-ALGORITHM (RFC 8489 §14.12): algorithm number (parameters ignored). */
export function readPasswordAlgorithm(msg: StunMessage): number | undefined {
  const v = readBytes(msg, AttributeType.PasswordAlgorithm);
  if (!v || v.length < 4) return undefined;
  return (v[0]! << 8) | v[1]!;
}

// ---------------------------------------------------------------------------------------------
// Encoding

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

  #integrity(alg: HmacAlgorithm, type: number, size: number, key: Uint8Array): this {
    this.#setLength(this.#len - HEADER_LENGTH + 4 + size);
    const mac = hmacBinary(alg, key, this.#buf.subarray(0, this.#len));
    const v = this.#fixed(type, size);
    for (let i = 0; i < size; i++) v[i] = mac.charCodeAt(i);
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

/**
 * Bytes as a string of the same length (one char per byte): a Map key for transaction ids and
 * tokens, built without a hex encoding step.
 */
export function bytesKey(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}
