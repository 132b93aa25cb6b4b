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
 *
 * One pass checks every TLV (lengths, FINGERPRINT, unknown comprehension-required types) and
 * makes no object per attribute: the readers in attributes.ts walk the (already checked) TLVs
 * again for the one they want, which for a request's handful of attributes is cheaper than the
 * list of objects a request left to the garbage collector (bench/README.md, "2026-12-07, third
 * pass"). `attributes` is built on first use.
 */
export function decodeStun(bytes: Uint8Array): StunDecodeResult {
  if (bytes.length < HEADER_LENGTH) return { ok: false, error: "too-short" };
  if (!looksLikeStun(bytes)) return { ok: false, error: "not-stun" };
  const length = (bytes[2]! << 8) | bytes[3]!;
  // RFC 8489 §5: the length never counts the header and is a multiple of 4 (attributes are padded).
  if (length % 4 !== 0 || length + HEADER_LENGTH !== bytes.length) {
    return failure(bytes, "bad-length");
  }
  let unknownRequired: number[] | undefined;
  // Where the first MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 starts (bytes.length: none).
  let integrityStart = bytes.length;
  // Which types are there, one bit per type modulo 32 (see DecodedStunMessage.locate).
  let requiredTypes = 0;
  let optionalTypes = 0;
  let pos = HEADER_LENGTH;
  while (pos < bytes.length) {
    if (pos + 4 > bytes.length) return failure(bytes, "truncated-attribute");
    const attrType = (bytes[pos]! << 8) | bytes[pos + 1]!;
    const attrLength = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
    const next = pos + 4 + ((attrLength + 3) & ~3);
    if (next > bytes.length) return failure(bytes, "truncated-attribute");
    if (attrType < 0x8000) requiredTypes |= 1 << (attrType & 31);
    else optionalTypes |= 1 << (attrType & 31);
    if (attrType === AttributeType.Fingerprint) {
      // RFC 8489 §14.7: FINGERPRINT is the last attribute, 4 bytes, and must match.
      if (next !== bytes.length || attrLength !== 4) return failure(bytes, "misplaced-fingerprint");
      if (!fingerprintMatches(bytes, pos)) return failure(bytes, "bad-fingerprint");
    } else if (
      attrType === AttributeType.MessageIntegrity ||
      attrType === AttributeType.MessageIntegritySha256
    ) {
      if (integrityStart === bytes.length) integrityStart = pos;
    } else if (pos < integrityStart && attrType < 0x8000 && !knownRequired(attrType)) {
      if (!unknownRequired) unknownRequired = [];
      // One unknown type is enough for a 420; listing at most MAX_UNKNOWN keeps decoding linear
      // (a 64 KiB datagram can carry 16,000 distinct types) and the answer small.
      if (unknownRequired.length < MAX_UNKNOWN && !unknownRequired.includes(attrType)) {
        unknownRequired.push(attrType);
      }
    }
    pos = next;
  }
  return {
    ok: true,
    message: new DecodedStunMessage(
      bytes,
      integrityStart,
      unknownRequired ?? NO_UNKNOWN,
      requiredTypes,
      optionalTypes,
    ),
  };
}

/**
 * The comprehension-required types (0x0000-0x7FFF, RFC 8489 §14) this implementation
 * understands, one bit each (4 KiB): a request carries four or five of them, and a bit test
 * costs less than a Set lookup per attribute.
 */
const KNOWN_REQUIRED = new Uint8Array(0x8000 / 8);
for (const type of KNOWN_ATTRIBUTES) {
  if (type < 0x8000) KNOWN_REQUIRED[type >>> 3]! |= 1 << (type & 7);
}

function knownRequired(type: number): boolean {
  return (KNOWN_REQUIRED[type >>> 3]! & (1 << (type & 7))) !== 0;
}

/** A decode error; the header goes with it when it was sound (all but too-short and not-stun). */
function failure(bytes: Uint8Array, error: StunDecodeError): StunDecodeResult {
  const type = (bytes[0]! << 8) | bytes[1]!;
  return {
    ok: false,
    error,
    header: {
      method: methodOf(type),
      messageClass: classOf(type),
      transactionId: bytes.subarray(8, 20),
    },
  };
}

function methodOf(type: number): number {
  return (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
}

function classOf(type: number): MessageClass {
  return (((type >> 4) & 1) | ((type >> 7) & 2)) as MessageClass;
}

/**
 * Whether the attribute at `pos` of a message whose first integrity attribute starts at
 * `integrityStart` is listed (RFC 8489 §14.5, §14.6): everything up to and including the first
 * integrity attribute, then only MESSAGE-INTEGRITY-SHA256 (which may follow MESSAGE-INTEGRITY)
 * and FINGERPRINT (last, §14.7); anything else after MESSAGE-INTEGRITY is ignored.
 */
function listed(pos: number, type: number, integrityStart: number): boolean {
  return (
    pos <= integrityStart ||
    type === AttributeType.MessageIntegritySha256 ||
    type === AttributeType.Fingerprint
  );
}

/** What `decodeStun` answers: the checked bytes, read on demand. */
class DecodedStunMessage implements StunMessage {
  readonly bytes: Uint8Array;
  readonly method: number;
  readonly messageClass: MessageClass;
  readonly transactionId: Uint8Array;
  readonly unknownRequired: readonly number[];
  readonly #integrityStart: number;
  /**
   * Bit `type & 31` set for every comprehension-required (below 0x8000) or -optional type
   * present, listed or not: a clear bit means no attribute of that type, so `locate` answers at
   * once. The readers ask for more absent attributes than present ones (USERHASH,
   * MESSAGE-INTEGRITY-SHA256, PASSWORD-ALGORITHM(S), RESERVATION-TOKEN, EVEN-PORT, ... on every
   * request), and each absent one was a walk of every TLV. A set bit may belong to another
   * type: then the walk decides.
   */
  readonly #requiredTypes: number;
  readonly #optionalTypes: number;
  #attributes: StunAttribute[] | undefined;

  constructor(
    bytes: Uint8Array,
    integrityStart: number,
    unknownRequired: readonly number[],
    requiredTypes: number,
    optionalTypes: number,
  ) {
    const type = (bytes[0]! << 8) | bytes[1]!;
    this.bytes = bytes;
    this.method = methodOf(type);
    this.messageClass = classOf(type);
    // An own property, as the header fields are: a copy made by spreading keeps it.
    this.transactionId = bytes.subarray(8, 20);
    this.unknownRequired = unknownRequired;
    this.#integrityStart = integrityStart;
    this.#requiredTypes = requiredTypes;
    this.#optionalTypes = optionalTypes;
  }

  /**
   * Listed on first read, then kept. An accessor: a copy made by spreading (`{ ...msg }`) has
   * no `attributes` of its own, and the readers then list them from its bytes (attributesOf).
   */
  get attributes(): readonly StunAttribute[] {
    if (this.#attributes === undefined) {
      const list: StunAttribute[] = [];
      const bytes = this.bytes;
      for (let pos = HEADER_LENGTH; pos < bytes.length; ) {
        const type = (bytes[pos]! << 8) | bytes[pos + 1]!;
        const length = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
        if (listed(pos, type, this.#integrityStart)) list.push({ type, offset: pos + 4, length });
        pos += 4 + ((length + 3) & ~3);
      }
      this.#attributes = list;
    }
    return this.#attributes;
  }

  /**
   * The first listed attribute of `type` at or after the TLV at `from` into `found`; false when
   * there is none. The TLVs were checked by decodeStun, so the walk stays inside `bytes`.
   */
  static locate(msg: DecodedStunMessage, type: number, from: number): boolean {
    const present = type < 0x8000 ? msg.#requiredTypes : msg.#optionalTypes;
    if ((present & (1 << (type & 31))) === 0) return false;
    const bytes = msg.bytes;
    for (let pos = from; pos < bytes.length; ) {
      const t = (bytes[pos]! << 8) | bytes[pos + 1]!;
      const length = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
      if (t === type && listed(pos, t, msg.#integrityStart)) {
        found.offset = pos + 4;
        found.length = length;
        found.next = pos + 4 + ((length + 3) & ~3);
        return true;
      }
      pos += 4 + ((length + 3) & ~3);
    }
    return false;
  }
}

/**
 * Where `locateAttribute` found its attribute: one object for the process, overwritten by the
 * next call (the readers use it at once, nothing in between can call again).
 */
export const found = { offset: 0, length: 0, next: 0 };

/**
 * The first attribute of `type` (RFC 8489 §14: only the first occurrence counts) into `found`,
 * with no object made; false when absent. With `after` true, the next one after the last found
 * (for attributes that may repeat, RFC 8656 §10: XOR-PEER-ADDRESS). Internal to relay-core: the
 * public readers are getAttribute and the others in attributes.ts.
 */
export function locateAttribute(msg: StunMessage, type: number, after = false): boolean {
  if (msg instanceof DecodedStunMessage) {
    return DecodedStunMessage.locate(msg, type, after ? found.next : HEADER_LENGTH);
  }
  // A StunMessage made by hand: its list is what counts. `next` is an index into it here.
  const list = attributesOf(msg);
  for (let i = after ? found.next : 0; i < list.length; i++) {
    const a = list[i]!;
    if (a.type === type) {
      found.offset = a.offset;
      found.length = a.length;
      found.next = i + 1;
      return true;
    }
  }
  return false;
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

/**
 * The attributes a reader goes by: the message's list, or, for an object without one (a copy
 * of a decoded message made by spreading it: the list is an accessor and stays behind), the
 * listing decodeStun gives, made from its bytes with every bound checked.
 */
export function attributesOf(msg: StunMessage): readonly StunAttribute[] {
  if (msg.attributes !== undefined) return msg.attributes;
  const bytes = msg.bytes;
  const list: StunAttribute[] = [];
  let integrityStart = bytes.length;
  for (let pos = HEADER_LENGTH; pos + 4 <= bytes.length; ) {
    const type = (bytes[pos]! << 8) | bytes[pos + 1]!;
    const length = (bytes[pos + 2]! << 8) | bytes[pos + 3]!;
    if (pos + 4 + length > bytes.length) break;
    const integrity =
      type === AttributeType.MessageIntegrity || type === AttributeType.MessageIntegritySha256;
    if (integrity && integrityStart === bytes.length) integrityStart = pos;
    if (listed(pos, type, integrityStart)) list.push({ type, offset: pos + 4, length });
    pos += 4 + ((length + 3) & ~3);
  }
  return list;
}
