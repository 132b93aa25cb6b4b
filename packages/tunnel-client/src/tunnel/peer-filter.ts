// Defence in depth for the data path: the relay enforces the permissions (RFC 8656 §9), but a
// permissive or misconfigured one must still not get a stranger to the target. Both the UDP
// flows and the RFC 6062 pipes ask here first; a refusal is counted and logged at debug.

import {
  formatIp,
  formatTransportAddress,
  parseIp,
  type TransportAddress,
} from "@turnpike/relay-core/client";
import type { Logger } from "@turnpike/runtime-kit";

export class PeerFilter {
  /** Datagrams and connection attempts from peers outside --allow-peer (a permissive relay). */
  refused = 0;
  /** The allowed peer IPs, canonical (formatIp). */
  private readonly allowed: ReadonlySet<string>;

  constructor(
    allowedIps: readonly string[],
    private readonly log: Logger,
  ) {
    this.allowed = new Set(
      allowedIps.map((ip) => {
        const parsed = parseIp(ip);
        return parsed === undefined ? ip : formatIp(parsed);
      }),
    );
  }

  allows(peer: TransportAddress): boolean {
    const ip = parseIp(peer.address);
    if (ip !== undefined && this.allowed.has(formatIp(ip))) return true;
    this.refused++;
    this.log.debug("traffic from a peer outside --allow-peer dropped", {
      peer: formatTransportAddress(peer),
      refused: this.refused,
    });
    return false;
  }
}
