/**
 * Addresses in the form the data path uses: numbers, never strings built per packet.
 *
 * The runtime describes where each datagram came from in one reused `DatagramSource` (IPv4 as
 * a uint32, IPv6 as four big-endian uint32 words, as a batched socket layer reports them), and
 * the server finds clients, permissions and channel bindings with number keys derived from it:
 *
 * - IPv4: the address itself (permissions) or `ip * 65536 + port` (clients, channel peers),
 *   exact and collision-free (at most 48 bits).
 * - IPv6: a 52-bit keyed hash of the words (and port), negated so it can never equal an IPv4
 *   key in the same map. 128 bits do not fit in a number, so a hash it is; every lookup
 *   compares the full words of what it found, so a collision (about 2^-52 per pair of
 *   addresses, with a per-server secret key an outsider cannot aim at) makes a lookup miss:
 *   the packet is dropped, never delivered to the wrong place.
 */
import { createHmac } from "node:crypto";
import { formatIp, ipv4ToUint32, parseIp } from "../policy/ip.js";

export class DatagramSource {
  family: 4 | 6 = 4;
  /** IPv4 address as an unsigned 32-bit number. */
  ip4 = 0;
  /** IPv6 address as four big-endian 32-bit words. */
  readonly ip6 = new Uint32Array(4);
  port = 0;
  /** An IPv6 source with a zone id (link-local): no TURN client or peer should be one. */
  scoped = false;

  setIpv4(ip: number, port: number): this {
    this.family = 4;
    this.ip4 = ip >>> 0;
    this.port = port;
    this.scoped = false;
    return this;
  }

  setIpv6(w0: number, w1: number, w2: number, w3: number, port: number, scoped = false): this {
    this.family = 6;
    this.ip6[0] = w0;
    this.ip6[1] = w1;
    this.ip6[2] = w2;
    this.ip6[3] = w3;
    this.port = port;
    this.scoped = scoped;
    return this;
  }

  /**
   * From text, as node:dgram and node:net report addresses ("fe80::1%eth0" marks a scoped
   * source). Returns false for text that is not an IP address.
   */
  setText(address: string, port: number): boolean {
    // IPv4 first, without allocating: the dgram data path calls this per packet.
    const v4 = ipv4ToUint32(address);
    if (v4 >= 0) {
      this.setIpv4(v4, port);
      return true;
    }
    const zone = address.indexOf("%");
    const parsed = parseIp(zone >= 0 ? address.slice(0, zone) : address);
    if (parsed === undefined) return false;
    const b = parsed.bytes;
    if (parsed.family === 4) {
      this.setIpv4(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0, port);
    } else {
      this.setIpv6(word(b, 0), word(b, 4), word(b, 8), word(b, 12), port, zone >= 0);
    }
    return true;
  }

  /** The canonical text form (RFC 5952 for IPv6). Allocates: control path only. */
  text(): string {
    if (this.family === 4) {
      const ip = this.ip4;
      return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
    }
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 4; i++) {
      const w = this.ip6[i]!;
      bytes[i * 4] = w >>> 24;
      bytes[i * 4 + 1] = (w >>> 16) & 0xff;
      bytes[i * 4 + 2] = (w >>> 8) & 0xff;
      bytes[i * 4 + 3] = w & 0xff;
    }
    return formatIp({ family: 6, bytes });
  }
}

function word(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

/** IPv6 text -> four big-endian words (undefined when not IPv6 text). */
export function ipv6Words(address: string): Uint32Array | undefined {
  const parsed = parseIp(address);
  if (parsed === undefined || parsed.family !== 6) return undefined;
  const b = parsed.bytes;
  return Uint32Array.of(word(b, 0), word(b, 4), word(b, 8), word(b, 12));
}

export function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  return a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3];
}

/** 2^32, to place a 20-bit lane above a 32-bit one (52 bits in all: a safe integer). */
const TWO_POW_32 = 4_294_967_296;

/** Keyed hashes for IPv6 map keys (see the file comment). */
export class AddressKeys {
  readonly #k: Uint32Array;

  /** `secret`: server-private bytes; the hash keys are derived from them (HMAC, own label). */
  constructor(secret: Uint8Array) {
    const d = createHmac("sha256", secret).update("turnpike address keys").digest();
    this.#k = Uint32Array.of(d.readUInt32LE(0), d.readUInt32LE(4), d.readUInt32LE(8));
  }

  /** Permission key of an IPv6 address. */
  ip6(w: Uint32Array): number {
    return this.#hash(w, 0x10000);
  }

  /** Client or channel-peer key of an IPv6 transport address. */
  ip6Port(w: Uint32Array, port: number): number {
    return this.#hash(w, port);
  }

  #hash(w: Uint32Array, port: number): number {
    // Two independent 32-bit lanes of murmur3-style mixing, each seeded with its own key.
    let a = this.#k[0]!;
    let b = this.#k[1]!;
    for (let i = 0; i < 4; i++) {
      a = mix(a, w[i]!);
      b = mix(b, w[i]! ^ this.#k[2]!);
    }
    a = fmix(mix(a, port));
    b = fmix(mix(b, port + 0x9e3779b9));
    return -1 - ((a >>> 0) + (b & 0xfffff) * TWO_POW_32);
  }
}

function mix(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** IPv4 client or channel-peer key: exact, at most 48 bits. */
export function ip4PortKey(ip: number, port: number): number {
  return ip * 65536 + port;
}
