// Which peer addresses a relay may send to. RFC 8656 §21 (§21.2 on permissions) warns
// that a TURN server is an open door into the network it sits in: without a policy a
// client can ask the relay to talk to 127.0.0.1, the metadata service at 169.254.169.254
// or anything on the relay's private LAN. Default: deny every special-purpose range of
// the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890) that is not
// globally reachable, plus multicast, and let configuration widen or narrow that.
//
// Every IPv6 form that embeds an IPv4 address is judged as that IPv4 address FIRST, so
// "::ffff:127.0.0.1", "::127.0.0.1", "64:ff9b::7f00:1" and "2002:7f00:1::" are loopback
// like "127.0.0.1" (the classic SSRF bypasses).
//
// The relay itself ("self-relay"): its own public address is globally reachable, so the ranges
// above let it through, and a client could reach whatever listens on the relay host (sshd, the
// health or metrics port) from inside its firewall. So, whatever the allow list says, unless
// `allowSelf`:
//   - the unspecified addresses 0.0.0.0 and :: (and their embedded forms) are denied: as a
//     destination they mean "this host";
//   - the relay's listening ports (TURN, health, metrics) are denied on its own addresses and
//     on loopback, for the protocol they listen on (a UDP peer on the health port's number is
//     not the health server);
//   - its own addresses (relay, public, listen and interface addresses) are denied on every
//     port outside the relay port range. Inside it they are other allocations' relayed
//     addresses: two clients of one relay (a WebRTC relay/relay candidate pair) must reach each
//     other, so those stay allowed.
// Loopback is the host too, but it has its own switch: it is denied by default and only an
// explicit `allowLoopback` or allow-list entry opens it (tests, a relay fronting services on the
// same host); even then the relay's own listening ports stay closed.

import { type Cidr, cidrContains, parseCidr } from "./cidr.js";
import { ipv4ToUint32, type ParsedIp, parseIp } from "./ip.js";

export type PeerDenyReason =
  | "invalid"
  | "unspecified"
  | "loopback"
  | "private"
  | "link-local"
  | "cgnat"
  | "multicast"
  | "broadcast"
  | "reserved"
  | "documentation"
  | "denied-by-config"
  | "self";

/** How the relay would reach a peer: datagrams (ChannelBind, Send) or RFC 6062 Connect. */
export type PeerProtocol = "udp" | "tcp";

/** What "the relay itself" is, for the self-relay rules above. */
export interface SelfAddresses {
  /** The relay's own IP addresses: relay, public (advertised), listen and interface addresses. */
  readonly addresses: readonly string[];
  /** Ports the relay process listens on: TURN on both, health and metrics on TCP. */
  readonly ports: { readonly udp: readonly number[]; readonly tcp: readonly number[] };
  /** The relay port range: own addresses on these ports are relayed addresses of allocations. */
  readonly relayPorts: { readonly min: number; readonly max: number };
}

export interface PeerAddressPolicyOptions {
  /** CIDRs (or bare addresses) allowed even if special-purpose; the deny list still wins. */
  readonly allow?: readonly string[];
  /** CIDRs (or bare addresses) always denied. */
  readonly deny?: readonly string[];
  /** Allow 127.0.0.0/8 and ::1 (tests, or a relay fronting services on the same host). */
  readonly allowLoopback?: boolean;
  /** The relay's own addresses and ports (without: only unspecified addresses count as self). */
  readonly self?: SelfAddresses;
  /** Turn the self-relay rules off (`--allow-self-peer`). */
  readonly allowSelf?: boolean;
}

/** An IPv4 block as (network, mask), both unsigned 32-bit numbers. */
interface V4Block {
  readonly net: number;
  readonly mask: number;
}

interface V4Rule extends V4Block {
  readonly reason: PeerDenyReason;
}

function v4Block(a: number, b: number, c: number, d: number, prefix: number): V4Block {
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { net: ((((a << 24) | (b << 16) | (c << 8) | d) >>> 0) & mask) >>> 0, mask };
}

function rule(reason: PeerDenyReason, a: number, b: number, c: number, d: number, p: number) {
  return { ...v4Block(a, b, c, d, p), reason };
}

// IANA IPv4 Special-Purpose Address Registry, entries with "Globally Reachable: False"
// (plus 224/4 multicast, RFC 5771). Order matters where blocks nest: broadcast sits
// inside 240/4. 192.0.0.0/24 is denied whole although 192.0.0.9 and 192.0.0.10 (PCP and
// TURN anycast) are global: a relay has no business relaying to another relay's anycast.
const V4_RULES: readonly V4Rule[] = [
  rule("unspecified", 0, 0, 0, 0, 8), // RFC 791 "this network"
  rule("private", 10, 0, 0, 0, 8), // RFC 1918
  rule("cgnat", 100, 64, 0, 0, 10), // RFC 6598 shared address space
  rule("loopback", 127, 0, 0, 0, 8), // RFC 1122 §3.2.1.3
  rule("link-local", 169, 254, 0, 0, 16), // RFC 3927 (cloud metadata services live here)
  rule("private", 172, 16, 0, 0, 12), // RFC 1918
  rule("reserved", 192, 0, 0, 0, 24), // RFC 6890 IETF protocol assignments
  rule("documentation", 192, 0, 2, 0, 24), // RFC 5737 TEST-NET-1
  rule("reserved", 192, 88, 99, 0, 24), // RFC 7526 deprecated 6to4 relay anycast
  rule("private", 192, 168, 0, 0, 16), // RFC 1918
  rule("reserved", 198, 18, 0, 0, 15), // RFC 2544 benchmarking
  rule("documentation", 198, 51, 100, 0, 24), // RFC 5737 TEST-NET-2
  rule("documentation", 203, 0, 113, 0, 24), // RFC 5737 TEST-NET-3
  rule("multicast", 224, 0, 0, 0, 4), // RFC 5771
  rule("broadcast", 255, 255, 255, 255, 32), // RFC 919 limited broadcast
  rule("reserved", 240, 0, 0, 0, 4), // RFC 1112 §4 "future use"
];

function v4Reason(v: number): PeerDenyReason | undefined {
  for (let i = 0; i < V4_RULES.length; i++) {
    const r = V4_RULES[i] as V4Rule;
    if ((v & r.mask) >>> 0 === r.net) return r.reason;
  }
  return undefined;
}

function allZero(b: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

function u32At(b: Uint8Array, at: number): number {
  return (
    (((b[at] as number) << 24) |
      ((b[at + 1] as number) << 16) |
      ((b[at + 2] as number) << 8) |
      (b[at + 3] as number)) >>>
    0
  );
}

/**
 * The IPv4 address an IPv6 address stands for, or -1. Forms (RFC 4291 §2.5.5, RFC 6052
 * §2.1, RFC 3056 §2, RFC 6145 §4.1 / RFC 2765 SIIT): IPv4-mapped ::ffff:0:0/96,
 * IPv4-compatible ::/96 (but not :: and ::1 themselves), NAT64 well-known prefix
 * 64:ff9b::/96, SIIT ::ffff:0:0:0/96 and 6to4 2002::/16 (IPv4 in bits 16..47).
 */
export function embeddedIpv4(b: Uint8Array): number {
  if (b.length !== 16) return -1;
  const b0 = b[0] as number;
  if (b0 === 0x20 && b[1] === 0x02) return u32At(b, 2); // 6to4
  if (b0 === 0 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    return allZero(b, 4, 12) ? u32At(b, 12) : -1; // NAT64 WKP; 64:ff9b:1::/48 is not
  }
  if (!allZero(b, 0, 8)) return -1;
  const w4 = ((b[8] as number) << 8) | (b[9] as number);
  const w5 = ((b[10] as number) << 8) | (b[11] as number);
  if (w4 === 0 && w5 === 0xffff) return u32At(b, 12); // IPv4-mapped
  if (w4 === 0xffff && w5 === 0) return u32At(b, 12); // SIIT IPv4-translated
  if (w4 === 0 && w5 === 0) {
    const v = u32At(b, 12);
    return v <= 1 ? -1 : v; // IPv4-compatible, except :: and ::1
  }
  return -1;
}

function isV6Loopback(b: Uint8Array): boolean {
  return allZero(b, 0, 15) && b[15] === 1;
}

// IANA IPv6 Special-Purpose Address Registry and IPv6 Address Space registry, for
// addresses that do not embed IPv4 (those were judged as IPv4 already).
function v6Reason(b: Uint8Array): PeerDenyReason | undefined {
  const b0 = b[0] as number;
  const b1 = b[1] as number;
  if (allZero(b, 0, 15)) {
    if (b[15] === 0) return "unspecified"; // RFC 4291 §2.5.2
    if (b[15] === 1) return "loopback"; // RFC 4291 §2.5.3
  }
  if (b0 === 0xff) return "multicast"; // RFC 4291 §2.7
  // fe80::/10 link-local (RFC 4291 §2.5.6); fec0::/10 deprecated site-local
  // (RFC 3879), scoped like link-local and never global.
  if (b0 === 0xfe && ((b1 & 0xc0) === 0x80 || (b1 & 0xc0) === 0xc0)) return "link-local";
  if ((b0 & 0xfe) === 0xfc) return "private"; // RFC 4193 unique local fc00::/7
  if (b0 === 0x20 && b1 === 0x01 && b[2] === 0x0d && b[3] === 0xb8) return "documentation"; // RFC 3849
  if (b0 === 0x3f && b1 === 0xff && ((b[2] as number) & 0xf0) === 0) return "documentation"; // RFC 9637 3fff::/20
  // 2001::/23 IETF protocol assignments (RFC 2928): Teredo 2001::/32 (whose embedded IPv4
  // is the Teredo server's, not the peer's), benchmarking 2001:2::/48, ORCHID... Denied
  // whole for the same reason as 192.0.0.0/24.
  if (b0 === 0x20 && b1 === 0x01 && ((b[2] as number) & 0xfe) === 0) return "reserved";
  // Only 2000::/3 is allocated global unicast (IANA IPv6 Address Space). The rest is
  // "Reserved by IETF" or non-global special purpose: 100::/64 discard (RFC 6666),
  // 64:ff9b:1::/48 local-use NAT64 (RFC 8215), 5f00::/16 SRv6 SIDs (RFC 9602), the
  // non-IPv4 remainder of ::/8, fe00::/9...
  if ((b0 & 0xe0) !== 0x20) return "reserved";
  return undefined;
}

/**
 * A configured list, split into IPv4 blocks and IPv6 CIDRs for cheap matching. An IPv4
 * entry matches the plain address and every IPv6 spelling that embeds it; an IPv6 entry
 * matches the IPv6 spelling only (so "deny 2002::/16" blocks 6to4, not all of IPv4).
 */
interface CompiledList {
  readonly v4: readonly V4Block[];
  readonly v6: readonly Cidr[];
}

function compileList(entries: readonly string[] | undefined, name: string): CompiledList {
  const v4: V4Block[] = [];
  const v6: Cidr[] = [];
  if (entries === undefined) return { v4, v6 };
  if (!Array.isArray(entries)) throw new Error(`peer address policy: "${name}" must be a list`);
  for (const entry of entries) {
    const cidr = typeof entry === "string" ? parseCidr(entry.trim()) : undefined;
    if (cidr === undefined) {
      throw new Error(
        `peer address policy: invalid CIDR ${JSON.stringify(entry)} in the ${name} list ` +
          `(expected e.g. "203.0.113.0/24", "2001:db8::/32" or a bare address)`,
      );
    }
    if (cidr.family === 4) {
      const b = cidr.bytes;
      v4.push(v4Block(b[0] as number, b[1] as number, b[2] as number, b[3] as number, cidr.prefix));
      continue;
    }
    v6.push(cidr);
  }
  return { v4, v6 };
}

function inV4(list: readonly V4Block[], v: number): boolean {
  for (let i = 0; i < list.length; i++) {
    const r = list[i] as V4Block;
    if ((v & r.mask) >>> 0 === r.net) return true;
  }
  return false;
}

function inV6(list: readonly Cidr[], ip: ParsedIp): boolean {
  for (let i = 0; i < list.length; i++) if (cidrContains(list[i] as Cidr, ip)) return true;
  return false;
}

export class PeerAddressPolicy {
  readonly #allow: CompiledList;
  readonly #deny: CompiledList;
  readonly #allowLoopback: boolean;
  readonly #allowSelf: boolean;
  /** Own addresses: IPv4 (raw or embedded) as numbers, other IPv6 as hex of the 16 bytes. */
  readonly #selfV4 = new Set<number>();
  readonly #selfV6 = new Set<string>();
  readonly #selfPorts: Record<PeerProtocol, Set<number>> = { udp: new Set(), tcp: new Set() };
  readonly #relayPorts: { readonly min: number; readonly max: number };

  /** Throws on an invalid CIDR or self address: a configuration error, reported at start-up. */
  constructor(options: PeerAddressPolicyOptions = {}) {
    this.#allow = compileList(options.allow, "allow");
    this.#deny = compileList(options.deny, "deny");
    this.#allowLoopback = options.allowLoopback === true;
    this.#allowSelf = options.allowSelf === true;
    const self = options.self;
    this.#relayPorts = self?.relayPorts ?? { min: 1, max: 0 };
    for (const text of self?.addresses ?? []) {
      const ip = parseIp(text);
      if (ip === undefined) {
        throw new Error(`peer address policy: invalid own address ${JSON.stringify(text)}`);
      }
      const v4 = ip.family === 4 ? u32At(ip.bytes, 0) : embeddedIpv4(ip.bytes);
      if (v4 >= 0) this.#selfV4.add(v4);
      else this.#selfV6.add(hex16(ip.bytes));
    }
    for (const port of self?.ports.udp ?? []) this.addSelfPort(port, "udp");
    for (const port of self?.ports.tcp ?? []) this.addSelfPort(port, "tcp");
  }

  /** A listening port learned after binding (a listener configured with port 0). */
  addSelfPort(port: number, protocol: PeerProtocol): void {
    if (Number.isInteger(port) && port > 0 && port <= 65535) this.#selfPorts[protocol].add(port);
  }

  /**
   * undefined = the relay may send to `address` (on `port`, when given); otherwise why not.
   * Without a port the answer is for the address as a whole (a permission, RFC 8656 §9, is per
   * IP): the relay's own address passes there, and its ports are judged where a port is known
   * (ChannelBind and Send over `protocol` "udp", the default; Connect over "tcp"). Never throws.
   */
  check(
    address: string,
    port?: number,
    protocol: PeerProtocol = "udp",
  ): PeerDenyReason | undefined {
    // Fast path: plain dotted quads, no allocation.
    const v = ipv4ToUint32(address);
    if (v >= 0) return this.#decide(v, undefined, port, protocol);
    const ip = parseIp(address);
    return ip === undefined ? "invalid" : this.checkParsed(ip, port, protocol);
  }

  checkParsed(
    ip: ParsedIp,
    port?: number,
    protocol: PeerProtocol = "udp",
  ): PeerDenyReason | undefined {
    if (ip === null || typeof ip !== "object" || !(ip.bytes instanceof Uint8Array)) {
      return "invalid";
    }
    if (ip.family === 4) {
      return ip.bytes.length === 4
        ? this.#decide(u32At(ip.bytes, 0), undefined, port, protocol)
        : "invalid";
    }
    if (ip.family !== 6 || ip.bytes.length !== 16) return "invalid";
    return this.#decide(embeddedIpv4(ip.bytes), ip, port, protocol);
  }

  /** `v4`: the IPv4 address (raw or embedded) or -1; `raw6`: the IPv6 form if any. */
  #decide(
    v4: number,
    raw6: ParsedIp | undefined,
    port: number | undefined,
    protocol: PeerProtocol,
  ): PeerDenyReason | undefined {
    const deny = this.#deny;
    if ((v4 >= 0 && inV4(deny.v4, v4)) || (raw6 !== undefined && inV6(deny.v6, raw6))) {
      return "denied-by-config";
    }
    const allow = this.#allow;
    const allowed =
      (v4 >= 0 && inV4(allow.v4, v4)) ||
      (raw6 !== undefined && inV6(allow.v6, raw6)) ||
      (this.#allowLoopback &&
        (v4 >= 0 ? v4 >>> 24 === 127 : raw6 !== undefined && isV6Loopback(raw6.bytes)));
    if (!allowed) {
      const reason = v4 >= 0 ? v4Reason(v4) : raw6 === undefined ? "invalid" : v6Reason(raw6.bytes);
      if (reason !== undefined) return reason;
    }
    // Whatever the allow list says (see the top of this file).
    return !this.#allowSelf && this.#isSelf(v4, raw6, port, protocol) ? "self" : undefined;
  }

  #isSelf(
    v4: number,
    raw6: ParsedIp | undefined,
    port: number | undefined,
    protocol: PeerProtocol,
  ): boolean {
    if (v4 === 0 || (v4 < 0 && raw6 !== undefined && allZero(raw6.bytes, 0, 16))) return true;
    const loopback = v4 >= 0 ? v4 >>> 24 === 127 : raw6 !== undefined && isV6Loopback(raw6.bytes);
    const own =
      v4 >= 0
        ? this.#selfV4.has(v4)
        : raw6 !== undefined && this.#selfV6.size > 0 && this.#selfV6.has(hex16(raw6.bytes));
    if (port === undefined || (!own && !loopback)) return false;
    if (this.#selfPorts[protocol].has(port)) return true;
    if (loopback) return false; // the loopback rule decides
    return port < this.#relayPorts.min || port > this.#relayPorts.max;
  }
}

function hex16(b: Uint8Array): string {
  let out = "";
  for (let i = 0; i < b.length; i++) out += (b[i] as number).toString(16).padStart(2, "0");
  return out;
}
