// Which targets a service may expose, judged on the address the socket layer will dial.
//
// Reaching private and loopback services is the tunnel's job, so those are allowed; cloud
// instance metadata services are not: they answer anyone on the instance with its cloud
// credentials and identity, and exposing one hands them to a peer. They live at link-local
// addresses (169.254.169.254 on AWS, GCP, Azure, Oracle and others; 169.254.170.2 for ECS task
// credentials), at fd00:ec2::254 (AWS over IPv6) and at 100.100.100.200 (Alibaba Cloud). Every
// link-local address is refused (nothing legitimate to expose lives there that could not be
// reached another way), plus those two. --allow-metadata-targets lifts the rule for the rare
// deployment that means it.
//
// The rule is only as good as the parse it runs on, so a target host is read here the way
// net.connect and dgram will read it (parseTargetHost), and what is dialled is the address this
// module checked, never the text again:
//   - an IPv6 literal may carry a zone id (`fe80::1%eth0`): Node dials it as a literal with that
//     scope, so the address before the `%` is what is judged, and a zone id is accepted only on
//     a link-local address, the one kind it belongs to (RFC 4007 §11);
//   - IPv4-mapped and other IPv6 spellings that embed an IPv4 address are judged as that IPv4
//     address (::ffff:169.254.169.254 reaches the same host);
//   - a host whose every label is a number is what getaddrinfo's inet_aton makes of it
//     (`127.1`, `0x7f.1`, `2130706433`, `0251.0376.0251.0376`), or refused when it makes nothing
//     of it (`127.1.`: no DNS name has a numeric last label, RFC 3696 §2);
//   - anything else is a DNS name (a trailing dot allowed), judged by what it resolves to, on
//     every resolution and on every answer, right before the socket dials it: a name that
//     answers differently the next time (DNS rebinding) is judged again.

import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { type LookupFunction, type NetConnectOpts, connect as netConnect, Socket } from "node:net";
import { embeddedIpv4, formatIp, type ParsedIp, parseIp } from "@turnpike/relay-core/client";

/** A target host as the socket layer reads it. */
export type TargetHost =
  | {
      readonly kind: "address";
      readonly ip: ParsedIp;
      /** IPv6 zone id (the interface), as given. */
      readonly zone: string | undefined;
      /** What to hand the socket: the canonical address, with `%zone` when there is one. */
      readonly literal: string;
    }
  | { readonly kind: "name"; readonly name: string };

const ZONE_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const NUMERIC_LABEL = /^(0x[0-9a-f]*|[0-9]+)$/i;
const DNS_NAME =
  /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/;

/** `host` (an IPv6 literal without brackets, an IPv4 form or a name) as net.connect reads it. */
export function parseTargetHost(host: string): TargetHost | undefined {
  if (host.includes(":")) {
    const pct = host.indexOf("%");
    const zone = pct < 0 ? undefined : host.slice(pct + 1);
    if (zone !== undefined && !ZONE_ID.test(zone)) return undefined;
    const ip = parseIp(pct < 0 ? host : host.slice(0, pct));
    if (ip === undefined || ip.family !== 6) return undefined;
    const literal = zone === undefined ? formatIp(ip) : `${formatIp(ip)}%${zone}`;
    return { kind: "address", ip, zone, literal };
  }
  const bare = host.endsWith(".") ? host.slice(0, -1) : host;
  if (bare.split(".").every((label) => NUMERIC_LABEL.test(label))) {
    // getaddrinfo sends a trailing-dot form to DNS, where no such name exists: refused.
    const v4 = bare === host ? inetAton(host) : undefined;
    if (v4 === undefined) return undefined;
    const bytes = new Uint8Array([v4 >>> 24, (v4 >>> 16) & 0xff, (v4 >>> 8) & 0xff, v4 & 0xff]);
    const ip: ParsedIp = { family: 4, bytes };
    return { kind: "address", ip, zone: undefined, literal: formatIp(ip) };
  }
  if (host.length > 254 || !DNS_NAME.test(host)) return undefined;
  return { kind: "name", name: host };
}

/**
 * glibc's inet_aton, which getaddrinfo applies to a name before DNS: 1 to 4 parts, each decimal,
 * octal (leading 0) or hex (0x); the last part fills the remaining bytes. undefined: not one.
 */
function inetAton(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length > 4) return undefined;
  let value = 0;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    const n = /^0x[0-9a-f]+$/i.test(p)
      ? Number.parseInt(p.slice(2), 16)
      : /^0[0-7]*$/.test(p)
        ? Number.parseInt(p, 8)
        : /^[1-9][0-9]*$/.test(p)
          ? Number.parseInt(p, 10)
          : Number.NaN;
    const last = i === parts.length - 1;
    const max = last ? 2 ** (8 * (4 - i)) - 1 : 255;
    if (!(n <= max)) return undefined;
    value = last ? value * 2 ** (8 * (4 - i)) + n : value * 256 + n;
  }
  return value >>> 0;
}

/** Why an address may not be a target (cloud metadata, link-local), or undefined. */
function metadataReason(ip: ParsedIp): string | undefined {
  const b = ip.bytes;
  // IPv4, or an IPv6 spelling embedding it (::ffff:169.254.169.254 connects to the same host).
  const v4 =
    ip.family === 4
      ? ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0
      : embeddedIpv4(b);
  if (v4 >= 0) {
    if (v4 >>> 16 === 0xa9fe) return "link-local (169.254.0.0/16, cloud metadata services)";
    if (v4 === 0x646464c8) return "the Alibaba Cloud metadata service (100.100.100.200)";
    return undefined;
  }
  if (isLinkLocalV6(ip)) return "link-local (fe80::/10)";
  // fd00:ec2::254
  const ec2 = [0xfd, 0, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54];
  if (ec2.every((v, i) => b[i] === v)) return "the AWS metadata service (fd00:ec2::254)";
  return undefined;
}

function isLinkLocalV6(ip: ParsedIp): boolean {
  return ip.family === 6 && ip.bytes[0] === 0xfe && (ip.bytes[1]! & 0xc0) === 0x80;
}

/** Why `ip` may not be a target, or undefined. Text that is no IP address answers undefined. */
export function metadataAddress(ip: string): string | undefined {
  const t = parseTargetHost(ip);
  return t?.kind === "address" ? metadataReason(t.ip) : undefined;
}

/** The refusal for an address, or undefined when it may be dialled. */
function addressRefusal(
  host: string,
  t: Extract<TargetHost, { kind: "address" }>,
  allowMetadata: boolean,
): string | undefined {
  const why = allowMetadata ? undefined : metadataReason(t.ip);
  if (why !== undefined) {
    const as = t.literal === host ? "" : ` (${t.literal})`;
    return `target ${host}${as} is ${why}: refused unless --allow-metadata-targets is set`;
  }
  if (t.zone !== undefined && !isLinkLocalV6(t.ip)) {
    return `target ${host}: a zone id (%${t.zone}) belongs only on a link-local address (fe80::/10)`;
  }
  return undefined;
}

/**
 * The refusal text for exposing `host` as configured (--expose, POST /expose), or undefined. An
 * address is judged as the socket layer will read it; a name is judged when it resolves.
 */
export function targetRefusal(host: string, allowMetadata: boolean): string | undefined {
  const t = parseTargetHost(host);
  if (t === undefined) return `target ${host} is neither an IP address nor a DNS name`;
  return t.kind === "name" ? undefined : addressRefusal(host, t, allowMetadata);
}

/** The refusal for an address about to be dialled (a resolver's answer), or undefined. */
function dialRefusal(address: string, allowMetadata: boolean): string | undefined {
  const t = parseTargetHost(address);
  if (t?.kind !== "address") return `target address ${address} is not an IP address`;
  return addressRefusal(address, t, allowMetadata);
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;
export type Lookup = (hostname: string, options: object, callback: LookupCallback) => void;

/**
 * A `lookup` for net.connect that fails when a name resolves to an address that may not be a
 * target. Every answer is checked: net.connect asks for all of them (`all: true`) to race address
 * families, and dials only what this returns.
 */
export function refusingLookup(
  base: Lookup = dnsLookup as unknown as Lookup,
  allowMetadata = false,
): LookupFunction {
  const lookup: Lookup = (hostname, options, callback) => {
    base(hostname, options, (err, address, family) => {
      if (err) return callback(err, address, family);
      const answers = Array.isArray(address) ? address.map((a) => a.address) : [address];
      for (const ip of answers) {
        const refusal = dialRefusal(ip, allowMetadata);
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

/**
 * How one tunnel reaches its target: the policy above (with --allow-metadata-targets or
 * without) applied to the address each socket dials, through a resolver tests may replace.
 */
export class TargetDialer {
  private readonly lookup: LookupFunction;

  constructor(
    private readonly allowMetadata: boolean,
    base: Lookup = dnsLookup as unknown as Lookup,
  ) {
    this.lookup = refusingLookup(base, allowMetadata);
  }

  /**
   * The address a UDP service's datagrams go to, checked: a literal as parsed, a name by every
   * answer it resolves to now (the first is used). Throws why not.
   */
  resolve(host: string): Promise<{ address: string; family: 4 | 6 }> {
    const t = parseTargetHost(host);
    if (t === undefined) return Promise.reject(new Error(targetRefusal(host, true)));
    if (t.kind === "address") {
      const refusal = addressRefusal(host, t, this.allowMetadata);
      if (refusal !== undefined) return Promise.reject(new Error(refusal));
      return Promise.resolve({ address: t.literal, family: t.ip.family });
    }
    return new Promise((resolve, reject) => {
      this.lookup(t.name, { all: true }, (err, answers) => {
        const first = Array.isArray(answers) ? answers[0] : undefined;
        if (err !== null) reject(err);
        else if (first === undefined) reject(new Error(`${t.name} resolved to no address`));
        else resolve({ address: first.address, family: first.family === 6 ? 6 : 4 });
      });
    });
  }

  /**
   * A TCP connection to the target: a literal is checked here and dialled as the canonical
   * address; a name is dialled from what the checking lookup returns, on every connection. A
   * refused target is a socket that fails with the reason (its 'error', like a refusal).
   */
  connect(host: string, port: number, options: Omit<NetConnectOpts, "host" | "port">): Socket {
    const t = parseTargetHost(host);
    const refusal =
      t === undefined
        ? targetRefusal(host, true)
        : t.kind === "address"
          ? addressRefusal(host, t, this.allowMetadata)
          : undefined;
    if (t === undefined || refusal !== undefined) {
      const refused = new Socket();
      process.nextTick(() => refused.destroy(new Error(refusal)));
      return refused;
    }
    const dial = t.kind === "address" ? t.literal : t.name;
    return netConnect({ ...options, host: dial, port, lookup: this.lookup } as NetConnectOpts);
  }
}
