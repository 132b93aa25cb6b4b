// Allowed peers -> TURN permissions. A TURN permission is per IP address (RFC 8656 §9: the port
// is ignored), so an allow-list entry becomes one CreatePermission per address it contains. A
// CIDR is expanded here; one too large to express as permissions is an error result (the relay
// also caps permissions per allocation: turnpike-relay's --max-permissions defaults to 64).

import { type Cidr, formatIp, parseCidr } from "@turnpike/relay-core/client";

/** The smallest prefixes accepted: /24 is 256 addresses, /120 is 256 addresses. */
export const MIN_PREFIX_V4 = 24;
export const MIN_PREFIX_V6 = 120;

export interface PeerAllowList {
  /** As configured, for /list. */
  readonly entries: readonly string[];
  /** Every permitted address, RFC 5952 text, no duplicates. */
  readonly ips: readonly string[];
}

export function expandAllowList(
  entries: readonly string[],
  maxPermissions: number,
): PeerAllowList | { error: string } {
  const ips = new Set<string>();
  for (const entry of entries) {
    const cidr = parseCidr(entry.trim());
    if (cidr === undefined) return { error: `"${entry}" is not an IP address or CIDR` };
    const min = cidr.family === 4 ? MIN_PREFIX_V4 : MIN_PREFIX_V6;
    if (cidr.prefix < min) {
      return {
        error: `"${entry}" is too large: TURN permissions are per IP address, so at most a /${min} (${cidr.family === 4 ? "IPv4" : "IPv6"}) can be allowed`,
      };
    }
    for (const ip of addressesOf(cidr)) ips.add(ip);
    if (ips.size > maxPermissions) {
      return {
        error: `the allowed peers expand to more than ${maxPermissions} addresses (one TURN permission each; see --max-permissions)`,
      };
    }
  }
  return { entries: entries.map((e) => e.trim()), ips: [...ips] };
}

function* addressesOf(cidr: Cidr): Generator<string> {
  const hostBits = (cidr.family === 4 ? 32 : 128) - cidr.prefix; // <= 8 by the checks above
  const count = 1 << hostBits;
  const last = cidr.bytes.length - 1;
  for (let i = 0; i < count; i++) {
    const bytes = new Uint8Array(cidr.bytes);
    bytes[last] = (bytes[last]! | i) & 0xff;
    yield formatIp({ family: cidr.family, bytes });
  }
}
