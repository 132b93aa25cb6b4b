/**
 * The STUN message (RFC 8489 §5, §14): its shape, and decoding bytes into a view over them.
 * Reading attributes of a decoded message is in attributes.ts, encoding in message-builder.ts.
 */
import {
  AttributeType,
  FINGERPRINT_XOR,
  HEADER_LENGTH,
  KNOWN_ATTRIBUTES,
  type MessageClass,
} from "./constants.js";
import { crc32 } from "./crc32.js";

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

/**
 * Bytes as a string of the same length (one char per byte): a Map key for transaction ids and
 * tokens, built without a hex encoding step.
 */
export function bytesKey(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}
