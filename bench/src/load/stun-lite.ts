// A minimal STUN/TURN message encoder and decoder for the load generator only (RFC 8489 §5,
// §14; RFC 8656 §18). It knows just the attributes the bench sends and reads; the product's
// codec lives in @turnpike/relay-core. Keeping the generator's own encoder small and separate
// means the bench never measures the server with the server's own parser on both ends.
import { createHash, createHmac, randomBytes } from "node:crypto";
import zlib from "node:zlib";

export const MAGIC_COOKIE = 0x2112a442;
export const HEADER_LENGTH = 20;

export const Method = {
  Binding: 0x001,
  Allocate: 0x003,
  Refresh: 0x004,
  Send: 0x006,
  Data: 0x007,
  CreatePermission: 0x008,
  ChannelBind: 0x009,
} as const;

export const Class = {
  Request: 0x0000,
  Indication: 0x0010,
  Success: 0x0100,
  Error: 0x0110,
} as const;

export const Attr = {
  Username: 0x0006,
  MessageIntegrity: 0x0008,
  ErrorCode: 0x0009,
  ChannelNumber: 0x000c,
  Lifetime: 0x000d,
  XorPeerAddress: 0x0012,
  Data: 0x0013,
  Realm: 0x0014,
  Nonce: 0x0015,
  XorRelayedAddress: 0x0016,
  RequestedTransport: 0x0019,
  XorMappedAddress: 0x0020,
  Software: 0x8022,
  Fingerprint: 0x8028,
} as const;

/** RFC 8489 §5: the method bits are interleaved with the two class bits. */
export function messageType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | cls;
}

export function methodOf(type: number): number {
  return (type & 0x000f) | ((type & 0x00e0) >> 1) | ((type & 0x3e00) >> 2);
}

export function classOf(type: number): number {
  return type & 0x0110;
}

export interface Address {
  address: string;
  port: number;
}

export function newTransactionId(): Buffer {
  return randomBytes(12);
}

/** RFC 8489 §14.2 / RFC 8656 §18: XOR-mapped IPv4 address value (the bench is IPv4 loopback). */
export function xorAddressValue(addr: Address): Buffer {
  const v = Buffer.alloc(8);
  v[1] = 0x01;
  v.writeUInt16BE(addr.port ^ (MAGIC_COOKIE >>> 16), 2);
  const parts = addr.address.split(".").map(Number);
  const ip = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
  v.writeUInt32BE((ip ^ MAGIC_COOKIE) >>> 0, 4);
  return v;
}

export function decodeXorAddress(v: Buffer): Address | undefined {
  if (v.length < 8 || v[1] !== 0x01) return undefined;
  const port = v.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16);
  const ip = (v.readUInt32BE(4) ^ MAGIC_COOKIE) >>> 0;
  return { address: `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`, port };
}

export type AttrList = [type: number, value: Buffer][];

export interface EncodeOptions {
  /** long-term key (RFC 8489 §9.2.2): adds MESSAGE-INTEGRITY */
  integrityKey?: Buffer;
  fingerprint?: boolean;
}

/** Encodes a STUN message; MESSAGE-INTEGRITY and FINGERPRINT come last, in that order. */
export function encode(
  type: number,
  transactionId: Buffer,
  attrs: AttrList,
  opts: EncodeOptions = {},
): Buffer {
  let bodyLen = 0;
  for (const [, v] of attrs) bodyLen += 4 + ((v.length + 3) & ~3);
  const miLen = opts.integrityKey ? 24 : 0;
  const fpLen = opts.fingerprint ? 8 : 0;
  const buf = Buffer.alloc(HEADER_LENGTH + bodyLen + miLen + fpLen);
  buf.writeUInt16BE(type, 0);
  buf.writeUInt32BE(MAGIC_COOKIE, 4);
  transactionId.copy(buf, 8);
  let off = HEADER_LENGTH;
  for (const [t, v] of attrs) {
    buf.writeUInt16BE(t, off);
    buf.writeUInt16BE(v.length, off + 2);
    v.copy(buf, off + 4);
    off += 4 + ((v.length + 3) & ~3);
  }
  if (opts.integrityKey) {
    // RFC 8489 §14.5: the length covers MESSAGE-INTEGRITY itself, not what follows it.
    buf.writeUInt16BE(off - HEADER_LENGTH + 24, 2);
    const mac = createHmac("sha1", opts.integrityKey).update(buf.subarray(0, off)).digest();
    buf.writeUInt16BE(Attr.MessageIntegrity, off);
    buf.writeUInt16BE(20, off + 2);
    mac.copy(buf, off + 4);
    off += 24;
  }
  if (opts.fingerprint) {
    // RFC 8489 §14.7
    buf.writeUInt16BE(off - HEADER_LENGTH + 8, 2);
    const crc = (zlib.crc32(buf.subarray(0, off)) ^ 0x5354554e) >>> 0;
    buf.writeUInt16BE(Attr.Fingerprint, off);
    buf.writeUInt16BE(4, off + 2);
    buf.writeUInt32BE(crc, off + 4);
    off += 8;
  }
  buf.writeUInt16BE(off - HEADER_LENGTH, 2);
  return buf;
}

export interface Decoded {
  type: number;
  transactionId: Buffer;
  /** first occurrence of each attribute (views into the input) */
  attrs: Map<number, Buffer>;
}

/** Never throws: undefined for anything that is not a well-formed STUN message. */
export function decode(buf: Buffer): Decoded | undefined {
  if (buf.length < HEADER_LENGTH || (buf[0]! & 0xc0) !== 0) return undefined;
  if (buf.readUInt32BE(4) !== MAGIC_COOKIE) return undefined;
  const len = buf.readUInt16BE(2);
  if (HEADER_LENGTH + len > buf.length || (len & 3) !== 0) return undefined;
  const attrs = new Map<number, Buffer>();
  let off = HEADER_LENGTH;
  const end = HEADER_LENGTH + len;
  while (off + 4 <= end) {
    const t = buf.readUInt16BE(off);
    const l = buf.readUInt16BE(off + 2);
    if (off + 4 + l > end) return undefined;
    if (!attrs.has(t)) attrs.set(t, buf.subarray(off + 4, off + 4 + l));
    off += 4 + ((l + 3) & ~3);
  }
  return { type: buf.readUInt16BE(0), transactionId: buf.subarray(8, 20), attrs };
}

export function errorCodeOf(msg: Decoded): number | undefined {
  const v = msg.attrs.get(Attr.ErrorCode);
  if (!v || v.length < 4) return undefined;
  return (v[2]! & 7) * 100 + v[3]!;
}

/** RFC 8489 §9.2.2: key = MD5(username ":" realm ":" password) */
export function longTermKey(username: string, realm: string, password: string): Buffer {
  return createHash("md5").update(`${username}:${realm}:${password}`).digest();
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

/** REQUESTED-TRANSPORT: protocol number in the first byte (17 = UDP), RFFU after. */
export function requestedTransportUdp(): Buffer {
  return Buffer.from([17, 0, 0, 0]);
}

export function channelNumberValue(channel: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16BE(channel, 0);
  return b;
}

/** A STUN Binding request, as used by the readiness probe. */
export function bindingRequest(transactionId = newTransactionId()): Buffer {
  return encode(messageType(Method.Binding, Class.Request), transactionId, [], {
    fingerprint: true,
  });
}
