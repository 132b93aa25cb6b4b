// The real turnpike-relay with --kernel-path xdp, in network namespaces this suite makes (a
// client, the relay and a peer joined by veth pairs, whose drivers run XDP natively): bound
// ChannelData relayed both ways at the driver's hook, IPv4 and IPv6, the relay's sockets seeing
// only what XDP leaves to them (the first datagram to a peer whose link address the relay host
// has not resolved yet); the loopback left out and said so; nothing attached once it stops.
import { execFileSync } from "node:child_process";
import {
  deleteNamespaces,
  leftoverNamespaces,
  netnsUnavailable,
  uniqueTag,
} from "@turnpike/test-support/netns";
import type { TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allocateIn,
  type KernelNet,
  makeKernelNet,
  pathReport,
  type Received,
  relayedPackets,
  startRelayIn,
  waitFor,
} from "./kernel-netns.js";

const unavailable = netnsUnavailable(["ethtool", "bpftool"], "relay-server kernel-path suite");

/** Interfaces of the relay's namespace with an XDP program attached (`ip link` says "xdp"). */
function withXdp(net: KernelNet): string[] {
  return execFileSync("ip", ["netns", "exec", net.t.relay, "ip", "-o", "link", "show"])
    .toString()
    .split("\n")
    .filter((l) => /\bxdp\b/.test(l))
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? l);
}

describe.skipIf(unavailable)("turnpike-relay --kernel-path xdp between namespaces", () => {
  const tag = uniqueTag("tpx");
  let net: KernelNet;
  let relay: TurnpikeHandle;

  beforeAll(async () => {
    net = await makeKernelNet(tag, { xdpTargets: true });
    relay = await startRelayIn(net, ["--kernel-path", "xdp"]);
  }, 60_000);

  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    // The program went with the relay: no interface of its namespace carries XDP any more.
    if (net) expect(withXdp(net)).toEqual([]);
    for (const a of [net?.client, net?.peer, net?.observer]) await a?.stop();
    deleteNamespaces(tag);
    expect(leftoverNamespaces(tag)).toEqual([]);
  });

  it("attaches at the veths' XDP hook, leaves the loopback out and says so: the ready line, /readyz, the metric", async () => {
    expect(relay.stderr).toMatch(/ INFO ready .*\bkernelPath=xdp\b/);
    expect(relay.stderr).toMatch(/kernelPathNotes=.*not attached to lo \(no native XDP/);
    const ready = /kernelPathInterfaces=(\S+)/.exec(relay.stderr)?.[1]?.split(",") ?? [];
    expect(ready.sort()).toEqual([...net.t.relayInterfaces].sort());
    expect(withXdp(net).sort()).toEqual([...net.t.relayInterfaces].sort());
    const { readyz, metrics } = await pathReport(net, relay);
    expect(readyz).toMatchObject({ status: "ready", kernelPath: "xdp" });
    expect(metrics).toMatch(/turn_relay_kernel_path\{[^}]*path="xdp"[^}]*\} 1/);
  });

  it.each([4, 6] as const)(
    "relays a channel's ChannelData both ways at the XDP hook over IPv%i, userspace relaying only what resolves the peer's link address",
    async (family) => {
      const a = net.t.addresses[family];
      const name = `data${family}`;
      const peer = { address: a.peer, port: net.peerPorts[`peer${family}`]! };
      const before = await relayedPackets(net);
      await allocateIn(net, name, family);
      await net.peer.call("received", { name: `peer${family}`, clear: true });
      const bound = await net.client.call<{ code: number }>("channelBind", {
        name,
        channel: 0x4001,
        ...peer,
      });
      expect(bound.code).toBe(0);
      await net.client.call("stream", { name, channel: 0x4001, count: 200, everyMs: 1, size: 100 });
      const echoed = await waitFor(() => net.client.call<Received[]>("channelData", { name }), 200);
      const atPeer = await net.peer.call<Received[]>("received", { name: `peer${family}` });
      expect(atPeer).toHaveLength(200);
      expect(new Set(echoed.map((d) => d.stamp?.seq)).size).toBe(200);
      const after = await relayedPackets(net);
      const toPeer = {
        kernel: after.kernel.toPeer - before.kernel.toPeer,
        userspace: after.userspace.toPeer - before.userspace.toPeer,
      };
      // Only datagrams towards the peer while its link address was being resolved (the first
      // one or few, if the relay host had not resolved it already) went through userspace, whose send resolved it; every other one, and every
      // one back, at the driver's hook. Each datagram took exactly one of the two paths.
      expect(toPeer.kernel + toPeer.userspace).toBe(200);
      expect(toPeer.userspace).toBeLessThanOrEqual(10);
      expect(after.kernel.toClient - before.kernel.toClient).toBe(200);
      expect(after.userspace.toClient).toBe(before.userspace.toClient);
      await net.client.call("close", { name });
    },
  );
});
