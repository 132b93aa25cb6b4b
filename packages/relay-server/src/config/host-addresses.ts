// The host's own addresses, as the configuration needs them: a relay address when the
// listeners say only "any" (0.0.0.0, ::), and every address the relay answers on, which its
// peer policy refuses as a peer (RFC 8656 §21). The interface list is injected for tests.

import { isIPv4, isIPv6 } from "node:net";
import type { networkInterfaces as osNetworkInterfaces } from "node:os";
import { isUnspecified } from "./values.js";

export type Interfaces = ReturnType<typeof osNetworkInterfaces>;

/** Configured addresses (not unspecified) and every interface address, without duplicates. */
export function ownAddresses(
  configured: readonly (string | undefined)[],
  interfaces: Interfaces,
): string[] {
  const out = new Set<string>();
  for (const ip of configured) if (ip !== undefined && !isUnspecified(ip)) out.add(ip);
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (isIPv4(a.address) || isIPv6(a.address)) out.add(a.address.toLowerCase());
    }
  }
  return [...out];
}

export function firstHostAddress(interfaces: Interfaces, family: 4 | 6): string | undefined {
  for (const addrs of Object.values(interfaces)) {
    for (const a of addrs ?? []) {
      if (a.internal) continue;
      const fam = a.family === "IPv4" || (a.family as unknown) === 4 ? 4 : 6;
      if (fam !== family) continue;
      // Link-local IPv6 needs a zone id to be usable as a relayed address: skip it.
      if (fam === 6 && a.address.toLowerCase().startsWith("fe80:")) continue;
      return a.address;
    }
  }
  return undefined;
}
