// The real turnpike-relay with --kernel-path tc, in network namespaces this suite makes (a
// client, the relay and a peer joined by veth pairs; never the host's interfaces): bound
// ChannelData relayed both ways by the kernel, IPv4 and IPv6, with the relay's own sockets
// seeing none of it (the relay's userspace counters against the kernel's, from its /metrics);
// the first ChannelData sent on the ChannelBind answer; padding; per-allocation totals in the
// log; a forbidden peer that never gets an entry; the ready line, /readyz and the metric that
// say which path runs.

import { KERNEL_PATH_STATS } from "@turnpike/kernel-path";
import {
  deleteNamespaces,
  leftoverNamespaces,
  netnsUnavailable,
  relayedPacketsIn,
  uniqueTag,
} from "@turnpike/test-support/netns";
import { dropped } from "@turnpike/test-support/prometheus";
import type { TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OPTIONS } from "../src/config/options.js";
import {
  allocateIn,
  FORBIDDEN_PEER,
  grownOutcomes,
  type KernelNet,
  kernelOutcomes,
  kernelOutcomesIn,
  makeKernelNet,
  mapEntries,
  pathReport,
  type Received,
  relayedPackets,
  startRelayIn,
  tcxPrograms,
  waitFor,
} from "./kernel-netns.js";

const unavailable = netnsUnavailable(["ethtool", "bpftool"], "relay-server kernel-path suite");

describe.skipIf(unavailable)("turnpike-relay --kernel-path tc between namespaces", () => {
  const tag = uniqueTag("tpe");
  let net: KernelNet;
  let relay: TurnpikeHandle;

  beforeAll(async () => {
    net = await makeKernelNet(tag);
    relay = await startRelayIn(net);
  }, 60_000);

  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    // The program went with the relay: nothing at any of its interfaces.
    if (net) expect(await tcxPrograms(net)).toEqual([0, 0, 0]);
    for (const a of [net?.client, net?.peer, net?.observer]) await a?.stop();
    deleteNamespaces(tag);
    expect(leftoverNamespaces(tag)).toEqual([]);
  });

  it("says which data paths run: the ready line, /readyz and turn.relay.kernel_path", async () => {
    expect(relay.stderr).toMatch(/ INFO ready .*\bkernelPath=tc\b/);
    const ready = /kernelPathInterfaces=(\S+)/.exec(relay.stderr)?.[1]?.split(",") ?? [];
    // The interfaces of the listen and relay addresses (and the loopback, for 127.0.0.1).
    expect(ready.sort()).toEqual(["lo", ...net.t.relayInterfaces].sort());
    expect(await tcxPrograms(net)).toEqual([1, 1, 1]);
    const { readyz, metrics } = await pathReport(net, relay);
    expect(readyz).toMatchObject({ status: "ready", kernelPath: "tc" });
    expect(metrics).toMatch(/turn_relay_kernel_path\{[^}]*path="tc"[^}]*\} 1/);
    // The program's own counters, one series per outcome, whatever it has seen so far.
    expect([...kernelOutcomesIn(metrics).keys()].sort()).toEqual([...KERNEL_PATH_STATS].sort());
  });

  it.each([4, 6] as const)(
    "relays a channel's ChannelData both ways in the kernel over IPv%i, the relay's sockets seeing none of it",
    async (family) => {
      const a = net.t.addresses[family];
      const name = `data${family}`;
      const peer = { address: a.peer, port: net.peerPorts[`peer${family}`]! };
      const before = await relayedPackets(net);
      const outcomesBefore = await kernelOutcomes(net);
      const { relayed } = await allocateIn(net, name, family);
      expect(relayed.address).toBe(a.relayed);
      await net.peer.call("received", { name: `peer${family}`, clear: true });
      // The first ChannelData leaves the moment the ChannelBind success arrives.
      const bound = await net.client.call<{ code: number }>("channelBind", {
        name,
        channel: 0x4001,
        ...peer,
        sendRightAfter: true,
      });
      expect(bound.code).toBe(0);
      await net.client.call("stream", { name, channel: 0x4001, count: 200, everyMs: 1, size: 100 });
      const echoed = await waitFor(() => net.client.call<Received[]>("channelData", { name }), 201);
      const atPeer = await net.peer.call<Received[]>("received", { name: `peer${family}` });
      expect(atPeer).toHaveLength(201);
      expect(atPeer[0]?.hex).toHaveLength(64); // the 32-byte datagram sent on the answer
      expect(echoed).toHaveLength(201);
      expect(new Set(echoed.map((d) => d.stamp?.seq)).size).toBe(200);
      const after = await relayedPackets(net);
      // Every datagram both ways through the kernel; none through the relay's sockets.
      expect(after.kernel.toPeer - before.kernel.toPeer).toBe(201);
      expect(after.kernel.toClient - before.kernel.toClient).toBe(201);
      expect(after.userspace).toEqual(before.userspace);
      // The program says the same in its own counters, and that it left the STUN requests
      // (the Allocates and the ChannelBind, no entry of theirs) to the relay's sockets.
      const outcomes = grownOutcomes(outcomesBefore, await kernelOutcomes(net));
      expect(outcomes).toMatchObject({ "relayed-to-peer": 201, "relayed-to-client": 201 });
      expect(outcomes["pass-no-entry"]).toBeGreaterThanOrEqual(3);

      // Delete (Refresh 0): the allocation's kernel totals in its log line.
      const deleted = await net.client.call<{ code: number }>("refresh", { name, lifetime: 0 });
      expect(deleted.code).toBe(0);
      await waitFor(
        async () =>
          relay.stderr.split("\n").filter((l) => /allocation ended .*reason=deleted/.test(l)),
        family === 4 ? 1 : 2,
      );
      const ended = relay.stderr
        .split("\n")
        .filter((l) => /allocation ended .*reason=deleted/.test(l))
        .at(-1);
      expect(ended).toMatch(/kernelToPeerPackets=201 kernelToPeerBytes=20032 /);
      expect(ended).toMatch(/kernelToClientPackets=201 kernelToClientBytes=20032\b/);
      await net.client.call("close", { name });
    },
  );

  it("relays on the loopback of one host: client, relay and peer in one namespace", async () => {
    // The observer lives in the relay's namespace: it is the client and the peer here, and
    // the relay answers on 127.0.0.1 too (the loopback is attached for that listener).
    const o = net.observer;
    const name = "loopback";
    const peerPort = await o.call<number>("socket", {
      name: "looppeer",
      address: "127.0.0.1",
      port: 0,
      echo: true,
    });
    await o.call("turn", {
      name,
      host: "127.0.0.1",
      port: relay.port,
      localAddress: "127.0.0.1",
      username: "alice",
      password: "alice-secret",
    });
    expect((await o.call<{ code: number }>("allocate", { name })).code).toBe(0);
    const before = await relayedPackets(net);
    const bound = await o.call<{ code: number }>("channelBind", {
      name,
      channel: 0x4004,
      address: "127.0.0.1",
      port: peerPort,
    });
    expect(bound.code).toBe(0);
    await o.call("stream", { name, channel: 0x4004, count: 100, everyMs: 1, size: 100 });
    expect(await waitFor(() => o.call<Received[]>("channelData", { name }), 100)).toHaveLength(100);
    expect(await o.call<Received[]>("received", { name: "looppeer" })).toHaveLength(100);
    const after = await relayedPackets(net);
    expect(after.kernel.toPeer - before.kernel.toPeer).toBe(100);
    expect(after.kernel.toClient - before.kernel.toClient).toBe(100);
    expect(after.userspace).toEqual(before.userspace);
    await o.call("refresh", { name, lifetime: 0 });
    await o.call("close", { name });
  });

  it("relays padded ChannelData (RFC 8656 §12.5) with the padding trimmed", async () => {
    const name = "padded";
    const peer = { address: net.t.addresses[4].peer, port: net.peerPorts.peer4! };
    await allocateIn(net, name, 4);
    expect(
      (await net.client.call<{ code: number }>("channelBind", { name, channel: 0x4002, ...peer }))
        .code,
    ).toBe(0);
    await net.peer.call("received", { name: "peer4", clear: true });
    const before = await relayedPackets(net);
    for (const [size, pad] of [
      [13, 3],
      [14, 2],
      [15, 1],
      [16, 0],
    ] as const) {
      await net.client.call("sendChannelData", { name, channel: 0x4002, size, pad });
    }
    const atPeer = await waitFor(() => net.peer.call<Received[]>("received", { name: "peer4" }), 4);
    expect(atPeer.map((d) => d.hex.length / 2)).toEqual([13, 14, 15, 16]);
    const after = await relayedPackets(net);
    expect(after.kernel.toPeer - before.kernel.toPeer).toBe(4);
    expect(after.userspace).toEqual(before.userspace);
    await net.client.call("refresh", { name, lifetime: 0 });
    await net.client.call("close", { name });
  });

  it("never gives a peer the policy forbids an entry in the kernel", async () => {
    const name = "forbidden";
    const forbidden = { address: FORBIDDEN_PEER, port: net.peerPorts.forbidden4! };
    await allocateIn(net, name, 4);
    const permission = await net.client.call<{ code: number }>("createPermission", {
      name,
      ...forbidden,
    });
    expect(permission.code).toBe(403);
    const bound = await net.client.call<{ code: number }>("channelBind", {
      name,
      channel: 0x4003,
      ...forbidden,
    });
    expect(bound.code).toBe(403);
    // No route in the kernel's maps at all (this relay's allocations of the earlier tests
    // ended), and nothing reaches the forbidden address.
    expect(mapEntries(relay.pid, "tp_c2p")).toBe(0);
    expect(mapEntries(relay.pid, "tp_p2c")).toBe(0);
    await net.client.call("stream", { name, channel: 0x4003, count: 20, everyMs: 1, size: 40 });
    await new Promise((r) => setTimeout(r, 200));
    expect(await net.peer.call<Received[]>("received", { name: "forbidden4" })).toEqual([]);
    await net.client.call("refresh", { name, lifetime: 0 });
    await net.client.call("close", { name });
  });

  // --max-bps and --max-bps-per-user (relay-core's bandwidth buckets) arrive with the relay's
  // limits options; until the relay has them there is nothing to carry into the kernel.
  it.skipIf(!("max-bps" in OPTIONS))(
    "holds the relay's bandwidth limits in the kernel: its token buckets drop what is over, counted",
    async () => {
      const RATE = 100_000;
      // A second relay next to the suite's, on ports of its own.
      const limited = await startRelayIn(net, ["--max-bps", String(RATE)], {
        listen: 3479,
        metrics: 9465,
      });
      try {
        const name = "limited";
        const a = net.t.addresses[4];
        await allocateIn(net, name, 4, "alice", 3479);
        const peer = { address: a.peer, port: net.peerPorts.peer4! };
        expect(
          (
            await net.client.call<{ code: number }>("channelBind", {
              name,
              channel: 0x4005,
              ...peer,
            })
          ).code,
        ).toBe(0);
        await net.peer.call("received", { name: "peer4", clear: true });
        const outcomesBefore = await kernelOutcomes(net, 9465);
        // 400 datagrams of 1,000 bytes as fast as they go: four times the bucket (its burst is
        // one second's worth), the echoes charged to the same bucket.
        const started = Date.now();
        await net.client.call("stream", {
          name,
          channel: 0x4005,
          count: 400,
          everyMs: 0,
          size: 1000,
        });
        await new Promise((r) => setTimeout(r, 300));
        const elapsed = (Date.now() - started) / 1000;
        const atPeer = await net.peer.call<Received[]>("received", { name: "peer4" });
        const echoed = await net.client.call<Received[]>("channelData", { name });
        const metrics = (
          await net.observer.call<{ body: string }>("http", { port: 9465, path: "/metrics" })
        ).body;
        const relayed = relayedPacketsIn(metrics);
        const droppedInKernel = dropped(metrics, "bandwidth-limit");
        // What passed, both ways, within the burst plus what the rate refilled meanwhile.
        const passed = relayed.kernel.toPeer + relayed.kernel.toClient;
        expect(passed * 1000).toBeLessThanOrEqual(RATE + RATE * elapsed + 1000);
        // The burst (a second's worth: 100 datagrams) is shared with the echoes, about half
        // each; what the rate refills during the few ms of the stream adds a datagram or two.
        expect(relayed.kernel.toPeer).toBeGreaterThanOrEqual(40);
        expect(relayed.kernel.toPeer).toBeLessThan(400);
        // What arrived is what was counted, each datagram once, and the kernel's save for the
        // first at most: under load in CI (2026-12-07, three times) the peer had one datagram
        // more than the kernel counted, and this comparison showed userspace had relayed it
        // (userspace toPeer 1, nothing twice). Why the program left it to userspace is not
        // known (pass-no-neighbour, the first guess, is XDP's only: at TC the program redirects
        // through bpf_redirect_neigh). One comparison, so that a failure shows every count at
        // once, and its message what the program did with the datagrams meanwhile
        // (turn.relay.kernel_path.datagrams): the next one names its pass-* reason.
        const outcomes = grownOutcomes(outcomesBefore, kernelOutcomesIn(metrics));
        expect(
          {
            atPeer: atPeer.length,
            distinctAtPeer: new Set(atPeer.map((d) => d.stamp?.seq)).size,
            echoed: echoed.length,
            userspaceToPeerAtMostOne: relayed.userspace.toPeer <= 1,
          },
          `kernel program outcomes during the stream: ${JSON.stringify(outcomes)}`,
        ).toEqual({
          atPeer: relayed.kernel.toPeer + relayed.userspace.toPeer,
          distinctAtPeer: relayed.kernel.toPeer + relayed.userspace.toPeer,
          echoed: relayed.kernel.toClient + relayed.userspace.toClient,
          userspaceToPeerAtMostOne: true,
        });
        // The program's own counters agree with the bindings' (rate-limited: both directions).
        expect(outcomes["relayed-to-peer"] ?? 0).toBe(relayed.kernel.toPeer);
        expect(outcomes["rate-limited"] ?? 0).toBe(droppedInKernel);
        // Dropped in the kernel: the client's datagrams and the peer's echoes that neither path
        // relayed.
        expect(droppedInKernel).toBe(
          400 + atPeer.length - passed - relayed.userspace.toPeer - relayed.userspace.toClient,
        );
        await net.client.call("refresh", { name, lifetime: 0 });
        await waitFor(
          async () =>
            limited.stderr
              .split("\n")
              .filter((l) => /allocation ended .*kernelLimitedPackets=/.test(l)),
          1,
        );
        expect(limited.stderr).toMatch(
          new RegExp(
            `allocation ended .*kernelToPeerPackets=${atPeer.length} .*kernelLimitedPackets=${droppedInKernel}\\b`,
          ),
        );
        await net.client.call("close", { name });
      } finally {
        await limited.stop("SIGINT");
      }
    },
  );

  it.skipIf(!("max-bps-per-user" in OPTIONS))(
    "charges one user's channels in every worker to one kernel bucket (--max-bps-per-user)",
    async () => {
      const RATE = 100_000;
      const relay = await startRelayIn(
        net,
        ["--workers", "2", "--max-bps-per-user", String(RATE)],
        { listen: 3480, metrics: 9466 },
      );
      try {
        const a = net.t.addresses[4];
        const peer = { address: a.peer, port: net.peerPorts.peer4! };
        // Clients land on a worker by their 5-tuple; worker 0 relays from the lower half of
        // the ports. One allocation of alice on each worker.
        const onWorker: Record<0 | 1, string | undefined> = { 0: undefined, 1: undefined };
        for (let i = 0; i < 16 && (!onWorker[0] || !onWorker[1]); i++) {
          const name = `user${i}`;
          const { relayed } = await allocateIn(net, name, 4, "alice", 3480);
          const worker = relayed.port <= 57343 ? 0 : 1;
          if (onWorker[worker] === undefined) onWorker[worker] = name;
          else await net.client.call("refresh", { name, lifetime: 0 });
        }
        const names = [onWorker[0]!, onWorker[1]!];
        for (const name of names) {
          const bound = await net.client.call<{ code: number }>("channelBind", {
            name,
            channel: 0x4006,
            ...peer,
          });
          expect(bound.code).toBe(0);
        }
        // Each of the two sends twice the user's burst: together four times.
        const started = Date.now();
        await Promise.all(
          names.map((name) =>
            net.client.call("stream", {
              name,
              channel: 0x4006,
              count: 200,
              everyMs: 0,
              size: 1000,
            }),
          ),
        );
        await new Promise((r) => setTimeout(r, 300));
        const elapsed = (Date.now() - started) / 1000;
        const metrics = (
          await net.observer.call<{ body: string }>("http", { port: 9466, path: "/metrics" })
        ).body;
        const relayed = relayedPacketsIn(metrics);
        // One bucket for both workers: within one burst plus the rate, not twice that.
        const passed = relayed.kernel.toPeer + relayed.kernel.toClient;
        expect(passed * 1000).toBeLessThanOrEqual(RATE + RATE * elapsed + 2000);
        expect(relayed.kernel.toPeer).toBeGreaterThan(30);
        expect(relayed.userspace).toEqual({ toPeer: 0, toClient: 0 });
        // The program's own counters are the process's, read once by the supervisor: with two
        // workers they equal the bindings' sums, not twice them.
        const outcomes = kernelOutcomesIn(metrics);
        expect(outcomes.get("relayed-to-peer")).toBe(relayed.kernel.toPeer);
        expect(outcomes.get("relayed-to-client")).toBe(relayed.kernel.toClient);
        expect(outcomes.get("rate-limited")).toBe(dropped(metrics, "bandwidth-limit"));
        for (const name of names) {
          await net.client.call("refresh", { name, lifetime: 0 });
          await net.client.call("close", { name });
        }
      } finally {
        await relay.stop("SIGINT");
      }
    },
  );
});
