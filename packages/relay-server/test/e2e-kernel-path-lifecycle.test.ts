// When the real relay's kernel path stops relaying a channel, against the instants relay-core
// decides (namespaces as in e2e-kernel-path.test.ts): a permission's expiry and the
// CreatePermission that extends it, a delete, a revocation (SIGHUP with --revoke-file), a drain
// (SIGTERM) that keeps live allocations relaying until the relay closes; kill -9 leaving no
// program attached; and, without the capabilities, `auto` falling back and `tc` refusing to
// start, each in one line.
//
// A stream of ChannelData, each datagram stamped with its send time, runs through each event;
// what reached the peer is compared with the instants the client saw its requests go out and
// their answers come back. MARGIN_MS covers a datagram stamped just before its send() call and
// the agents' scheduling on a loaded machine; the kernel itself stops at the deadline exactly
// (kernel-path's own suite measures that).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  deleteNamespaces,
  leftoverNamespaces,
  netnsUnavailable,
  uniqueTag,
} from "@turnpike/test-support/netns";
import type { TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AMBIENT_ONLY,
  allocateIn,
  type KernelNet,
  makeKernelNet,
  mapEntries,
  relayedPackets,
  startRelayIn,
  startUnderCapsh,
  tcxPrograms,
  WITHOUT_CAPABILITIES,
} from "./kernel-netns.js";

const unavailable = netnsUnavailable(
  ["ethtool", "bpftool", "capsh"],
  "relay-server kernel-path suite",
);

const MARGIN_MS = 100;
/** The permission lifetime the relay runs with here (--test-lifetimes), in seconds. */
const PERMISSION_S = 3;

interface AtPeer {
  stamp?: { at: number; seq: number };
}
interface Exchange {
  code: number;
  before: number;
  after: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Send times that reached the peer, and those that did not, of one stream. */
function split(sent: number[], atPeer: AtPeer[]): { delivered: number[]; lost: number[] } {
  const got = new Set(atPeer.map((d) => d.stamp?.at));
  return {
    delivered: sent.filter((s) => got.has(s)),
    lost: sent.filter((s) => !got.has(s)),
  };
}

/** The time a log line of `relay` matching `re` was written (its ISO timestamp). */
function loggedAt(relay: TurnpikeHandle, re: RegExp): number | undefined {
  const line = relay.stderr.split("\n").find((l) => re.test(l));
  return line === undefined ? undefined : Date.parse(line.split(" ")[0]!);
}

async function until<T>(read: () => T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = read();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("not within the time given");
    await sleep(20);
  }
}

describe.skipIf(unavailable)("when the kernel path stops relaying", () => {
  const tag = uniqueTag("tpl");
  let net: KernelNet;
  let relay: TurnpikeHandle;
  let revokeFile: string;
  const peer4 = () => ({ address: net.t.addresses[4].peer, port: net.peerPorts.peer4! });

  /** A bound channel of a fresh allocation of `user`, the peer's receive list cleared. */
  async function boundChannel(name: string, channel: number, user: "alice" | "bob" = "alice") {
    await allocateIn(net, name, 4, user);
    const bound = await net.client.call<Exchange>("channelBind", { name, channel, ...peer4() });
    expect(bound.code).toBe(0);
    await net.peer.call("received", { name: "peer4", clear: true });
    return bound;
  }

  function stream(name: string, channel: number, count: number, everyMs: number) {
    return net.client.call<number[]>("stream", { name, channel, count, everyMs, size: 40 });
  }

  async function atPeer(): Promise<AtPeer[]> {
    await sleep(300);
    return net.peer.call<AtPeer[]>("received", { name: "peer4", clear: true });
  }

  beforeAll(async () => {
    net = await makeKernelNet(tag);
    revokeFile = join(mkdtempSync(join(tmpdir(), "turnpike-kernel-")), "revoked");
    writeFileSync(revokeFile, "");
    relay = await startRelayIn(net, [
      "--test-lifetimes",
      `permission=${PERMISSION_S}`,
      "--revoke-file",
      revokeFile,
      "--drain-timeout",
      "2",
    ]);
  }, 60_000);

  afterAll(async () => {
    await relay?.stop("SIGKILL");
    for (const a of [net?.client, net?.peer, net?.observer]) await a?.stop();
    deleteNamespaces(tag);
    expect(leftoverNamespaces(tag)).toEqual([]);
  });

  it("stops at the permission's expiry, and a CreatePermission before it extends the kernel's deadline", async () => {
    const name = "expiry";
    const bound = await boundChannel(name, 0x4010);
    const before = await relayedPackets(net);
    const sending = stream(name, 0x4010, 300, 20);
    await sleep(1800);
    const extended = await net.client.call<Exchange>("createPermission", { name, ...peer4() });
    expect(extended.code).toBe(0);
    const sent = await sending;
    const { delivered, lost } = split(sent, await atPeer());
    const deadline = {
      earliest: extended.before + PERMISSION_S * 1000,
      latest: extended.after + PERMISSION_S * 1000,
    };
    // Past the first deadline (the ChannelBind's permission) on the extended one...
    expect(bound.after + PERMISSION_S * 1000).toBeLessThan(deadline.earliest);
    expect(lost.filter((s) => s < deadline.earliest - MARGIN_MS)).toEqual([]);
    // ...and not past that.
    expect(delivered.filter((s) => s > deadline.latest + MARGIN_MS)).toEqual([]);
    expect(sent.filter((s) => s > deadline.latest + MARGIN_MS).length).toBeGreaterThan(10);
    // All of it in the kernel, but for one datagram at most at the very end: the kernel's
    // deadline is relay-core's rounded down to its millisecond clock (kernel/offload.ts,
    // kernelDeadline), so a datagram that arrives in that last millisecond goes up to userspace,
    // where the permission still holds, and is relayed there. (CI once saw 238 counted in the
    // kernel of 239 arrived; the old assertions stopped before saying where the other went,
    // so this is the likely cause, not a proven one.) Compared at once, so a failure says
    // which path carried what.
    const after = await relayedPackets(net);
    const kernel = after.kernel.toPeer - before.kernel.toPeer;
    const userspace = after.userspace.toPeer - before.userspace.toPeer;
    expect(
      { total: kernel + userspace, userspaceAtMostOne: userspace <= 1 },
      `relayed to the peer: ${kernel} in the kernel, ${userspace} in userspace; ${delivered.length} arrived`,
    ).toEqual({
      total: delivered.length,
      userspaceAtMostOne: true,
    });
  });

  it("stops when the client deletes its allocation (Refresh with LIFETIME 0)", async () => {
    const name = "delete";
    await boundChannel(name, 0x4011);
    const sending = stream(name, 0x4011, 100, 10);
    await sleep(400);
    const deleted = await net.client.call<Exchange>("refresh", { name, lifetime: 0 });
    expect(deleted.code).toBe(0);
    const sent = await sending;
    const { delivered, lost } = split(sent, await atPeer());
    expect(lost.filter((s) => s < deleted.before - MARGIN_MS)).toEqual([]);
    expect(delivered.filter((s) => s > deleted.after + MARGIN_MS)).toEqual([]);
    expect(sent.filter((s) => s > deleted.after + MARGIN_MS).length).toBeGreaterThan(10);
  });

  it("stops when the user is revoked (SIGHUP reloads --revoke-file)", async () => {
    const name = "revoke";
    await boundChannel(name, 0x4012, "bob");
    const sending = stream(name, 0x4012, 100, 10);
    await sleep(400);
    writeFileSync(revokeFile, "bob\n");
    const signalled = Date.now();
    relay.process.child.kill("SIGHUP");
    const reloaded = await until(() => loggedAt(relay, / INFO reload: applied /));
    const sent = await sending;
    const { delivered, lost } = split(sent, await atPeer());
    expect(lost.filter((s) => s < signalled - MARGIN_MS)).toEqual([]);
    expect(delivered.filter((s) => s > reloaded + MARGIN_MS)).toEqual([]);
    expect(sent.filter((s) => s > reloaded + MARGIN_MS).length).toBeGreaterThan(10);
    // Its totals in the line that says why it ended.
    expect(relay.stderr).toMatch(/allocation of a revoked user ended .*kernelToPeerPackets=\d+/);
    await net.client.call("close", { name });
  });

  it("keeps relaying live allocations in the kernel while draining (SIGTERM), and ends them at the close", async () => {
    const name = "drain";
    await boundChannel(name, 0x4013);
    const sending = stream(name, 0x4013, 200, 20);
    await sleep(300);
    const term = Date.now();
    relay.process.child.kill("SIGTERM");
    const exit = await relay.waitExit();
    expect(exit.code).toBe(0);
    const closed = loggedAt(relay, /allocation ended .*reason=shutdown/);
    expect(closed).toBeDefined();
    const sent = await sending;
    const { delivered, lost } = split(sent, await atPeer());
    // Draining (--drain-timeout 2): still relayed, in the kernel...
    expect(lost.filter((s) => s < closed! - MARGIN_MS)).toEqual([]);
    expect(delivered.filter((s) => s > term + 1000).length).toBeGreaterThan(10);
    // ...until the relay closed: nothing after, and nothing left attached.
    expect(delivered.filter((s) => s > closed! + MARGIN_MS)).toEqual([]);
    expect(relay.stderr).toMatch(/allocation ended .*reason=shutdown .*kernelToPeerPackets=\d+/);
    expect(await tcxPrograms(net)).toEqual([0, 0, 0]);
  });

  it("leaves no program attached when the relay is killed with SIGKILL", async () => {
    const killed = await startRelayIn(net);
    try {
      expect(await tcxPrograms(net)).toEqual([1, 1, 1]);
      const name = "kill";
      await boundChannel(name, 0x4014);
      await stream(name, 0x4014, 20, 5);
      expect(await atPeer()).toHaveLength(20);
      await killed.stop("SIGKILL");
      expect(await tcxPrograms(net)).toEqual([0, 0, 0]);
      await stream(name, 0x4014, 20, 5);
      expect(await atPeer()).toEqual([]);
      await net.client.call("close", { name });
    } finally {
      await killed.stop("SIGKILL");
    }
  });

  it("takes a crashed worker's bindings out of the shared maps, and keeps the others relaying", async () => {
    const workers = await startRelayIn(net, ["--workers", "2", "--test-crash-worker"]);
    try {
      // Clients land on a worker by their 5-tuple; each worker relays from its half of the
      // ports (worker 0: 49152-57343). Enough clients for both workers to hold some.
      const onWorker0: string[] = [];
      const onWorker1: string[] = [];
      for (let i = 0; i < 16 && (onWorker0.length < 2 || onWorker1.length < 2); i++) {
        const name = `crash${i}`;
        const { relayed } = await allocateIn(net, name, 4);
        const bound = await net.client.call<Exchange>("channelBind", {
          name,
          channel: 0x4020,
          ...peer4(),
        });
        expect(bound.code).toBe(0);
        (relayed.port <= 57343 ? onWorker0 : onWorker1).push(name);
      }
      expect(onWorker0.length).toBeGreaterThan(0);
      expect(onWorker1.length).toBeGreaterThan(0);
      expect(mapEntries(workers.pid, "tp_c2p")).toBe(onWorker0.length + onWorker1.length);
      workers.process.child.kill("SIGUSR2");
      await until(() => (/worker exited; restarting/.test(workers.stderr) ? true : undefined));
      // Worker 1 crashed (engine 0 is the main thread's): engine 0's bindings stay.
      expect(mapEntries(workers.pid, "tp_c2p")).toBe(onWorker0.length);
      expect(mapEntries(workers.pid, "tp_p2c")).toBe(onWorker0.length);
      // Engine 0's channels still go through the kernel.
      await net.peer.call("received", { name: "peer4", clear: true });
      await stream(onWorker0[0]!, 0x4020, 20, 5);
      expect(await atPeer()).toHaveLength(20);
      for (const name of [...onWorker0, ...onWorker1]) await net.client.call("close", { name });
    } finally {
      await workers.stop("SIGKILL");
    }
  });

  it("without CAP_BPF and CAP_NET_ADMIN: auto runs without the kernel path and says why, tc refuses to start", async () => {
    const attached = await tcxPrograms(net);
    const auto = await startUnderCapsh(net, WITHOUT_CAPABILITIES, "auto", 3490);
    try {
      expect(auto.stderr).toMatch(
        / INFO ready .*\bkernelPath=off\b.*\bkernelPathFallback="?the process lacks CAP_BPF and CAP_NET_ADMIN/,
      );
      expect(await tcxPrograms(net)).toEqual(attached);
    } finally {
      await auto.stop("SIGINT");
    }
    const tc = await startUnderCapsh(net, WITHOUT_CAPABILITIES, "tc", 3491);
    const exit = await tc.waitExit();
    expect(exit.code).toBe(1);
    const lines = tc.stderr.split("\n").filter((l) => /--kernel-path/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      / ERROR failed to start .*--kernel-path tc: the process lacks CAP_BPF and CAP_NET_ADMIN/,
    );
    expect(await tcxPrograms(net)).toEqual([0, 0, 0]);
  });

  it("runs as an unprivileged user with only CAP_BPF and CAP_NET_ADMIN, as ambient capabilities (systemd's AmbientCapabilities)", async () => {
    const before = await tcxPrograms(net);
    const relay = await startUnderCapsh(net, AMBIENT_ONLY, "tc", 3492);
    try {
      expect(relay.stderr).toMatch(/ INFO ready .*\bkernelPath=tc\b/);
      // On the interface of its listen address and the one of its relay address.
      expect(await tcxPrograms(net)).toEqual([before[0], before[1]! + 1, before[2]! + 1]);
    } finally {
      await relay.stop("SIGINT");
    }
    expect(await tcxPrograms(net)).toEqual(before);
  });
});
