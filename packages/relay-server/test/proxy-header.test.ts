// The PROXY protocol header parser (stream/proxy-header.ts): v1 and v2 as HAProxy's
// specification writes them, partial headers waiting for more, and anything else refused
// without throwing or reading past the bytes it is given.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  MAX_V1_HEADER,
  MAX_V2_HEADER,
  parseProxyHeader,
  V2_SIGNATURE,
} from "../src/stream/proxy-header.js";

const text = (s: string) => Buffer.from(s, "latin1");

/** A v2 header: command (0 LOCAL, 1 PROXY), family/protocol byte, address block. */
function v2(command: number, famProto: number, block: Uint8Array, version = 2): Buffer {
  const head = Buffer.alloc(16);
  V2_SIGNATURE.copy(head);
  head[12] = (version << 4) | command;
  head[13] = famProto;
  head.writeUInt16BE(block.length, 14);
  return Buffer.concat([head, block]);
}

function inet4(src: string, dst: string, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(12);
  b.set(src.split(".").map(Number), 0);
  b.set(dst.split(".").map(Number), 4);
  b.writeUInt16BE(sport, 8);
  b.writeUInt16BE(dport, 10);
  return b;
}

function inet6(src: Uint8Array, dst: Uint8Array, sport: number, dport: number): Buffer {
  const b = Buffer.alloc(36);
  b.set(src, 0);
  b.set(dst, 16);
  b.writeUInt16BE(sport, 32);
  b.writeUInt16BE(dport, 34);
  return b;
}

/** A TLV (spec §2.2.7): type, 16-bit length, value. */
function tlv(type: number, value: Uint8Array): Buffer {
  const b = Buffer.alloc(3 + value.length);
  b[0] = type;
  b.writeUInt16BE(value.length, 1);
  b.set(value, 3);
  return b;
}

describe("PROXY protocol v1", () => {
  it("names the client of a TCP4 header and where the client's bytes start", () => {
    const header = "PROXY TCP4 203.0.113.7 192.0.2.1 5555 3478\r\n";
    expect(parseProxyHeader(text(`${header}\x00\x01rest`))).toEqual({
      kind: "proxy",
      length: header.length,
      family: 4,
      address: "203.0.113.7",
      port: 5555,
    });
  });

  it("names an IPv6 client of a TCP6 header", () => {
    const r = parseProxyHeader(text("PROXY TCP6 2001:db8::7 2001:db8::1 65535 443\r\n"));
    expect(r).toMatchObject({ kind: "proxy", family: 6, address: "2001:db8::7", port: 65535 });
  });

  it("leaves the connection's own endpoints for UNKNOWN", () => {
    expect(parseProxyHeader(text("PROXY UNKNOWN\r\nx"))).toEqual({ kind: "local", length: 15 });
    expect(parseProxyHeader(text("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"))).toMatchObject({
      kind: "local",
    });
  });

  it("waits for more while the header may still complete", () => {
    for (const partial of ["P", "PROX", "PROXY ", "PROXY TCP4 203.0.113.7 192.0.2.1 5555 3478\r"])
      expect(parseProxyHeader(text(partial))).toEqual({ kind: "incomplete" });
  });

  it("refuses a line longer than 107 bytes even before its end arrives", () => {
    const long = `PROXY TCP4 ${"1".repeat(MAX_V1_HEADER)}`;
    expect(parseProxyHeader(text(long)).kind).toBe("invalid");
    expect(parseProxyHeader(text(long.slice(0, MAX_V1_HEADER - 1))).kind).toBe("incomplete");
  });

  it.each([
    ["a wrong protocol", "PROXY UDP4 203.0.113.7 192.0.2.1 5555 3478\r\n"],
    ["an address of the other family", "PROXY TCP4 2001:db8::7 192.0.2.1 5555 3478\r\n"],
    ["a bad address", "PROXY TCP4 203.0.113.700 192.0.2.1 5555 3478\r\n"],
    ["a port too large", "PROXY TCP4 203.0.113.7 192.0.2.1 65536 3478\r\n"],
    ["a port with a leading zero", "PROXY TCP4 203.0.113.7 192.0.2.1 05555 3478\r\n"],
    ["a missing field", "PROXY TCP4 203.0.113.7 192.0.2.1 5555\r\n"],
    ["two spaces", "PROXY TCP4  203.0.113.7 192.0.2.1 5555 3478\r\n"],
    ["a bare LF", "PROXY TCP4 203.0.113.7 192.0.2.1 5555 3478\n"],
    ["lower case", "proxy TCP4 203.0.113.7 192.0.2.1 5555 3478\r\n"],
    ["a TURN message", "\x00\x01\x00\x00\x21\x12\xa4\x42"],
  ])("refuses %s", (_what, bytes) => {
    expect(parseProxyHeader(text(bytes)).kind).toBe("invalid");
  });
});

describe("PROXY protocol v2", () => {
  it("names an IPv4 client of a PROXY command over STREAM", () => {
    const header = v2(1, 0x11, inet4("203.0.113.7", "192.0.2.1", 5555, 3478));
    expect(parseProxyHeader(Buffer.concat([header, text("rest")]))).toEqual({
      kind: "proxy",
      length: 28,
      family: 4,
      address: "203.0.113.7",
      port: 5555,
    });
  });

  it("names an IPv6 client, and skips the TLVs after the addresses", () => {
    const src = Buffer.from("20010db8000000000000000000000007", "hex");
    const block = Buffer.concat([
      inet6(src, Buffer.alloc(16), 40000, 443),
      tlv(0x05, text("vpce-0123")), // PP2_TYPE_UNIQUE_ID
      tlv(0x04, Buffer.alloc(0)), // PP2_TYPE_NOOP
    ]);
    const header = v2(1, 0x21, block);
    expect(parseProxyHeader(header)).toEqual({
      kind: "proxy",
      length: header.length,
      family: 6,
      address: "2001:db8::7",
      port: 40000,
    });
  });

  it("leaves the connection's own endpoints for LOCAL and for AF_UNSPEC", () => {
    expect(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0)))).toEqual({ kind: "local", length: 16 });
    const local = v2(0, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2));
    expect(parseProxyHeader(local)).toEqual({ kind: "local", length: 28 });
    expect(parseProxyHeader(v2(1, 0x00, Buffer.alloc(4)))).toEqual({ kind: "local", length: 20 });
  });

  it("waits for every byte its length announces", () => {
    const header = v2(
      1,
      0x11,
      Buffer.concat([inet4("203.0.113.7", "192.0.2.1", 1, 2), tlv(1, text("h2"))]),
    );
    for (let n = 1; n < header.length; n++)
      expect(parseProxyHeader(header.subarray(0, n))).toEqual({ kind: "incomplete" });
    expect(parseProxyHeader(header).kind).toBe("proxy");
  });

  it("refuses a header longer than it may hold before it arrives", () => {
    const head = v2(1, 0x11, Buffer.alloc(0));
    head.writeUInt16BE(MAX_V2_HEADER - 16 + 1, 14);
    expect(parseProxyHeader(head).kind).toBe("invalid");
  });

  it.each([
    ["version 1", v2(1, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2), 1)],
    ["an unknown command", v2(2, 0x11, inet4("203.0.113.7", "192.0.2.1", 1, 2))],
    ["UDP (DGRAM)", v2(1, 0x12, inet4("203.0.113.7", "192.0.2.1", 1, 2))],
    ["AF_UNIX", v2(1, 0x31, Buffer.alloc(216))],
    ["an address block too short", v2(1, 0x11, Buffer.alloc(8))],
    [
      "a TLV running past the header",
      v2(
        1,
        0x11,
        Buffer.concat([inet4("203.0.113.7", "192.0.2.1", 1, 2), Buffer.from([1, 0, 9, 0])]),
      ),
    ],
    [
      "a truncated TLV header",
      v2(1, 0x11, Buffer.concat([inet4("203.0.113.7", "192.0.2.1", 1, 2), Buffer.from([1, 0])])),
    ],
    [
      "a broken signature",
      Buffer.concat([Buffer.from([0x0d, 0x0a, 0x0d, 0x0b]), Buffer.alloc(20)]),
    ],
  ])("refuses %s", (_what, bytes) => {
    expect(parseProxyHeader(bytes).kind).toBe("invalid");
  });
});

describe("PROXY header parser, any input", () => {
  /** A proxy that throws when the parser reads an index outside the bytes it was given. */
  function guarded(bytes: Uint8Array): Uint8Array {
    return new Proxy(bytes, {
      get(target, key) {
        if (typeof key === "string" && /^\d+$/.test(key) && Number(key) >= target.length)
          throw new Error(`read past the end: ${key} of ${target.length}`);
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  }

  const arbitraryHeaderish = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.concat([text("PROXY "), b])),
    fc.uint8Array({ maxLength: 120 }).map((b) => Buffer.concat([V2_SIGNATURE, b])),
    fc
      .tuple(
        fc.integer({ min: 0, max: 255 }),
        fc.integer({ min: 0, max: 255 }),
        fc.uint8Array({ maxLength: 80 }),
      )
      .map(([vc, fp, block]) => {
        const h = v2(0, 0, block);
        h[12] = vc;
        h[13] = fp;
        return h;
      }),
    fc
      .tuple(
        fc.constantFrom("TCP4", "TCP6", "UNKNOWN", "X"),
        fc.array(fc.string({ maxLength: 40 }), { maxLength: 6 }),
      )
      .map(([p, fields]) => text(`PROXY ${p} ${fields.join(" ")}\r\n`)),
  );

  it("never throws, never reads past its input, and a verdict's length lies within it", () => {
    fc.assert(
      fc.property(arbitraryHeaderish, (bytes) => {
        const r = parseProxyHeader(guarded(bytes));
        if (r.kind === "proxy" || r.kind === "local") {
          expect(r.length).toBeGreaterThan(0);
          expect(r.length).toBeLessThanOrEqual(bytes.length);
          expect(r.length).toBeLessThanOrEqual(Math.max(MAX_V1_HEADER, MAX_V2_HEADER));
        }
        if (r.kind === "proxy") expect(r.port).toBeLessThanOrEqual(65535);
      }),
      { numRuns: 5000 },
    );
  });

  it("says the same of a header however it is cut: incomplete before its end, then its verdict", () => {
    fc.assert(
      fc.property(arbitraryHeaderish, fc.uint8Array({ maxLength: 20 }), (bytes, tail) => {
        const whole = parseProxyHeader(Buffer.concat([bytes, tail]));
        if (whole.kind !== "proxy" && whole.kind !== "local") return;
        for (let n = 0; n < whole.length; n++) {
          const r = parseProxyHeader(bytes.subarray(0, n));
          expect(r.kind).toBe("incomplete");
        }
        expect(parseProxyHeader(Buffer.concat([bytes, tail]).subarray(0, whole.length))).toEqual(
          whole,
        );
      }),
      { numRuns: 2000 },
    );
  });

  it("never waits for more than a header may hold", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: MAX_V2_HEADER, maxLength: MAX_V2_HEADER + 64 }),
        fc.boolean(),
        (b, asV1) => {
          const bytes = Buffer.from(b);
          (asV1 ? text("PROXY ") : V2_SIGNATURE).copy(bytes);
          expect(parseProxyHeader(bytes).kind).not.toBe("incomplete");
        },
      ),
      { numRuns: 500 },
    );
  });
});
