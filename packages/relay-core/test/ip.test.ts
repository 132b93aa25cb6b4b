import { isIP } from "node:net";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cidrContains, formatCidr, parseCidr } from "../src/policy/cidr.js";
import { formatIp, ipv4ToUint32, type ParsedIp, parseIp } from "../src/policy/ip.js";

const v4Bytes = fc.uint8Array({ minLength: 4, maxLength: 4 });
const v6Bytes = fc.uint8Array({ minLength: 16, maxLength: 16 });
// Addresses rich in zero groups, so "::" compression is exercised, not just random noise.
const v6Sparse = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  })
  .map((groups) => {
    const b = new Uint8Array(16);
    groups.forEach((g, i) => {
      b[i * 2] = g >> 8;
      b[i * 2 + 1] = g & 0xff;
    });
    return b;
  });

function bigOf(bytes: Uint8Array): bigint {
  let v = 0n;
  for (const byte of bytes) v = (v << 8n) | BigInt(byte);
  return v;
}

describe("parseIp / formatIp", () => {
  it("formats IPv6 in RFC 5952 canonical form", () => {
    const cases: [string, string][] = [
      ["2001:0db8::0001", "2001:db8::1"], // §4.1 leading zeros
      ["2001:db8:0:0:0:0:2:1", "2001:db8::2:1"], // §4.2.1 longest run
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // §4.2.2 a lone zero stays
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // §4.2.3 the longer run
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // §4.2.3 first of equal runs
      ["2001:DB8::AbCd", "2001:db8::abcd"], // §4.3 lower case
      ["0:0:0:0:0:ffff:c000:0201", "::ffff:192.0.2.1"], // §5 mapped
      ["0:0:0:0:0:0:0:0", "::"],
      ["0:0:0:0:0:0:0:1", "::1"],
      ["1:0:0:0:0:0:0:0", "1::"],
      ["[fe80::1]", "fe80::1"],
      ["::1.2.3.4", "::102:304"],
      ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
      ["::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"],
    ];
    for (const [input, canonical] of cases) {
      const ip = parseIp(input);
      expect(ip?.family, input).toBe(6);
      expect(formatIp(ip as ParsedIp), input).toBe(canonical);
    }
  });

  it("rejects every lenient or malformed spelling", () => {
    const bad = [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.2.3.4", // octal in inet_aton
      "0177.0.0.1",
      "0x7f.0.0.1",
      "127.1", // short form
      "2130706433", // integer form
      " 1.2.3.4",
      "1.2.3.4 ",
      "1..2.3",
      "fe80::1%eth0", // zone id
      "[fe80::1%25eth0]",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "1::2::3",
      ":1",
      "1:",
      ":::",
      "12345::",
      "g::",
      "::1.2.3",
      "::01.2.3.4",
      "1:2:3:4:5:6:7:1.2.3.4",
      "1.2.3.4::",
      "[1.2.3.4]",
      "[::1",
      "::1]",
    ];
    for (const text of bad) expect(parseIp(text), text).toBeUndefined();
  });

  it("parses a dotted quad to its four bytes and back", () => {
    fc.assert(
      fc.property(v4Bytes, (bytes) => {
        const text = formatIp({ family: 4, bytes });
        const ip = parseIp(text);
        expect(ip?.family).toBe(4);
        expect(ip?.bytes).toEqual(bytes);
        expect(ipv4ToUint32(text)).toBe(Number(bigOf(bytes)));
      }),
    );
  });

  it("round-trips any IPv6 address through its canonical text", () => {
    fc.assert(
      fc.property(fc.oneof(v6Bytes, v6Sparse), (bytes) => {
        const text = formatIp({ family: 6, bytes });
        const ip = parseIp(text);
        expect(ip?.family).toBe(6);
        expect(ip?.bytes).toEqual(bytes);
        expect(isIP(text)).toBe(6);
      }),
    );
  });

  it("formats like the WHATWG URL serializer (an independent RFC 5952 implementation)", () => {
    fc.assert(
      fc.property(fc.oneof(v6Bytes, v6Sparse), (bytes) => {
        const text = formatIp({ family: 6, bytes });
        // WHATWG does not use the dotted tail for IPv4-mapped addresses (RFC 5952 §5).
        fc.pre(!text.startsWith("::ffff:") || !text.includes("."));
        expect(new URL(`http://[${text}]/`).hostname).toBe(`[${text}]`);
      }),
    );
  });

  it("reads every RFC 4291 §2.2 spelling of an address as the same bytes", () => {
    const spelling = fc.record({
      bytes: v6Sparse,
      upper: fc.boolean(),
      pad: fc.boolean(),
      compressAt: fc.integer({ min: -1, max: 7 }),
      dottedTail: fc.boolean(),
      brackets: fc.boolean(),
    });
    fc.assert(
      fc.property(spelling, ({ bytes, upper, pad, compressAt, dottedTail, brackets }) => {
        const groups: string[] = [];
        for (let i = 0; i < 8; i++) {
          let g = ((bytes[i * 2] as number) * 256 + (bytes[i * 2 + 1] as number)).toString(16);
          if (pad) g = g.padStart(4, "0");
          groups.push(upper ? g.toUpperCase() : g);
        }
        let tail: string[] = [];
        if (dottedTail) {
          groups.length = 6;
          tail = [`${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`];
        }
        let parts = [...groups, ...tail];
        let text = parts.join(":");
        // Compress a run of zero groups starting at compressAt (at least one group).
        if (compressAt >= 0 && compressAt < groups.length && /^0+$/.test(groups[compressAt]!)) {
          let end = compressAt;
          while (end < groups.length && /^0+$/.test(groups[end]!)) end++;
          parts = [...groups.slice(0, compressAt), "", ...groups.slice(end), ...tail];
          text = parts.join(":");
          if (compressAt === 0) text = `:${text}`;
          if (end === groups.length && tail.length === 0) text = `${text}:`;
        }
        if (brackets) text = `[${text}]`;
        const ip = parseIp(text);
        expect(ip?.bytes, text).toEqual(bytes);
      }),
    );
  });

  it("never throws and accepts only what Node also calls an IP address", () => {
    const alphabet = fc.constantFrom(..."0123456789abcdefABCDEF:.[]%xg ".split(""));
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 45 })), (text) => {
        const ip = parseIp(text);
        if (ip !== undefined) {
          const bare = text.startsWith("[") ? text.slice(1, -1) : text;
          expect(isIP(bare)).toBe(ip.family);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("ipv4ToUint32 rejects what is not a strict dotted quad", () => {
    expect(ipv4ToUint32("0.0.0.0")).toBe(0);
    expect(ipv4ToUint32("255.255.255.255")).toBe(0xffffffff);
    expect(ipv4ToUint32("192.0.2.1")).toBe(0xc0000201);
    for (const text of [
      "",
      "::1",
      "1.2.3",
      "01.2.3.4",
      "1.2.3.256",
      "a.b.c.d",
      "1.2.3.4.",
      "[1.2.3.4]",
    ]) {
      expect(ipv4ToUint32(text), text).toBe(-1);
    }
    expect(ipv4ToUint32(undefined as unknown as string)).toBe(-1);
  });
});

describe("parseCidr / cidrContains", () => {
  it("parses prefixes, masks host bits and takes a bare address as a host route", () => {
    expect(formatCidr(parseCidr("10.0.0.0/8")!)).toBe("10.0.0.0/8");
    expect(formatCidr(parseCidr("10.1.2.3/8")!)).toBe("10.0.0.0/8");
    expect(formatCidr(parseCidr("fe80::1/10")!)).toBe("fe80::/10");
    expect(formatCidr(parseCidr("[2001:db8::]/32")!)).toBe("2001:db8::/32");
    expect(formatCidr(parseCidr("192.0.2.7")!)).toBe("192.0.2.7/32");
    expect(formatCidr(parseCidr("::1")!)).toBe("::1/128");
    expect(formatCidr(parseCidr("0.0.0.0/0")!)).toBe("0.0.0.0/0");
    expect(formatCidr(parseCidr("ff00::/8")!)).toBe("ff00::/8");
  });

  it("rejects bad prefixes and addresses", () => {
    for (const text of [
      "10.0.0.0/33",
      "::/129",
      "10.0.0.0/",
      "10.0.0.0/08",
      "10.0.0.0/-1",
      "10.0.0.0/8/8",
      "10.0.0/8",
      "/8",
      "10.0.0.0/ 8",
      "10.0.0.0/1000",
    ]) {
      expect(parseCidr(text), text).toBeUndefined();
    }
  });

  it("contains exactly the addresses a bigint prefix comparison says it does", () => {
    const family = fc.constantFrom(4 as const, 6 as const);
    const arb = family.chain((f) => {
      const n = f === 4 ? 4 : 16;
      const bytes = fc.uint8Array({ minLength: n, maxLength: n });
      return fc.record({
        f: fc.constant(f),
        net: bytes,
        ip: bytes,
        prefix: fc.integer({ min: 0, max: n * 8 }),
        // Often make the address share a long prefix with the network.
        share: fc.integer({ min: 0, max: n }),
      });
    });
    fc.assert(
      fc.property(arb, ({ f, net, ip, prefix, share }) => {
        ip.set(net.subarray(0, share));
        const cidr = parseCidr(`${formatIp({ family: f, bytes: net })}/${prefix}`);
        expect(cidr).toBeDefined();
        const bits = BigInt(net.length * 8);
        const shift = bits - BigInt(prefix);
        const expected = bigOf(net) >> shift === bigOf(ip) >> shift;
        expect(cidrContains(cidr!, { family: f, bytes: ip })).toBe(expected);
        // Never across families.
        const other = f === 4 ? new Uint8Array(16) : new Uint8Array(4);
        expect(cidrContains(cidr!, { family: f === 4 ? 6 : 4, bytes: other })).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });
});
