// MESSAGE-INTEGRITY (RFC 8489 §14.5, HMAC-SHA1) and MESSAGE-INTEGRITY-SHA256 (§14.6) of a
// decoded message. The HMAC covers the message up to the attribute, with the header's length
// adjusted to end just after it; signing is the builder's (message.ts, StunMessageBuilder).

import { AttributeType, HEADER_LENGTH } from "./constants.js";
import {
  binaryEqualsBytes,
  HMAC_INPUT_OFFSET,
  type HmacAlgorithm,
  hmacInput,
  hmacOfInput,
} from "./hmac.js";
import { getAttribute, type StunMessage } from "./message.js";
/**
 * Verify MESSAGE-INTEGRITY (HMAC-SHA1) with a long-term or short-term key. The HMAC covers the
 * message up to the attribute, with the header length adjusted to end just after it.
 */
export function verifyMessageIntegrity(msg: StunMessage, key: Uint8Array): boolean {
  const attr = getAttribute(msg, AttributeType.MessageIntegrity);
  if (attr?.length !== 20) return false;
  const mac = integrityMac("sha1", key, msg.bytes, attr.offset - 4, 24);
  return binaryEqualsBytes(mac, msg.bytes, attr.offset, 20);
}

/** MESSAGE-INTEGRITY-SHA256: 16..32 bytes, a multiple of 4, a prefix of HMAC-SHA256. */
export function verifyMessageIntegritySha256(msg: StunMessage, key: Uint8Array): boolean {
  const attr = getAttribute(msg, AttributeType.MessageIntegritySha256);
  if (!attr || attr.length < 16 || attr.length > 32 || attr.length % 4 !== 0) return false;
  const mac = integrityMac("sha256", key, msg.bytes, attr.offset - 4, 4 + attr.length);
  return binaryEqualsBytes(mac, msg.bytes, attr.offset, attr.length);
}

/** The HMAC of bytes[0, attrStart) with the header's length as if the message ended after the attribute. */
function integrityMac(
  algorithm: HmacAlgorithm,
  key: Uint8Array,
  bytes: Uint8Array,
  attrStart: number,
  attrSize: number,
): string {
  // Into the HMAC's scratch buffer, never into `bytes`: the input is not ours to touch.
  const input = hmacInput(attrStart);
  input.set(bytes.subarray(0, attrStart), HMAC_INPUT_OFFSET);
  const adjusted = attrStart - HEADER_LENGTH + attrSize;
  input[HMAC_INPUT_OFFSET + 2] = (adjusted >>> 8) & 0xff;
  input[HMAC_INPUT_OFFSET + 3] = adjusted & 0xff;
  return hmacOfInput(algorithm, key, attrStart);
}
