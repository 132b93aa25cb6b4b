// What surrounds the relaying: the same-host case on the loopback, a process killed with -9
// leaving nothing attached, worker threads sharing the maps, and the one-line reasons for not
// running (no capabilities, the loopback's forwarding flag, an unknown interface, a program the
// verifier refuses, an object whose maps are laid out otherwise than the loader's). Each test
// makes and removes its own namespace.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import {
  Agent,
  addNamespace,
  type Datagram,
  deleteNamespaces,
  enableLoopbackForwarding,
  eventually,
  inNs,
  leftoverNamespaces,
  netnsUnavailable,
  uniqueTag,
} from "./netns.js";

const unavailable = netnsUnavailable(["capsh", "clang", "bpftool"]);

/** Runs `body` with a fresh namespace (loopback up), then removes it and checks it is gone. */
async function withNamespace(
  prefix: string,
  body: (ns: string) => Promise<void>,
  options: { forwarding?: boolean } = {},
): Promise<void> {
  const tag = uniqueTag(prefix);
  const ns = `${tag}n`;
  try {
    addNamespace(ns);
    if (options.forwarding !== false) enableLoopbackForwarding(ns);
    await body(ns);
    expect(inNs(ns, "bpftool", "net", "show")).not.toMatch(/turnpike/);
  } finally {
    deleteNamespaces(tag);
  }
  expect(leftoverNamespaces(tag)).toEqual([]);
}

function cd(channel: number, hex: string): string {
  const h = Buffer.alloc(4);
  h.writeUInt16BE(channel, 0);
  h.writeUInt16BE(hex.length / 2, 2);
  return h.toString("hex") + hex;
}

describe.skipIf(unavailable)("kernel path lifecycle", () => {
  it("relays on the loopback when client, relay and peer share the host", async () => {
    await withNamespace("tpl", async (ns) => {
      const [relay, ends] = await Promise.all([Agent.start(ns), Agent.start(ns)]);
      await relay.call("open", { interfaces: ["lo"], maxBindings: 16, maxBuckets: 1 });
      const deadlineMs = (await relay.call<number>("now")) + 60_000;
      for (const [f, host] of [
        [4, "127.0.0.1"],
        [6, "::1"],
      ] as const) {
        const listener = await relay.call<number>("socket", {
          name: `l${f}`,
          address: host,
          port: 0,
        });
        const relayed = await relay.call<number>("socket", {
          name: `r${f}`,
          address: host,
          port: 0,
        });
        const client = await ends.call<number>("socket", { name: `c${f}`, address: host, port: 0 });
        const peer = await ends.call<number>("socket", { name: `p${f}`, address: host, port: 0 });
        const slot = await relay.call<number>("bind", {
          route: {
            client: { address: host, port: client },
            listener: { address: host, port: listener },
            channel: 0x4000,
            relayed: { address: host, port: relayed },
            peer: { address: host, port: peer },
            deadlineMs,
          },
        });
        // Datagrams sent on this host carry no checksum yet (CHECKSUM_PARTIAL). IPv4 says "no
        // checksum" after removing the header; IPv6 cannot, so that one direction takes the
        // userspace path there (README, "Checksums").
        const kernelToPeer = f === 4;
        const toPeer = cd(0x4000, "aabbcc");
        await ends.call("send", { name: `c${f}`, address: host, port: listener, hex: toPeer });
        const [atPeer, atListener] = kernelToPeer
          ? [
              await eventually(
                () => ends.call<Datagram[]>("received", { name: `p${f}`, clear: true }),
                (l) => l.length > 0,
              ),
              [],
            ]
          : [
              [],
              await eventually(
                () => relay.call<Datagram[]>("received", { name: `l${f}`, clear: true }),
                (l) => l.length > 0,
              ),
            ];
        await ends.call("send", { name: `p${f}`, address: host, port: relayed, hex: "ddeeff11" });
        const atClient = await eventually(
          () => ends.call<Datagram[]>("received", { name: `c${f}` }),
          (l) => l.length > 0,
        );
        expect(atPeer).toEqual(
          kernelToPeer ? [{ hex: "aabbcc", address: host, port: relayed }] : [],
        );
        expect(atListener.map((d) => d.hex)).toEqual(kernelToPeer ? [] : [toPeer]);
        expect(atClient).toEqual([{ hex: cd(0x4000, "ddeeff11"), address: host, port: listener }]);
        expect(await relay.call("counters", { slot })).toMatchObject({
          toPeerPackets: kernelToPeer ? 1 : 0,
          toClientPackets: 1,
        });
        expect(await relay.call("received", { name: `r${f}` })).toEqual([]);
        expect(await ends.call("received", { name: `p${f}` })).toEqual([]);
      }
      await Promise.all([relay.stop(), ends.stop()]);
    });
  });

  it("leaves no program attached when the process is killed with SIGKILL", async () => {
    await withNamespace("tpk", async (ns) => {
      const [victim, observer] = await Promise.all([Agent.start(ns), Agent.start(ns)]);
      await victim.call("open", { interfaces: ["lo"], maxBindings: 16, maxBuckets: 1 });
      expect(await observer.call("tcxPrograms", { name: "lo" })).toBe(1);
      await victim.kill9();
      // The links were the process's file descriptors: closing them detached the program.
      expect(
        await eventually(
          () => observer.call<number>("tcxPrograms", { name: "lo" }),
          (n) => n === 0,
        ),
      ).toBe(0);
      await observer.stop();
    });
  });

  it("lets worker threads put bindings into the same maps without loading again", async () => {
    await withNamespace("tpw", async (ns) => {
      const relay = await Agent.start(ns);
      await relay.call("open", { interfaces: ["lo"], maxBindings: 16, maxBuckets: 1 });
      const deadlineMs = (await relay.call<number>("now")) + 60_000;
      const route = (port: number) => ({
        client: { address: "127.0.0.1", port },
        listener: { address: "127.0.0.1", port: 3478 },
        channel: 0x4000,
        relayed: { address: "127.0.0.1", port: 50000 + port },
        peer: { address: "127.0.0.1", port: 40000 + port },
        deadlineMs,
      });
      const mine = await relay.call<number>("bind", { route: route(1) });
      const theirs = await relay.call<number>("bindInWorker", { route: route(2) });
      expect(theirs).not.toBe(mine);
      expect((await relay.call<number[]>("liveSlots")).sort()).toEqual([mine, theirs].sort());
      // The same binding again, from the worker: its slot, not a second one.
      expect(await relay.call("bindInWorker", { route: route(2) })).toBe(theirs);
      expect(await relay.call("tcxPrograms", { name: "lo" })).toBe(1);
      await relay.stop();
    });
  });

  it("says why not, in one line, without CAP_BPF and CAP_NET_ADMIN; with just those two it runs", async () => {
    await withNamespace("tpc", async (ns) => {
      const without = await Agent.start(ns, [
        "capsh",
        "--drop=cap_bpf,cap_net_admin,cap_sys_admin",
      ]);
      const availability = await without.call<{ available: boolean; reason: string }>(
        "availability",
        { interfaces: ["lo"] },
      );
      expect(availability).toEqual({
        available: false,
        reason:
          "the process lacks CAP_BPF and CAP_NET_ADMIN (needed to load the program and attach it)",
      });
      await expect(without.call("open", { interfaces: ["lo"] })).rejects.toThrow(
        availability.reason,
      );
      await without.stop();

      const just = await Agent.start(ns, ["capsh", "--drop=cap_sys_admin,cap_perfmon"]);
      expect(await just.call("availability", { interfaces: ["lo"] })).toEqual({ available: true });
      await just.call("open", { interfaces: ["lo"], maxBindings: 16, maxBuckets: 1 });
      expect(await just.call("tcxPrograms", { name: "lo" })).toBe(1);
      await just.stop();
    });
  });

  it("names the missing interface and the loopback forwarding sysctl", async () => {
    await withNamespace(
      "tpa",
      async (ns) => {
        const agent = await Agent.start(ns);
        expect(await agent.call("availability", { interfaces: ["nosuch0"] })).toEqual({
          available: false,
          reason: "interface nosuch0 not found",
        });
        const off = await agent.call<{ reason: string }>("availability", { interfaces: ["lo"] });
        expect(off.reason).toMatch(
          /^net\.ipv4\.conf\.lo\.forwarding and net\.ipv6\.conf\.lo\.forwarding is 0/,
        );
        expect(off.reason).toContain(
          "sysctl -w net.ipv4.conf.lo.forwarding=1 net.ipv6.conf.lo.forwarding=1",
        );
        await agent.stop();
      },
      { forwarding: false },
    );
  });

  it("reports the verifier's reason when the kernel refuses the program", async () => {
    await withFixtureObject("rejected", async (object) => {
      await withNamespace("tpv", async (ns) => {
        const agent = await Agent.start(ns);
        await expect(
          agent.call("open", { interfaces: ["lo"], objectPath: object }),
        ).rejects.toThrow(
          /^the kernel's verifier rejected the program: .*(outside of the packet|invalid access to packet)/,
        );
        expect(await agent.call("tcxPrograms", { name: "lo" })).toBe(0);
        await agent.stop();
      });
    });
  });

  it("refuses an object whose maps are laid out otherwise than the loader's, naming the map", async () => {
    await withFixtureObject("other-layout", async (object) => {
      await withNamespace("tpm", async (ns) => {
        const agent = await Agent.start(ns);
        await expect(
          agent.call("open", { interfaces: ["lo"], objectPath: object }),
        ).rejects.toThrow(
          `the BPF object ${object} does not match the loader's map layout (tp_slots: key 4 and value 120 bytes in the object, 4 and 96 in the loader); rebuild it (pnpm install)`,
        );
        expect(await agent.call("tcxPrograms", { name: "lo" })).toBe(0);
        await agent.stop();
      });
    });
  });
});

/** Compiles fixtures/<name>.bpf.c as the build does and runs `body` with the object's path. */
async function withFixtureObject(
  name: string,
  body: (object: string) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), `tp-${name}-`));
  try {
    const object = join(dir, `${name}.bpf.o`);
    const multiarch = execFileSync("cc", ["-print-multiarch"]).toString().trim();
    execFileSync("clang", [
      "-O2",
      "-g",
      "-target",
      "bpf",
      "-I",
      `/usr/include/${multiarch}`,
      "-c",
      fileURLToPath(new URL(`./fixtures/${name}.bpf.c`, import.meta.url)),
      "-o",
      object,
    ]);
    await body(object);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
