import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { formatIp, parseIp } from "../src/policy/ip.js";
import { PeerAddressPolicy, type PeerDenyReason } from "../src/policy/peer-address-policy.js";

const policy = new PeerAddressPolicy();

function v4Text(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}

/** Every IPv6 spelling that embeds IPv4 address `v`, in several textual forms. */
function embeddings(v: number, low: number): string[] {
  const hi = ((v >>> 16) & 0xffff).toString(16);
  const lo = (v & 0xffff).toString(16);
  const dotted = v4Text(v);
  const lowHex = (low & 0xffff).toString(16);
  const forms = [
    `::ffff:${dotted}`, // IPv4-mapped, RFC 4291 §2.5.5.2
    `::ffff:${hi}:${lo}`,
    `0:0:0:0:0:FFFF:${hi}:${lo}`,
    `[::ffff:${dotted}]`,
    `64:ff9b::${dotted}`, // NAT64 well-known prefix, RFC 6052
    `64:ff9b::${hi}:${lo}`,
    `2002:${hi}:${lo}::`, // 6to4, RFC 3056
    `2002:${hi}:${lo}:${lowHex}::${lowHex}`,
    `::ffff:0:${dotted}`, // SIIT
    `::ffff:0:${hi}:${lo}`,
  ];
  if (v > 1) forms.push(`::${dotted}`, `::${hi}:${lo}`); // IPv4-compatible
  return forms;
}

describe("PeerAddressPolicy defaults", () => {
  it("allows globally reachable unicast", () => {
    for (const address of [
      "8.8.8.8",
      "1.1.1.1",
      "203.0.114.1",
      "192.0.3.1",
      "100.128.0.1",
      "172.32.0.1",
      "2606:4700:4700::1111",
      "2a00:1450:4001::1",
      "::ffff:8.8.8.8",
      "64:ff9b::808:808",
      "2002:808:808::1",
      "2001:200::1", // just past 2001::/23
      "[2001:4860:4860::8888]",
    ]) {
      expect(policy.check(address), address).toBeUndefined();
    }
  });

  it("denies special-purpose ranges with the registry's reason", () => {
    const cases: [string, PeerDenyReason][] = [
      ["0.0.0.0", "unspecified"],
      ["0.1.2.3", "unspecified"],
      ["10.0.0.1", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["192.168.1.1", "private"],
      ["100.64.0.1", "cgnat"],
      ["100.127.255.255", "cgnat"],
      ["127.0.0.1", "loopback"],
      ["127.255.255.254", "loopback"],
      ["169.254.169.254", "link-local"],
      ["192.0.0.10", "reserved"],
      ["192.88.99.1", "reserved"],
      ["198.18.0.1", "reserved"],
      ["198.19.255.255", "reserved"],
      ["240.0.0.1", "reserved"],
      ["255.255.255.254", "reserved"],
      ["192.0.2.1", "documentation"],
      ["198.51.100.1", "documentation"],
      ["203.0.113.1", "documentation"],
      ["224.0.0.1", "multicast"],
      ["239.255.255.250", "multicast"],
      ["255.255.255.255", "broadcast"],
      ["::", "unspecified"],
      ["[::]", "unspecified"],
      ["::1", "loopback"],
      ["fc00::1", "private"],
      ["fd12:3456::1", "private"],
      ["fe80::1", "link-local"],
      ["febf::1", "link-local"],
      ["fec0::1", "link-local"],
      ["ff02::1", "multicast"],
      ["2001:db8::1", "documentation"],
      ["3fff::1", "documentation"],
      ["3fff:fff::1", "documentation"],
      ["100::1", "reserved"],
      ["2001::1", "reserved"], // Teredo
      ["2001:2::1", "reserved"], // benchmarking
      ["2001:1ff::1", "reserved"],
      ["64:ff9b:1::1", "reserved"],
      ["5f00::1", "reserved"],
      ["::1:0:0:1", "reserved"],
      ["4000::1", "reserved"],
      ["fe00::1", "reserved"],
      ["not an address", "invalid"],
      ["", "invalid"],
      ["fe80::1%eth0", "invalid"],
    ];
    for (const [address, reason] of cases) expect(policy.check(address), address).toBe(reason);
    expect(policy.check("3fff:1000::1")).toBeUndefined(); // just past 3fff::/20
  });

  it("denies the classic bypass spellings of loopback, unspecified and metadata addresses", () => {
    const cases: [string, PeerDenyReason][] = [
      ["0.0.0.0", "unspecified"],
      ["[::]", "unspecified"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::127.0.0.1", "loopback"],
      ["64:ff9b::7f00:1", "loopback"],
      ["2002:7f00:1::", "loopback"],
      ["::ffff:0:7f00:1", "loopback"],
      ["::ffff:7f00:1", "loopback"],
      ["[0:0:0:0:0:ffff:127.0.0.1]", "loopback"],
      ["::ffff:a9fe:a9fe", "link-local"],
      ["::ffff:0.0.0.0", "unspecified"],
      ["::ffff:10.0.0.1", "private"],
      ["0177.0.0.1", "invalid"],
      ["127.1", "invalid"],
      ["2130706433", "invalid"],
      ["0x7f000001", "invalid"],
    ];
    for (const [address, reason] of cases) expect(policy.check(address), address).toBe(reason);
  });

  it("judges every IPv4-embedding IPv6 form exactly as the IPv4 address itself", () => {
    const configured = new PeerAddressPolicy({
      allow: ["10.1.0.0/16"],
      deny: ["8.8.0.0/16"],
    });
    fc.assert(
      fc.property(
        fc.oneof(
          fc.integer({ min: 0, max: 0xffffffff }),
          // Bias towards denied and configured ranges.
          fc
            .constantFrom(0, 0x0a, 0x7f, 0xa9fe, 0xc0a8, 0xac10, 0x0a01, 0x0808)
            .chain((top) =>
              fc.integer({ min: 0, max: 0xffff }).map((low) => (((top << 16) >>> 0) + low) >>> 0),
            ),
          fc.constantFrom(0x7f000001, 0xffffffff, 0xe0000001),
        ),
        fc.integer({ min: 0, max: 0xffff }),
        (v, low) => {
          for (const p of [policy, configured]) {
            const plain = p.check(v4Text(v));
            for (const form of embeddings(v, low)) expect(p.check(form), form).toBe(plain);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("never lets a denied IPv4 range through any embedding", () => {
    const denied = fc.constantFrom(
      [0x7f000000, 8],
      [0x0a000000, 8],
      [0xa9fe0000, 16],
      [0xc0a80000, 16],
      [0x00000000, 8],
      [0x64400000, 10],
      [0xe0000000, 4],
    );
    fc.assert(
      fc.property(
        denied,
        fc.nat(),
        fc.integer({ min: 0, max: 0xffff }),
        ([net, prefix], host, low) => {
          const v = ((net as number) | (host & (2 ** (32 - (prefix as number)) - 1))) >>> 0;
          expect(policy.check(v4Text(v))).toBeDefined();
          for (const form of embeddings(v, low)) expect(policy.check(form), form).toBeDefined();
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("never throws, whatever the input", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.anything()), (input) => {
        const r = policy.check(input as string);
        if (typeof input !== "string" || parseIp(input) === undefined) expect(r).toBe("invalid");
      }),
      { numRuns: 2000 },
    );
    expect(policy.checkParsed({ family: 4, bytes: new Uint8Array(16) })).toBe("invalid");
    expect(policy.checkParsed({ family: 6, bytes: new Uint8Array(4) })).toBe("invalid");
    expect(policy.checkParsed({ family: 5 as 4, bytes: new Uint8Array(4) })).toBe("invalid");
    expect(policy.checkParsed(null as never)).toBe("invalid");
  });

  it("agrees between check() on text and checkParsed() on the parsed address", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ minLength: 4, maxLength: 4 }),
          fc.uint8Array({ minLength: 16, maxLength: 16 }),
        ),
        (bytes) => {
          const ip = { family: bytes.length === 4 ? (4 as const) : (6 as const), bytes };
          expect(policy.check(formatIp(ip))).toBe(policy.checkParsed(ip));
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe("PeerAddressPolicy configuration", () => {
  it("lets the allow list open special-purpose ranges, in every spelling", () => {
    const p = new PeerAddressPolicy({ allow: ["10.1.0.0/16", "fd00:1::/32"] });
    expect(p.check("10.1.2.3")).toBeUndefined();
    expect(p.check("::ffff:10.1.2.3")).toBeUndefined();
    expect(p.check("2002:a01:203::")).toBeUndefined();
    expect(p.check("10.2.0.1")).toBe("private");
    expect(p.check("fd00:1::5")).toBeUndefined();
    expect(p.check("fd00:2::5")).toBe("private");
  });

  it("lets the deny list win over the allow list and over global addresses", () => {
    const p = new PeerAddressPolicy({
      allow: ["10.0.0.0/8", "2606:4700::/32"],
      deny: ["10.9.0.0/16", "8.8.8.0/24", "2606:4700:4700::/48"],
    });
    expect(p.check("10.9.1.1")).toBe("denied-by-config");
    expect(p.check("::ffff:10.9.1.1")).toBe("denied-by-config");
    expect(p.check("10.8.1.1")).toBeUndefined();
    expect(p.check("8.8.8.8")).toBe("denied-by-config");
    expect(p.check("64:ff9b::808:808")).toBe("denied-by-config");
    expect(p.check("2002:808:808::")).toBe("denied-by-config");
    expect(p.check("8.8.4.4")).toBeUndefined();
    expect(p.check("2606:4700:4700::1111")).toBe("denied-by-config");
    expect(p.check("2606:4700:1::1")).toBeUndefined();
  });

  it("matches IPv6 deny entries against the raw IPv6 spelling", () => {
    const p = new PeerAddressPolicy({ deny: ["2002::/16"] });
    expect(p.check("2002:808:808::")).toBe("denied-by-config");
    expect(p.check("8.8.8.8")).toBeUndefined();
  });

  it("allows loopback in every spelling only when asked to", () => {
    const p = new PeerAddressPolicy({ allowLoopback: true });
    for (const address of [
      "127.0.0.1",
      "127.3.4.5",
      "::1",
      "[::1]",
      "::ffff:127.0.0.1",
      "64:ff9b::7f00:1",
    ]) {
      expect(p.check(address), address).toBeUndefined();
      expect(policy.check(address), address).toBe("loopback");
    }
    expect(p.check("10.0.0.1")).toBe("private");
    expect(p.check("0.0.0.0")).toBe("unspecified");
    expect(p.check("::")).toBe("unspecified");
    const strict = new PeerAddressPolicy({ allowLoopback: true, deny: ["127.0.0.2"] });
    expect(strict.check("127.0.0.2")).toBe("denied-by-config");
  });

  it("rejects an invalid CIDR at construction with a message naming it", () => {
    expect(() => new PeerAddressPolicy({ deny: ["10.0.0.0/33"] })).toThrow(/10\.0\.0\.0\/33.*deny/);
    expect(() => new PeerAddressPolicy({ allow: ["example.com"] })).toThrow(/example\.com.*allow/);
    expect(() => new PeerAddressPolicy({ allow: [42 as unknown as string] })).toThrow(/42/);
    expect(() => new PeerAddressPolicy({ allow: [" 10.0.0.0/8 "] })).not.toThrow();
  });
});

describe("PeerAddressPolicy: the relay itself (self-relay)", () => {
  const self = {
    addresses: ["203.0.113.10", "2001:db8::10", "10.0.0.5"],
    ports: { udp: [3478], tcp: [3478, 5349, 8080] },
    relayPorts: { min: 49152, max: 65535 },
  };
  const everything = ["0.0.0.0/0", "::/0"];

  it("denies its own addresses outside the relay range whatever the allow list says", () => {
    const p = new PeerAddressPolicy({ allow: everything, self });
    for (const address of ["203.0.113.10", "::ffff:203.0.113.10", "2001:db8::10", "10.0.0.5"]) {
      for (const port of [22, 3478, 8080, 49151])
        expect(p.check(address, port), `${address}:${port}`).toBe("self");
      // The relay range: other allocations' relayed addresses.
      expect(p.check(address, 49152), address).toBeUndefined();
      expect(p.check(address, 65535), address).toBeUndefined();
      // Without a port (a permission is per IP), the address as a whole passes.
      expect(p.check(address), address).toBeUndefined();
    }
    // A neighbour is not the relay.
    expect(p.check("203.0.113.11", 22)).toBeUndefined();
  });

  it("denies the unspecified addresses, which mean this host, in every spelling", () => {
    const p = new PeerAddressPolicy({ allow: everything, self });
    for (const address of ["0.0.0.0", "::", "::ffff:0.0.0.0", "64:ff9b::0.0.0.0", "[::]"]) {
      expect(p.check(address), address).toBe("self");
      expect(p.check(address, 50000), address).toBe("self");
    }
    // Even with no self configuration at all.
    expect(new PeerAddressPolicy({ allow: everything }).check("0.0.0.0", 80)).toBe("self");
  });

  it("keeps loopback under its own switch, but never opens the relay's listening ports there", () => {
    const p = new PeerAddressPolicy({ allowLoopback: true, self });
    expect(p.check("127.0.0.1", 40000)).toBeUndefined();
    expect(p.check("::1", 22)).toBeUndefined();
    expect(p.check("127.0.0.1", 3478)).toBe("self");
    expect(p.check("127.0.0.1", 3478, "tcp")).toBe("self");
    expect(p.check("127.0.0.2", 8080, "tcp")).toBe("self");
    expect(p.check("::1", 5349, "tcp")).toBe("self");
    // The health port's number over UDP is not the health server (nothing of ours listens).
    expect(p.check("127.0.0.1", 8080, "udp")).toBeUndefined();
    // Without the switch loopback stays denied as loopback.
    expect(new PeerAddressPolicy({ self }).check("127.0.0.1", 40000)).toBe("loopback");
  });

  it("learns a listening port after binding, and allowSelf turns all of it off", () => {
    const p = new PeerAddressPolicy({ allow: everything, self });
    expect(p.check("203.0.113.10", 50000)).toBeUndefined();
    p.addSelfPort(50000, "tcp");
    expect(p.check("203.0.113.10", 50000)).toBeUndefined();
    expect(p.check("203.0.113.10", 50000, "tcp")).toBe("self");
    const open = new PeerAddressPolicy({ allow: everything, self, allowSelf: true });
    expect(open.check("203.0.113.10", 22)).toBeUndefined();
    expect(open.check("0.0.0.0", 22)).toBeUndefined();
  });

  it("the deny list still wins, and its reason is reported", () => {
    const p = new PeerAddressPolicy({ deny: ["203.0.113.10"], self, allowSelf: true });
    expect(p.check("203.0.113.10", 50000)).toBe("denied-by-config");
  });
});
