// Relay name resolution. A relay name may stand for several relay instances (DNS round robin,
// a Kubernetes headless service); the tunnel holds ONE allocation per resolved relay IP per
// service, so losing one instance leaves the others serving (what the SSH connector did with one
// `ssh -R` per bastion IP, minus the shell loop). The supervisor re-resolves every --dns-interval
// and adds or removes allocations as the answer changes.
//
// Injectable so tests can map one name to 127.0.0.1 and 127.0.0.2 (StaticResolver, also reachable
// from the CLI through the test-only --resolve NAME=IP,IP option).

import { lookup } from "node:dns/promises";
import { isIP } from "node:net";

export interface Resolver {
  /** Every address of `host` (IP literals resolve to themselves), sorted, without duplicates. */
  resolve(host: string): Promise<string[]>;
}

function normalize(addresses: readonly string[]): string[] {
  return [...new Set(addresses.map((a) => (a.includes(":") ? a.toLowerCase() : a)))].sort();
}

/** The system resolver (getaddrinfo via dns.lookup, so /etc/hosts and search domains apply). */
export class DnsResolver implements Resolver {
  async resolve(host: string): Promise<string[]> {
    if (isIP(host) !== 0) return [host];
    const answers = await lookup(host, { all: true, verbatim: true });
    return normalize(answers.map((a) => a.address));
  }
}

/** Fixed answers for some names (tests); other names go to `fallback`. */
export class StaticResolver implements Resolver {
  private readonly table = new Map<string, string[]>();

  constructor(
    entries: Iterable<[string, readonly string[]]> = [],
    private readonly fallback: Resolver = new DnsResolver(),
  ) {
    for (const [name, ips] of entries) this.set(name, ips);
  }

  /** Changes the answer for `name` (the next re-resolution picks it up). */
  set(name: string, ips: readonly string[]): void {
    this.table.set(name.toLowerCase(), normalize(ips));
  }

  async resolve(host: string): Promise<string[]> {
    const fixed = this.table.get(host.toLowerCase());
    if (fixed !== undefined) return [...fixed];
    return this.fallback.resolve(host);
  }
}
