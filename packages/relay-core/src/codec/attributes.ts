/**
 * Reading the attributes of a decoded STUN message (RFC 8489 §14, RFC 8656 §18), and checking
 * its integrity attributes (RFC 8489 §14.5, §14.6).
 */
import { decodeAddressAt, type TransportAddress } from "./address.js";
import { AttributeType, HEADER_LENGTH } from "./constants.js";
import {
  binaryEqualsBytes,
  HMAC_INPUT_OFFSET,
  type HmacAlgorithm,
  hmacInput,
  hmacOfInput,
} from "./hmac.js";
import {
  attributesOf,
  found,
  locateAttribute,
  type StunAttribute,
  type StunMessage,
} from "./message.js";

// Attribute readers. Each returns undefined when the attribute is absent or malformed, so the
// caller decides between ignoring it and a 400. They find their attribute with
// `locateAttribute` (message.ts), which makes no object, and read fixed-size values from the
// message's bytes directly, so only what a reader answers is allocated.

/** The first attribute of a type (RFC 8489 §14: only the first occurrence counts). */
export function getAttribute(msg: StunMessage, type: number): StunAttribute | undefined {
  for (const a of attributesOf(msg)) if (a.type === type) return a;
  return undefined;
}

export function hasAttribute(msg: StunMessage, type: number): boolean {
  return locateAttribute(msg, type);
}

/** The value length of the first attribute of a type, -1 when absent. */
export function attributeLength(msg: StunMessage, type: number): number {
  return locateAttribute(msg, type) ? found.length : -1;
}

export function attributeValue(msg: StunMessage, attr: StunAttribute): Uint8Array {
  return msg.bytes.subarray(attr.offset, attr.offset + attr.length);
}

export function readBytes(msg: StunMessage, type: number): Uint8Array | undefined {
  if (!locateAttribute(msg, type)) return undefined;
  return msg.bytes.subarray(found.offset, found.offset + found.length);
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

/**
 * Whether the first attribute of a type is there and valid UTF-8, without decoding it into a
 * string (for text the caller needs present, not read: REALM, whose value the server knows).
 */
export function hasValidString(msg: StunMessage, type: number): boolean {
  if (!locateAttribute(msg, type)) return false;
  const bytes = msg.bytes;
  const end = found.offset + found.length;
  // ASCII (every REALM a relay issues) is valid UTF-8 as it is; anything else goes through the
  // same decoder as readString, so both agree byte for byte.
  for (let i = found.offset; i < end; i++) {
    if (bytes[i]! >= 0x80) return readString(msg, type) !== undefined;
  }
  return true;
}

/** A 32-bit value at the found attribute's start, when the attribute is exactly 4 bytes. */
function foundUint32(msg: StunMessage): number | undefined {
  if (found.length !== 4) return undefined;
  const b = msg.bytes;
  const o = found.offset;
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

export function readUint32(msg: StunMessage, type: number): number | undefined {
  return locateAttribute(msg, type) ? foundUint32(msg) : undefined;
}

/** XOR-MAPPED-, XOR-PEER- and XOR-RELAYED-ADDRESS (RFC 8489 §14.2). */
export function readXorAddress(msg: StunMessage, type: number): TransportAddress | undefined {
  if (!locateAttribute(msg, type)) return undefined;
  return decodeAddressAt(msg.bytes, found.offset, found.length, msg.transactionId);
}

/** All occurrences of an XOR address attribute: CreatePermission may carry several (RFC 8656 §10). */
export function readAllXorAddresses(
  msg: StunMessage,
  type: number,
): (TransportAddress | undefined)[] {
  const out: (TransportAddress | undefined)[] = [];
  for (let more = locateAttribute(msg, type); more; more = locateAttribute(msg, type, true)) {
    out.push(decodeAddressAt(msg.bytes, found.offset, found.length, msg.transactionId));
  }
  return out;
}

/** MAPPED-ADDRESS and ALTERNATE-SERVER (RFC 8489 §14.1, §14.15). */
export function readAddress(msg: StunMessage, type: number): TransportAddress | undefined {
  if (!locateAttribute(msg, type)) return undefined;
  return decodeAddressAt(msg.bytes, found.offset, found.length);
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
  const v = readUint32(msg, AttributeType.ChannelNumber);
  return v === undefined ? undefined : v >>> 16;
}

/** REQUESTED-TRANSPORT (RFC 8656 §18.8): protocol number then 24 bits RFFU. */
export function readRequestedTransport(msg: StunMessage): number | undefined {
  const v = readUint32(msg, AttributeType.RequestedTransport);
  return v === undefined ? undefined : v >>> 24;
}

/** REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY (RFC 8656 §18.6, §18.11): 4 or 6. */
export function readAddressFamily(msg: StunMessage, type: number): 4 | 6 | "invalid" | undefined {
  if (!locateAttribute(msg, type)) return undefined;
  if (found.length !== 4) return "invalid";
  const family = msg.bytes[found.offset];
  if (family === 0x01) return 4;
  if (family === 0x02) return 6;
  return "invalid";
}

/** EVEN-PORT (RFC 8656 §18.7): the R bit asks to reserve the next port too. */
export function readEvenPort(msg: StunMessage): { reserveNext: boolean } | undefined {
  if (!locateAttribute(msg, AttributeType.EvenPort) || found.length < 1) return undefined;
  return { reserveNext: (msg.bytes[found.offset]! & 0x80) !== 0 };
}

/** PASSWORD-ALGORITHM (RFC 8489 §14.12): algorithm number (parameters ignored). */
export function readPasswordAlgorithm(msg: StunMessage): number | undefined {
  if (!locateAttribute(msg, AttributeType.PasswordAlgorithm) || found.length < 4) return undefined;
  return (msg.bytes[found.offset]! << 8) | msg.bytes[found.offset + 1]!;
}

// ---------------------------------------------------------------------------------------------
// Integrity (RFC 8489 §14.5, §14.6)

/**
 * Verify MESSAGE-INTEGRITY (HMAC-SHA1) with a long-term or short-term key. The HMAC covers the
 * message up to the attribute, with the header length adjusted to end just after it.
 */
export function verifyMessageIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  if (!locateAttribute(msg, AttributeType.MessageIntegrity) || found.length !== 20) return false;
  const offset = found.offset;
  const mac = integrityMac("sha1", key, msg.bytes, offset - 4, 24);
  return binaryEqualsBytes(mac, msg.bytes, offset, 20);
}

/** MESSAGE-INTEGRITY-SHA256: 16..32 bytes, a multiple of 4, a prefix of HMAC-SHA256. */
export function verifyMessageIntegritySha256(msg: StunMessage, key: Uint8Array): boolean {
  if (!locateAttribute(msg, AttributeType.MessageIntegritySha256)) return false;
  const { offset, length } = found;
  if (length < 16 || length > 32 || length % 4 !== 0) return false;
  const mac = integrityMac("sha256", key, msg.bytes, offset - 4, 4 + length);
  return binaryEqualsBytes(mac, msg.bytes, offset, length);
}

/** The HMAC of bytes[0, attrStart) with the header's length as if the message ended after the attribute. */
function integrityMac(
  algorithm: HmacAlgorithm,
  key: Uint8Array,
  bytes: Uint8Array,
  attrStart: number,
  attrSize: number,
): string {
  // Into the HMAC's scratch buffer (codec/hmac.ts), never into `bytes`: the input is not ours.
  // Byte by byte: a subarray to copy from was one more object per request.
  const input = hmacInput(attrStart);
  for (let i = 0; i < attrStart; i++) input[HMAC_INPUT_OFFSET + i] = bytes[i]!;
  const adjusted = attrStart - HEADER_LENGTH + attrSize;
  input[HMAC_INPUT_OFFSET + 2] = (adjusted >>> 8) & 0xff;
  input[HMAC_INPUT_OFFSET + 3] = adjusted & 0xff;
  return hmacOfInput(algorithm, key, attrStart);
}
