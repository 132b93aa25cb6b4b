// Which targets a service may expose. Reaching private and loopback services is the tunnel's
// job, so those are allowed; cloud instance metadata services are not: they answer anyone on
// the instance with its cloud credentials and identity, and exposing one hands them to a peer.
// They live at link-local addresses (169.254.169.254 on AWS, GCP, Azure, Oracle and others;
// 169.254.170.2 for ECS task credentials), at fd00:ec2::254 (AWS over IPv6) and at
// 100.100.100.200 (Alibaba Cloud). Every link-local address is refused (nothing legitimate to
// expose lives there that could not be reached another way), plus those two. Names are checked
// after resolution (metadata.google.internal resolves to 169.254.169.254). --allow-metadata-
// targets lifts the rule for the rare deployment that means it.

import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import type { LookupFunction } from "node:net";
import { embeddedIpv4, parseIp } from "@turnpike/relay-core";

/** Why `ip` may not be a target, or undefined. Non-IP text answers undefined (a name). */
export function metadataAddress(ip: string): string | undefined {
  const parsed = parseIp(ip);
  if (parsed === undefined) return undefined;
  const b = parsed.bytes;
  // IPv4, or an IPv6 spelling embedding it (::ffff:169.254.169.254 connects to the same host).
  const v4 =
    parsed.family === 4
      ? ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0
      : embeddedIpv4(b);
  if (v4 >= 0) {
    if (v4 >>> 16 === 0xa9fe) return "link-local (169.254.0.0/16, cloud metadata services)";
    if (v4 === 0x646464c8) return "the Alibaba Cloud metadata service (100.100.100.200)";
    return undefined;
  }
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return "link-local (fe80::/10)";
  // fd00:ec2::254
  const ec2 = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54];
  if (ec2.every((v, i) => b[i] === v)) return "the AWS metadata service (fd00:ec2::254)";
  return undefined;
}

/** The refusal text for exposing `host` (an IP literal), or undefined when allowed. */
export function targetRefusal(host: string, allowMetadata: boolean): string | undefined {
  if (allowMetadata) return undefined;
  const why = metadataAddress(host);
  return why === undefined
    ? undefined
    : `target ${host} is ${why}: refused unless --allow-metadata-targets is set`;
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;
type Lookup = (hostname: string, options: object, callback: LookupCallback) => void;

/**
 * A `lookup` for net.connect that fails when a name resolves to a metadata address. Every
 * answer is checked: net.connect asks for all of them (`all: true`) to race address families.
 */
export function refusingLookup(base: Lookup = dnsLookup as unknown as Lookup): LookupFunction {
  const lookup: Lookup = (hostname, options, callback) => {
    base(hostname, options, (err, address, family) => {
      if (err) return callback(err, address, family);
      const answers = Array.isArray(address) ? address.map((a) => a.address) : [address];
      for (const ip of answers) {
        const refusal = targetRefusal(ip, false);
        if (refusal === undefined) continue;
        const e: NodeJS.ErrnoException = new Error(`${hostname} resolves to ${refusal.slice(7)}`);
        e.code = "EMETADATA";
        return callback(e, address, family);
      }
      callback(null, address, family);
    });
  };
  return lookup as unknown as LookupFunction;
}
