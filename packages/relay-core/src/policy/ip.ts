// IP address text <-> bytes. Strict by design: peer addresses come from untrusted
// XOR-PEER-ADDRESS attributes and from configuration, and every lenient form (octal
// "0177.0.0.1", short "127.1", zone ids) is a way to smuggle a denied address past a
// string-based check. Nothing here throws.

export type IpFamily = 4 | 6;

export interface ParsedIp {
  readonly family: IpFamily;
  /** 4 bytes for IPv4, 16 bytes for IPv6, network order. */
  readonly bytes: Uint8Array;
}

const CH_0 = 48;
const CH_9 = 57;
const CH_DOT = 46;
const CH_COLON = 58;
const CH_A_LOWER = 97;
const CH_F_LOWER = 102;
const CH_A_UPPER = 65;
const CH_F_UPPER = 70;

/**
 * Parses a strict dotted quad ("a.b.c.d", each 0..255, no leading zeros, no short forms)
 * between `start` and `end` of `text`. Returns the address as an unsigned 32-bit number,
 * or -1. A charCodeAt loop, no allocation: it runs per packet to build map keys.
 */
function parseDottedQuad(text: string, start: number, end: number): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let leadingZero = false;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c >= CH_0 && c <= CH_9) {
      // "01" is octal in inet_aton(): reject instead of guessing (a classic ACL bypass).
      if (leadingZero) return -1;
      if (digits === 0 && c === CH_0) leadingZero = true;
      octet = octet * 10 + (c - CH_0);
      digits++;
      if (octet > 255) return -1;
    } else if (c === CH_DOT) {
      if (digits === 0 || dots === 3) return -1;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      leadingZero = false;
      dots++;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0) return -1;
  return value * 256 + octet;
}

/** Dotted quad -> unsigned 32-bit number, or -1 when `text` is not a strict dotted quad. */
export function ipv4ToUint32(text: string): number {
  if (typeof text !== "string" || text.length < 7 || text.length > 15) return -1;
  return parseDottedQuad(text, 0, text.length);
}

function hexValue(c: number): number {
  if (c >= CH_0 && c <= CH_9) return c - CH_0;
  if (c >= CH_A_LOWER && c <= CH_F_LOWER) return c - CH_A_LOWER + 10;
  if (c >= CH_A_UPPER && c <= CH_F_UPPER) return c - CH_A_UPPER + 10;
  return -1;
}

/** RFC 4291 §2.2 text forms, including "::" and a dotted-quad tail. */
function parseIpv6(text: string, start: number, end: number): Uint8Array | undefined {
  if (end - start < 2 || end - start > 45) return undefined;
  // Groups before "::" fill from the front; groups after it are collected and moved
  // to the back once the "::" gap size is known.
  const bytes = new Uint8Array(16);
  let groups = 0; // 16-bit groups written so far
  let gapAt = -1; // group index where "::" sits
  let i = start;
  if (text.charCodeAt(i) === CH_COLON) {
    // A leading colon is only valid as part of a leading "::".
    if (text.charCodeAt(i + 1) !== CH_COLON) return undefined;
    gapAt = 0;
    i += 2;
    if (i === end) return bytes; // "::"
  }
  while (i < end) {
    if (groups >= 8) return undefined;
    // Read one group: up to 4 hex digits, or a dotted quad if a '.' shows up.
    let value = 0;
    let digits = 0;
    let j = i;
    let dotted = false;
    for (; j < end; j++) {
      const c = text.charCodeAt(j);
      if (c === CH_COLON) break;
      if (c === CH_DOT) {
        dotted = true;
        break;
      }
      const h = hexValue(c);
      if (h < 0 || digits === 4) return undefined;
      value = (value << 4) | h;
      digits++;
    }
    if (dotted) {
      // RFC 4291 §2.2 form 3: the IPv4 part must be the last 32 bits.
      if (groups > 6) return undefined;
      const v4 = parseDottedQuad(text, i, end);
      if (v4 < 0) return undefined;
      bytes[groups * 2] = v4 >>> 24;
      bytes[groups * 2 + 1] = (v4 >>> 16) & 0xff;
      bytes[groups * 2 + 2] = (v4 >>> 8) & 0xff;
      bytes[groups * 2 + 3] = v4 & 0xff;
      groups += 2;
      i = end;
      break;
    }
    if (digits === 0) return undefined;
    bytes[groups * 2] = value >>> 8;
    bytes[groups * 2 + 1] = value & 0xff;
    groups++;
    i = j;
    if (i === end) break;
    // At a colon: either a separator or the start of "::".
    i++;
    if (i < end && text.charCodeAt(i) === CH_COLON) {
      if (gapAt >= 0) return undefined; // only one "::" (RFC 4291 §2.2)
      gapAt = groups;
      i++;
    } else if (i === end) {
      return undefined; // trailing single colon
    }
  }
  if (gapAt < 0) return groups === 8 ? bytes : undefined;
  if (groups > 7) return undefined; // "::" stands for at least one group
  // Move the groups after the gap to the end.
  const tailBytes = (groups - gapAt) * 2;
  const from = gapAt * 2;
  const to = 16 - tailBytes;
  bytes.copyWithin(to, from, from + tailBytes);
  bytes.fill(0, from, to);
  return bytes;
}

/**
 * Parses an IPv4 dotted quad or RFC 4291 IPv6 text, optionally in [brackets]
 * (RFC 3986 §3.2.2). Zone ids ("fe80::1%eth0") are rejected: a relay peer address never
 * carries one. Returns undefined on anything else; never throws.
 */
export function parseIp(text: string): ParsedIp | undefined {
  if (typeof text !== "string") return undefined;
  let start = 0;
  let end = text.length;
  if (end === 0 || end > 47) return undefined;
  if (text.charCodeAt(0) === 91 /* [ */) {
    if (text.charCodeAt(end - 1) !== 93 /* ] */) return undefined;
    start = 1;
    end--;
    // Brackets are for IPv6 literals only (RFC 3986 §3.2.2).
    const v6 = parseIpv6(text, start, end);
    return v6 === undefined ? undefined : { family: 6, bytes: v6 };
  }
  const v4 = parseDottedQuad(text, start, end);
  if (v4 >= 0) {
    const bytes = new Uint8Array(4);
    bytes[0] = v4 >>> 24;
    bytes[1] = (v4 >>> 16) & 0xff;
    bytes[2] = (v4 >>> 8) & 0xff;
    bytes[3] = v4 & 0xff;
    return { family: 4, bytes };
  }
  const v6 = parseIpv6(text, start, end);
  return v6 === undefined ? undefined : { family: 6, bytes: v6 };
}

function formatDotted(b: Uint8Array, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/**
 * IPv4 as a dotted quad; IPv6 in RFC 5952 canonical form: lower-case hex, no leading
 * zeros (§4.1), the longest run of two or more zero groups compressed, the first on a
 * tie (§4.2), and "::ffff:a.b.c.d" for IPv4-mapped addresses (§5).
 */
export function formatIp(ip: ParsedIp): string {
  const b = ip.bytes;
  if (ip.family === 4) return b.length === 4 ? formatDotted(b, 0) : "";
  if (b.length !== 16) return "";
  let mapped = b[10] === 0xff && b[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (b[i] !== 0) mapped = false;
  if (mapped) return `::ffff:${formatDotted(b, 12)}`;
  let bestStart = -1;
  let bestLen = 1; // a single zero group is not compressed (RFC 5952 §4.2.2)
  let runStart = -1;
  for (let g = 0; g <= 8; g++) {
    const zero = g < 8 && b[g * 2] === 0 && b[g * 2 + 1] === 0;
    if (zero) {
      if (runStart < 0) runStart = g;
    } else if (runStart >= 0) {
      if (g - runStart > bestLen) {
        bestStart = runStart;
        bestLen = g - runStart;
      }
      runStart = -1;
    }
  }
  let out = "";
  for (let g = 0; g < 8; g++) {
    if (g === bestStart) {
      out += "::";
      g += bestLen - 1;
      continue;
    }
    if (out.length > 0 && !out.endsWith(":")) out += ":";
    out += (((b[g * 2] as number) << 8) | (b[g * 2 + 1] as number)).toString(16);
  }
  return out;
}
