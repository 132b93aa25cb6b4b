// How the relay chooses its kernel data path, without loading it: the option and its values,
// the interfaces a configuration's addresses put the program on (the host's interfaces
// injected), the bucket indices each engine of a process takes, relay-core's numeric
// addresses as text (server-options.test.ts: offload outputs asked for only when it runs).
// Attaching for real is e2e-kernel-path.test.ts's, in namespaces.
import type { NetworkInterfaceInfo } from "node:os";
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import type { RelayConfig } from "../src/config/types.js";
import { bucketShare, UserBuckets, userBucketTable } from "../src/kernel/buckets.js";
import { type HostLinks, interfacesFor } from "../src/kernel/interfaces.js";
import { ipText } from "../src/kernel/offload.js";
import { openKernelPath } from "../src/kernel/select.js";

function config(...args: string[]): RelayConfig {
  const parsed = parseRelayArgs(["--token", "t", ...args], {}, { networkInterfaces: () => ({}) });
  if (parsed.command !== "relay") throw new Error(`not a relay config: ${parsed.command}`);
  return parsed;
}

const address = (ip: string, internal = false): NetworkInterfaceInfo =>
  ip.includes(":")
    ? { address: ip, netmask: "", family: "IPv6", mac: "", internal, cidr: null, scopeid: 0 }
    : { address: ip, netmask: "", family: "IPv4", mac: "", internal, cidr: null };

/** A host with a loopback, two Ethernet interfaces, a WireGuard tunnel and one interface down. */
const HOST: HostLinks = {
  addresses: () => ({
    lo: [address("127.0.0.1", true), address("::1", true)],
    eth0: [address("203.0.113.5"), address("2001:db8::5")],
    eth1: [address("10.0.0.5")],
    wg0: [address("10.9.0.1")],
  }),
  links: () => [
    { name: "lo", up: true, type: 772 },
    { name: "eth0", up: true, type: 1 },
    { name: "eth1", up: true, type: 1 },
    { name: "wg0", up: true, type: 65534 },
    { name: "eth2", up: false, type: 1 },
  ],
};

describe("--kernel-path", () => {
  it("defaults to auto and takes tc, xdp and off", () => {
    expect(config().kernelPath).toBe("auto");
    for (const mode of ["tc", "xdp", "off", "auto"] as const) {
      expect(config("--kernel-path", mode).kernelPath).toBe(mode);
    }
    expect(() => config("--kernel-path", "bpf")).toThrow(
      '--kernel-path must be one of auto, tc, xdp, off, got "bpf"',
    );
  });

  it("off loads nothing; xdp on the loopback stops the start naming the option, before any sysctl changes", () => {
    expect(openKernelPath(config("--kernel-path", "off"), HOST)).toEqual({
      mode: "off",
      fallbackReason: undefined,
    });
    const onLoopback = ["--listen", "127.0.0.1:3478", "--relay-ip", "127.0.0.1"];
    expect(() => openKernelPath(config(...onLoopback, "--kernel-path", "xdp"), HOST)).toThrow(
      "--kernel-path xdp: lo is the loopback, which has no native XDP (use tc)",
    );
  });

  it("auto falls back with the reason where tc would stop the start", () => {
    // 192.0.2.1 is on none of HOST's interfaces.
    const args = ["--listen", "192.0.2.1:3478"];
    expect(openKernelPath(config(...args), HOST)).toEqual({
      mode: "off",
      fallbackReason: "no interface carries 192.0.2.1",
    });
    expect(() => openKernelPath(config(...args, "--kernel-path", "tc"), HOST)).toThrow(
      "--kernel-path tc: no interface carries 192.0.2.1",
    );
  });
});

describe("the interfaces the program is attached to", () => {
  it("are those carrying the listen and relay addresses", () => {
    expect(interfacesFor(["203.0.113.5", "10.0.0.5"], HOST)).toEqual({
      ok: true,
      interfaces: ["eth0", "eth1"],
      skipped: [],
    });
    expect(interfacesFor(["2001:DB8::5"], HOST)).toMatchObject({ interfaces: ["eth0"] });
  });

  it("put a loopback address on the loopback interface", () => {
    expect(interfacesFor(["127.0.0.1", "::1", "127.0.0.2"], HOST)).toMatchObject({
      interfaces: ["lo"],
    });
  });

  it("for a wildcard listener, are every interface that is up and carries Ethernet framing", () => {
    expect(interfacesFor(["0.0.0.0"], HOST)).toEqual({
      ok: true,
      interfaces: ["eth0", "eth1", "lo"],
      skipped: ["wg0"],
    });
  });

  it("name the address no interface carries", () => {
    expect(interfacesFor(["10.0.0.5", "198.51.100.1"], HOST)).toEqual({
      ok: false,
      reason: "no interface carries 198.51.100.1",
    });
  });
});

describe("kernel token buckets across the engines of one process", () => {
  it("gives each engine its own contiguous share of 1..total, together all of them", () => {
    for (const count of [1, 2, 3, 7]) {
      const shares = Array.from({ length: count }, (_, i) => bucketShare(i, count, 65536));
      expect(shares[0]!.first).toBe(1);
      for (let i = 1; i < count; i++) {
        expect(shares[i]!.first).toBe(shares[i - 1]!.first + shares[i - 1]!.count);
      }
      const last = shares[count - 1]!;
      expect(last.first + last.count - 1).toBe(65536);
    }
  });
});

describe("user buckets, one per user for every engine of the process", () => {
  const ref = (id: number) => ({ id, bytesPerSecond: 1000, burstBytes: 65536 });

  it("give a user's bindings in every engine one kernel bucket, until the last one ends", () => {
    const table = userBucketTable(2);
    const [a, b] = [0, 1].map((i) => new UserBuckets(table, 2, i, undefined)) as [
      UserBuckets,
      UserBuckets,
    ];
    const alice = a.acquire(ref(7));
    expect(alice).toBeGreaterThan(57344);
    expect(b.acquire(ref(7))).toBe(alice);
    expect(a.acquire(ref(7))).toBe(alice);
    const bob = b.acquire(ref(8));
    expect(bob).not.toBe(alice);
    a.release(ref(7));
    a.release(ref(7));
    // Engine b still holds alice's: another user does not get her bucket.
    expect(a.acquire(ref(9))).not.toBe(alice);
    b.release(ref(7));
    // Now it is free: the next user whose probe reaches it may take it; alice again gets one.
    expect(b.acquire(ref(7))).toBeGreaterThan(57344);
  });

  it("give back what a dead engine held (the supervisor), and say none is left when full", () => {
    const table = userBucketTable(2);
    const worker = new UserBuckets(table, 2, 0, undefined);
    const other = new UserBuckets(table, 2, 1, undefined);
    const supervisor = new UserBuckets(table, 2, 2, undefined);
    const got = new Set<number | undefined>();
    for (let id = 1; id <= 8192; id++) got.add(worker.acquire(ref(id)));
    expect(got.size).toBe(8192);
    expect(got.has(undefined)).toBe(false);
    expect(other.acquire(ref(10_000))).toBeUndefined();
    supervisor.releaseEngine(0);
    expect(other.acquire(ref(10_000))).toBeGreaterThan(57344);
  });
});

describe("relay-core's numeric addresses as the kernel path's text", () => {
  it("writes IPv4 from its unsigned 32-bit number and IPv6 from four big-endian words", () => {
    expect(ipText({ family: 4, ip4: 0xcb007105, ip6: undefined, port: 1 })).toBe("203.0.113.5");
    expect(ipText({ family: 4, ip4: 0, ip6: undefined, port: 1 })).toBe("0.0.0.0");
    const words = Uint32Array.of(0x20010db8, 0, 0, 5);
    expect(ipText({ family: 6, ip4: -1, ip6: words, port: 1 })).toBe("2001:db8::5");
    expect(ipText({ family: 6, ip4: -1, ip6: new Uint32Array(4), port: 1 })).toBe("::");
  });
});
