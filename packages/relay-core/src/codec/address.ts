import { formatIp, parseIp } from "../policy/ip.js";
import { AddressFamilyCode, MAGIC_COOKIE } from "./constants.js";

/** An IP address and port: the currency of every STUN/TURN address attribute (RFC 8489 §14.1). */
export interface TransportAddress {
  readonly family: 4 | 6;
  readonly address: string;
  readonly port: number;
}

/** `1.2.3.4:5` or `[::1]:5`, for logs and map keys outside the hot path. */
export function formatTransportAddress(a: TransportAddress): string {
  return a.family === 6 ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

/**
 * Decode the value of MAPPED-ADDRESS-style attributes (RFC 8489 §14.1), or the XOR'ed form
 * (RFC 8489 §14.2, used by XOR-MAPPED-, XOR-PEER- and XOR-RELAYED-ADDRESS) when
 * `transactionId` is given. Returns undefined on any malformed value.
 */
export function decodeAddressValue(
  value: Uint8Array,
  transactionId?: Uint8Array,
): TransportAddress | undefined {
  return decodeAddressAt(value, 0, value.length, transactionId);
}

/**
 * `decodeAddressValue` of the `length` bytes at `offset` of `bytes` (an attribute's value in a
 * decoded message, read in place). An IPv4 address is un-XOR'ed as numbers into its text; an
 * IPv6 one through a copy. Neither ever writes into `bytes`: the message is not ours.
 */
export function decodeAddressAt(
  bytes: Uint8Array,
  offset: number,
  length: number,
  transactionId?: Uint8Array,
): TransportAddress | undefined {
  if (length < 4) return undefined;
  const familyCode = bytes[offset + 1];
  let port = (bytes[offset + 2]! << 8) | bytes[offset + 3]!;
  if (transactionId) port ^= MAGIC_COOKIE >>> 16;
  if (familyCode === AddressFamilyCode.IPv4) {
    if (length !== 8) return undefined;
    const o = offset + 4;
    // RFC 8489 §14.2: an IPv4 X-Address is the address XOR the magic cookie.
    const x = transactionId ? MAGIC_COOKIE : 0;
    const address = `${bytes[o]! ^ (x >>> 24)}.${bytes[o + 1]! ^ ((x >>> 16) & 0xff)}.${bytes[o + 2]! ^ ((x >>> 8) & 0xff)}.${bytes[o + 3]! ^ (x & 0xff)}`;
    return { family: 4, address, port };
  }
  if (familyCode === AddressFamilyCode.IPv6) {
    if (length !== 20) return undefined;
    // A copy (new Uint8Array(view)): Buffer#slice would be a view, and the XOR below must never
    // write into the message it decodes.
    const ip = new Uint8Array(bytes.subarray(offset + 4, offset + 20));
    if (transactionId) xorCookie(ip, transactionId);
    return { family: 6, address: formatIp({ family: 6, bytes: ip }), port };
  }
  return undefined;
}

/** Encode an address attribute value (plain or XOR'ed). Returns undefined for an unparsable IP. */
export function encodeAddressValue(
  addr: TransportAddress,
  transactionId?: Uint8Array,
): Uint8Array | undefined {
  const ip = parseIp(addr.address);
  if (!ip) return undefined;
  const out = new Uint8Array(4 + ip.bytes.length);
  out[1] = ip.family === 4 ? AddressFamilyCode.IPv4 : AddressFamilyCode.IPv6;
  const port = transactionId ? addr.port ^ (MAGIC_COOKIE >>> 16) : addr.port;
  out[2] = (port >>> 8) & 0xff;
  out[3] = port & 0xff;
  const bytes = out.subarray(4);
  bytes.set(ip.bytes);
  if (transactionId) xorCookie(bytes, ip.family === 6 ? transactionId : undefined);
  return out;
}

/** RFC 8489 §14.2: X-Address = address XOR (magic cookie || transaction id). */
function xorCookie(bytes: Uint8Array, transactionId: Uint8Array | undefined): void {
  bytes[0]! ^= MAGIC_COOKIE >>> 24;
  bytes[1]! ^= (MAGIC_COOKIE >>> 16) & 0xff;
  bytes[2]! ^= (MAGIC_COOKIE >>> 8) & 0xff;
  bytes[3]! ^= MAGIC_COOKIE & 0xff;
  if (transactionId) for (let i = 0; i < 12; i++) bytes[4 + i]! ^= transactionId[i]!;
}
