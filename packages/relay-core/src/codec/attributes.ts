/**
 * Reading the attributes of a decoded STUN message (RFC 8489 §14, RFC 8656 §18), and checking
 * its integrity attributes (RFC 8489 §14.5, §14.6).
 */
import { createHmac } from "node:crypto";
import { constantTimeEqual } from "../auth/constant-time.js";
import { decodeAddressValue, type TransportAddress } from "./address.js";
import { AttributeType, HEADER_LENGTH } from "./constants.js";
import type { StunAttribute, StunMessage } from "./message.js";

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
// Integrity (RFC 8489 §14.5, §14.6)

/**
 * Verify MESSAGE-INTEGRITY (HMAC-SHA1) with a long-term or short-term key. The HMAC covers the
 * message up to the attribute, with the header length adjusted to end just after it.
 */
export function verifyMessageIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  const attr = getAttribute(msg, AttributeType.MessageIntegrity);
  if (attr?.length !== 20) return false;
  const mac = integrityHmac("sha1", key, msg.bytes, attr.offset - 4, 24);
  return constantTimeEqual(mac, attributeValue(msg, attr));
}

/** MESSAGE-INTEGRITY-SHA256: 16..32 bytes, a multiple of 4, a prefix of HMAC-SHA256. */
export function verifyMessageIntegritySha256(msg: StunMessage, key: Uint8Array): boolean {
  const attr = getAttribute(msg, AttributeType.MessageIntegritySha256);
  if (!attr || attr.length < 16 || attr.length > 32 || attr.length % 4 !== 0) return false;
  const mac = integrityHmac("sha256", key, msg.bytes, attr.offset - 4, 4 + attr.length);
  return constantTimeEqual(mac.subarray(0, attr.length), attributeValue(msg, attr));
}

function integrityHmac(
  algorithm: "sha1" | "sha256",
  key: Uint8Array,
  bytes: Uint8Array,
  attrStart: number,
  attrSize: number,
): Uint8Array {
  // A copy, whatever `bytes` is: Buffer#slice would be a view, and this must not touch its input.
  const header = new Uint8Array(HEADER_LENGTH);
  header.set(bytes.subarray(0, HEADER_LENGTH));
  const adjusted = attrStart - HEADER_LENGTH + attrSize;
  header[2] = (adjusted >>> 8) & 0xff;
  header[3] = adjusted & 0xff;
  return createHmac(algorithm, key)
    .update(header)
    .update(bytes.subarray(HEADER_LENGTH, attrStart))
    .digest();
}
