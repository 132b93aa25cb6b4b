// CIDR blocks (RFC 4632 §3.1 for IPv4, RFC 4291 §2.3 for IPv6) for the peer-address policy
// and its configuration. Nothing here throws.

import { formatIp, type IpFamily, type ParsedIp, parseIp } from "./ip.js";

export interface Cidr {
  readonly family: IpFamily;
  /** Network address with host bits cleared: 4 or 16 bytes. */
  readonly bytes: Uint8Array;
  /** 0..32 for IPv4, 0..128 for IPv6. */
  readonly prefix: number;
}

/**
 * Parses "10.0.0.0/8", "fe80::/10", "[2001:db8::]/32" or a bare address (a host prefix:
 * /32 or /128). Host bits set ("10.1.2.3/8") are accepted and cleared, as routers and
 * coturn's allowed-peer-ip do; prefix lengths must be plain decimal without leading zeros.
 */
export function parseCidr(text: string): Cidr | undefined {
  if (typeof text !== "string") return undefined;
  const slash = text.lastIndexOf("/");
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (ip === undefined) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const len = text.length - slash - 1;
    if (len < 1 || len > 3) return undefined;
    prefix = 0;
    for (let i = slash + 1; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) return undefined;
      if (i > slash + 1 && prefix === 0) return undefined; // "/08"
      prefix = prefix * 10 + (c - 48);
    }
    if (prefix > max) return undefined;
  }
  const bytes = ip.bytes; // freshly allocated by parseIp: safe to mask in place
  maskInPlace(bytes, prefix);
  return { family: ip.family, bytes, prefix };
}

function maskInPlace(bytes: Uint8Array, prefix: number): void {
  const full = prefix >>> 3;
  const rest = prefix & 7;
  if (full < bytes.length) {
    bytes[full] = (bytes[full] as number) & ((0xff << (8 - rest)) & 0xff);
    bytes.fill(0, full + 1);
  }
}

/** True when `ip` (same family) lies inside `cidr`. Allocation-free. */
export function cidrContains(cidr: Cidr, ip: ParsedIp): boolean {
  if (cidr.family !== ip.family) return false;
  const a = cidr.bytes;
  const b = ip.bytes;
  if (a.length !== b.length) return false;
  const full = cidr.prefix >>> 3;
  for (let i = 0; i < full; i++) if (a[i] !== b[i]) return false;
  const rest = cidr.prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[full] as number) & mask) === ((b[full] as number) & mask);
}

/** "address/prefix" text, the address in RFC 5952 form (for logs and error messages). */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr)}/${cidr.prefix}`;
}
