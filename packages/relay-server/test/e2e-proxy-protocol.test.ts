// End to end: a real turnpike-relay behind a "load balancer" on 127.0.0.1 (--proxy-protocol
// 127.0.0.1/32). Connections from it start with a PROXY protocol v1 or v2 header naming a
// client, and the relay sees that client: XOR-MAPPED-ADDRESS of an Allocate over TCP and over
// TLS, and --max-connections-per-ip counting the named address, not the balancer's. A trusted
// connection without a valid header is refused; from an untrusted source (127.0.0.2) a PROXY
// header is just bad TURN input.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readXorAddress } from "@turnpike/relay-core";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { selfSignedCert } from "@turnpike/test-support/tls";
import {
  AttributeType,
  type LiteOptions,
  Method,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-proxy-protocol-token";
const PER_IP = 2;

/** A v1 header naming `address`:`port` as the client (spec §2.1). */
const v1 = (address: string, port: number) =>
  Buffer.from(`PROXY TCP4 ${address} 127.0.0.1 ${port} 3478\r\n`, "latin1");

/** A v2 PROXY command for TCP over IPv4 with one TLV (spec §2.2). */
function v2(address: string, port: number): Buffer {
  const b = Buffer.alloc(16 + 12 + 5);
  Buffer.from("0d0a0d0a000d0a515549540a", "hex").copy(b);
  b[12] = 0x21; // version 2, PROXY
  b[13] = 0x11; // AF_INET, STREAM
  b.writeUInt16BE(12 + 5, 14);
  b.set(address.split(".").map(Number), 16);
  b.set([127, 0, 0, 1], 20);
  b.writeUInt16BE(port, 24);
  b.writeUInt16BE(3478, 26);
  b.set([0x05, 0x00, 0x02, 0xab, 0xcd], 28); // PP2_TYPE_UNIQUE_ID, skipped
  return b;
}

/** A v2 PROXY command for TCP over IPv6 (spec §2.2), naming 2001:db8::7:`port`. */
function v2six(port: number): Buffer {
  const b = Buffer.alloc(16 + 36);
  Buffer.from("0d0a0d0a000d0a515549540a", "hex").copy(b);
  b[12] = 0x21; // version 2, PROXY
  b[13] = 0x21; // AF_INET6, STREAM
  b.writeUInt16BE(36, 14);
  Buffer.from("20010db8000000000000000000000007", "hex").copy(b, 16);
  b[47] = 1; // ::1 as the destination
  b.writeUInt16BE(port, 48);
  b.writeUInt16BE(3478, 50);
  return b;
}

describe("turnpike-relay behind a PROXY protocol load balancer", () => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  let dir: string | undefined;
  let tlsPort = 0;
  let promPort = 0;
  const open: TurnClientLite[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-proxy-"));
    const { cert, key } = selfSignedCert(dir);
    range = reservePortRange(50);
    tlsPort = await freePort();
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: [
        "--proxy-protocol",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        String(PER_IP),
        "--tls-listen",
        `127.0.0.1:${tlsPort}`,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
      ],
    });
  });
  afterAll(async () => {
    for (const c of open) c.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function client(o: Partial<LiteOptions>, user = "proxied"): Promise<TurnClientLite> {
    const creds = restCredentials(TOKEN, user);
    const c = await TurnClientLite.open({
      port: relay!.port,
      transport: "tcp",
      username: creds.username,
      password: creds.credential,
      ...o,
    });
    open.push(c);
    return c;
  }

  /** XOR-MAPPED-ADDRESS of a Binding on `c`, or "closed" when the relay closed it instead. */
  async function mapped(c: TurnClientLite): Promise<string> {
    try {
      const r = await c.request(Method.Binding, () => {}, { auth: false });
      const a = readXorAddress(r.message, AttributeType.XorMappedAddress);
      return `${a?.address}:${a?.port}`;
    } catch {
      return "closed";
    }
  }

  it.each([
    ["v1", "tcp", v1],
    ["v2", "tcp", v2],
    ["v1", "tls", v1],
    ["v2", "tls", v2],
  ] as const)(
    "gives a %s header's client address to an Allocate over %s",
    async (_v, transport, header) => {
      const c = await client({
        transport,
        port: transport === "tls" ? tlsPort : relay!.port,
        preamble: header("203.0.113.7", 5555),
      });
      const allocate = await c.allocate();
      expect(allocate.code, allocate.reason).toBe(0);
      const m = readXorAddress(allocate.message, AttributeType.XorMappedAddress);
      expect(m).toEqual({ family: 4, address: "203.0.113.7", port: 5555 });
      c.close();
    },
  );

  it("names IPv6 clients too, in v1 TCP6 and v2 AF_INET6 headers", async () => {
    const six = Buffer.from("PROXY TCP6 2001:db8::7 ::1 4000 3478\r\n", "latin1");
    expect(await mapped(await client({ preamble: six }))).toBe("2001:db8::7:4000");
    expect(await mapped(await client({ preamble: v2six(4001) }))).toBe("2001:db8::7:4001");
  });

  it("counts --max-connections-per-ip against the named client, never against the balancer", async () => {
    // PER_IP connections of one named client that have not authenticated: its cap is reached.
    const held: TurnClientLite[] = [];
    for (let i = 0; i < PER_IP; i++) {
      const c = await client({ preamble: v1("198.51.100.9", 7000 + i) });
      expect(await mapped(c)).toBe(`198.51.100.9:${7000 + i}`);
      held.push(c);
    }
    const over = await client({ preamble: v2("198.51.100.9", 7100) });
    expect(await mapped(over)).toBe("closed");
    // The balancer itself carries more than PER_IP connections: other clients still get in.
    const other = await client({ preamble: v2("198.51.100.10", 7200) });
    expect(await mapped(other)).toBe("198.51.100.10:7200");
    for (const c of [...held, other]) c.close();
  });

  it("refuses a trusted connection without a valid header, at once or after its deadline", async () => {
    const noHeader = await client({});
    expect(await mapped(noHeader)).toBe("closed");
    const badHeader = await client({ preamble: Buffer.from("PROXY TCP4 nonsense\r\n") });
    expect(await mapped(badHeader)).toBe("closed");
    // Silent: closed by the header deadline (3 s), well before --tcp-idle-timeout.
    const silent = await client({ timeoutMs: 10_000 });
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (silent.closedByPeer || performance.now() - start > 8000) {
          clearInterval(poll);
          resolve();
        }
      }, 50);
    });
    expect(silent.closedByPeer).toBe(true);
    expect(performance.now() - start).toBeLessThan(8000);
    const metrics = (await httpGet(promPort, "/metrics")).body;
    const refused = /turn_dropped_packets(?:_total)?\{[^}]*reason="proxy-header"[^}]*\} (\d+)/.exec(
      metrics,
    );
    expect(Number(refused?.[1]), metrics).toBeGreaterThanOrEqual(3);
  });

  it("treats a PROXY header from an untrusted source as bad TURN input, and serves it as itself", async () => {
    const spoofing = await client({
      localAddress: "127.0.0.2",
      preamble: v1("203.0.113.7", 5555),
    });
    expect(await mapped(spoofing)).toBe("closed");
    const plain = await client({ localAddress: "127.0.0.2" });
    const seen = await mapped(plain);
    expect(seen).toBe(`127.0.0.2:${plain.localAddress().port}`);
    const overTls = await client({ transport: "tls", port: tlsPort, localAddress: "127.0.0.2" });
    expect((await overTls.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
  });
});
