// The PROXY protocol header (HAProxy's "PROXY protocol" specification, versions 1 and 2) that
// a load balancer puts before a client's bytes on a TCP connection: the client's real address,
// which the relay then uses for auth, quotas, per-source caps, logs and XOR-MAPPED-ADDRESS.
//
// Pure and total: `parseProxyHeader` looks only at the bytes it is given (never beyond
// `bytes.length`), never throws, and says "incomplete" for a prefix of a header that may still
// become valid, so a caller simply appends what arrives and asks again. Anything else is
// "invalid" with a reason (for the debug log); a header that would be longer than the caller
// may hold is invalid too, so a stranger cannot make the relay buffer more than a few KiB.
//
//   v1  "PROXY TCP4 203.0.113.7 192.0.2.1 5555 3478\r\n"   text, at most 107 bytes (spec §2.1)
//       "PROXY UNKNOWN ...\r\n"                           the connection's own endpoints
//   v2  "\r\n\r\n\0\r\nQUIT\n" ver/cmd fam/proto len16   binary (spec §2.2): LOCAL or PROXY,
//       INET/INET6 over STREAM, then TLVs (checked for bounds, otherwise skipped)

import { formatIp, parseIp } from "@turnpike/relay-core";

/** What the first bytes of a connection from a trusted load balancer say. */
export type ProxyHeader =
  /** Not all of the header is here yet: read more and call again. */
  | { readonly kind: "incomplete" }
  /** Not a valid header (or longer than allowed): refuse the connection. */
  | { readonly kind: "invalid"; readonly reason: string }
  /**
   * A valid header that names no client (v1 UNKNOWN, v2 LOCAL or AF_UNSPEC: the balancer's
   * own health check): the connection's own endpoints stand. `length` bytes are the header.
   */
  | { readonly kind: "local"; readonly length: number }
  /** The client's address and port; `length` bytes are the header, the client's bytes follow. */
  | {
      readonly kind: "proxy";
      readonly length: number;
      readonly family: 4 | 6;
      readonly address: string;
      readonly port: number;
    };

/** A v1 header is at most 107 bytes, CRLF included (spec §2.1). */
export const MAX_V1_HEADER = 107;
/**
 * The longest v2 header taken (16 bytes and the address block with its TLVs). The format allows
 * 64 KiB; load balancers send a few dozen bytes of TLVs (AWS's VPC endpoint id, GCP's PSC
 * connection id, SSL details), so 4 KiB leaves room while bounding what a header may hold.
 */
export const MAX_V2_HEADER = 4096;

const V1_PREFIX = Buffer.from("PROXY ", "latin1");
/** Spec §2.2: the 12-byte signature no valid v1 header or TURN message starts with. */
export const V2_SIGNATURE = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

const INCOMPLETE: ProxyHeader = { kind: "incomplete" };

function invalid(reason: string): ProxyHeader {
  return { kind: "invalid", reason };
}

/** The header at the start of `bytes`, if any (see ProxyHeader). */
export function parseProxyHeader(bytes: Uint8Array): ProxyHeader {
  if (bytes.length === 0) return INCOMPLETE;
  if (bytes[0] === V1_PREFIX[0]) return parseV1(bytes);
  if (bytes[0] === V2_SIGNATURE[0]) return parseV2(bytes);
  return invalid("no PROXY header");
}

/** True when the first min(n, prefix.length) bytes of `bytes` are those of `prefix`. */
function startsLike(bytes: Uint8Array, prefix: Uint8Array): boolean {
  const n = Math.min(bytes.length, prefix.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Version 1 (spec §2.1): "PROXY" SP protocol SP src SP dst SP sport SP dport CRLF

function parseV1(bytes: Uint8Array): ProxyHeader {
  if (!startsLike(bytes, V1_PREFIX)) return invalid("no PROXY header");
  const limit = Math.min(bytes.length, MAX_V1_HEADER);
  let lf = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    if (bytes[i] === 0x0a) {
      lf = i;
      break;
    }
  }
  if (lf < 0) {
    return bytes.length >= MAX_V1_HEADER
      ? invalid(`v1 header longer than ${MAX_V1_HEADER} bytes`)
      : INCOMPLETE;
  }
  if (bytes[lf - 1] !== 0x0d) return invalid("v1 header not ended by CRLF");
  const length = lf + 1;
  const line = Buffer.from(bytes.buffer, bytes.byteOffset, lf - 1).toString("latin1");
  const fields = line.split(" ");
  // "PROXY UNKNOWN" may be followed by anything up to the CRLF (spec §2.1).
  if (fields[1] === "UNKNOWN") return { kind: "local", length };
  if (fields.length !== 6) return invalid("v1 header without 6 fields");
  const [, proto, src, dst, sport, dport] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const family = proto === "TCP4" ? 4 : proto === "TCP6" ? 6 : 0;
  if (family === 0) return invalid("v1 protocol is not TCP4, TCP6 or UNKNOWN");
  const source = parseIp(src);
  const destination = parseIp(dst);
  // Plain address text of the named family: no brackets, no zone (spec §2.1).
  if (source?.family !== family || destination?.family !== family || src.startsWith("["))
    return invalid("v1 address is not of the named family");
  const port = parsePort(sport);
  if (port < 0 || parsePort(dport) < 0) return invalid("v1 port is not 0..65535");
  return { kind: "proxy", length, family, address: formatIp(source), port };
}

/** A decimal port without leading zeros (spec §2.1), or -1. */
function parsePort(text: string): number {
  if (text.length < 1 || text.length > 5 || (text.length > 1 && text[0] === "0")) return -1;
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n <= 65535 ? n : -1;
}

// ---------------------------------------------------------------------------------------------
// Version 2 (spec §2.2): signature(12) ver_cmd(1) fam(1) len(2, network order) address block

const COMMAND_LOCAL = 0x0;
const COMMAND_PROXY = 0x1;
const AF_UNSPEC = 0x0;
const AF_INET = 0x1;
const AF_INET6 = 0x2;
const PROTO_STREAM = 0x1;
/** The address block's size for TCP over IPv4 (4+4+2+2) and over IPv6 (16+16+2+2). */
const INET_BLOCK = 12;
const INET6_BLOCK = 36;

function parseV2(bytes: Uint8Array): ProxyHeader {
  if (!startsLike(bytes, V2_SIGNATURE)) return invalid("no PROXY header");
  if (bytes.length < 16) return INCOMPLETE;
  const verCmd = bytes[12] as number;
  if (verCmd >> 4 !== 2) return invalid("v2 version is not 2");
  const command = verCmd & 0x0f;
  if (command !== COMMAND_LOCAL && command !== COMMAND_PROXY)
    return invalid("v2 command is not LOCAL or PROXY");
  const family = (bytes[13] as number) >> 4;
  const proto = (bytes[13] as number) & 0x0f;
  const blockLength = ((bytes[14] as number) << 8) | (bytes[15] as number);
  const length = 16 + blockLength;
  if (length > MAX_V2_HEADER) return invalid(`v2 header longer than ${MAX_V2_HEADER} bytes`);
  if (bytes.length < length) return INCOMPLETE;
  // LOCAL: the balancer speaks for itself (health checks); its address block is ignored.
  if (command === COMMAND_LOCAL) return { kind: "local", length };
  // AF_UNSPEC: "the receiver must accept this connection ... and use the real endpoints".
  if (family === AF_UNSPEC) return { kind: "local", length };
  if ((family !== AF_INET && family !== AF_INET6) || proto !== PROTO_STREAM)
    return invalid("v2 address family is not TCP over IPv4 or IPv6");
  const v4 = family === AF_INET;
  const block = v4 ? INET_BLOCK : INET6_BLOCK;
  if (blockLength < block) return invalid("v2 address block too short for its family");
  if (!tlvsFit(bytes, 16 + block, length)) return invalid("v2 TLV runs past the header");
  const size = v4 ? 4 : 16;
  const source = Uint8Array.from(bytes.subarray(16, 16 + size));
  const portAt = 16 + 2 * size;
  const port = ((bytes[portAt] as number) << 8) | (bytes[portAt + 1] as number);
  const ipFamily = v4 ? 4 : 6;
  return {
    kind: "proxy",
    length,
    family: ipFamily,
    address: formatIp({ family: ipFamily, bytes: source }),
    port,
  };
}

/**
 * The TLVs from `at` to `end` (spec §2.2.7: type(1) length(2) value) each lie within the
 * header. Their contents are not needed here: the relay skips them.
 */
function tlvsFit(bytes: Uint8Array, at: number, end: number): boolean {
  let i = at;
  while (i < end) {
    if (i + 3 > end) return false;
    const valueLength = ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    i += 3 + valueLength;
  }
  return i === end;
}
