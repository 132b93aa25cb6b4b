// The kernel data path against the real kernel, in namespaces of its own: a client, a relay
// and a peer joined by veth pairs (netns.ts), IPv4 and IPv6. The relay's agent opens real UDP
// sockets on the listener and relayed addresses: whatever the program leaves to userspace
// arrives there unchanged, and bound traffic must never arrive there.
import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  Agent,
  checksumErrors,
  type Datagram,
  deleteNamespaces,
  eventually,
  inNs,
  leftoverNamespaces,
  makeTopology,
  netnsUnavailable,
  type Topology,
  uniqueTag,
} from "./netns.js";

const unavailable = netnsUnavailable(["ethtool", "python3", "bpftool"]);

const LISTEN_PORT = 3478;

/** A ChannelData message (RFC 8656 §12.4): channel, length, data, then `pad` extra bytes. */
function channelData(channel: number, data: string, pad = "", length = data.length / 2): string {
  const h = Buffer.alloc(4);
  h.writeUInt16BE(channel, 0);
  h.writeUInt16BE(length, 2);
  return h.toString("hex") + data + pad;
}

function bytes(n: number, seed: number): string {
  return Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff)).toString("hex");
}

const settle = () => new Promise((r) => setTimeout(r, 150));

// The same suite at both attach points: TC (TCX ingress) and native XDP on the relay's veths.
for (const mode of ["tc", "xdp"] as const)
  describe.skipIf(unavailable)(`kernel path between namespaces (${mode})`, () => {
    const tag = uniqueTag(`tp${mode[0]}`);
    let t: Topology;
    let relay: Agent;
    let client: Agent;
    let peer: Agent;
    const ports: Record<string, number> = {};

    beforeAll(async () => {
      t = makeTopology(tag, { xdpTargets: mode === "xdp" });
      [relay, client, peer] = await Promise.all([
        Agent.start(t.relay),
        Agent.start(t.client),
        Agent.start(t.peer),
      ]);
      await relay.call("open", {
        interfaces: t.relayInterfaces,
        mode,
        maxBindings: 1024,
        maxBuckets: 16,
      });
      for (const f of [4, 6] as const) {
        const a = t.addresses[f];
        ports[`listener${f}`] = await relay.call<number>("socket", {
          name: `listener${f}`,
          address: a.listener,
          port: LISTEN_PORT,
        });
        for (const n of ["a", "b"]) {
          ports[`relayed${f}${n}`] = await relay.call<number>("socket", {
            name: `relayed${f}${n}`,
            address: a.relayed,
            port: 0,
          });
          ports[`client${f}${n}`] = await client.call<number>("socket", {
            name: `client${f}${n}`,
            address: a.client,
            port: 0,
          });
          ports[`peer${f}${n}`] = await peer.call<number>("socket", {
            name: `peer${f}${n}`,
            address: a.peer,
            port: 0,
          });
        }
      }
      if (mode === "xdp") {
        // XDP has no bpf_redirect_neigh: a next hop whose link address this host has not
        // resolved yet is userspace's, whose first datagram resolves it. Here one datagram from
        // the relay's stack to the client and to the peer does that; the tests drain them.
        for (const f of [4, 6] as const) {
          const a = t.addresses[f];
          await relay.call("send", { name: `listener${f}`, address: a.client, port: 9, hex: "00" });
          await relay.call("send", { name: `relayed${f}a`, address: a.peer, port: 9, hex: "00" });
        }
        await settle();
      }
    }, 60_000);

    afterAll(async () => {
      await relay?.stop();
      // The relay's process is gone: so must be its program (its links were its fds).
      if (t) {
        const observer = await Agent.start(t.relay);
        for (const dev of t.relayInterfaces) {
          expect(await observer.call("tcxPrograms", { name: dev })).toBe(0);
          expect(inNs(t.relay, "ip", "link", "show", "dev", dev)).not.toMatch(/\bxdp/);
        }
        await observer.stop();
        expect(inNs(t.relay, "bpftool", "net", "show")).not.toMatch(/turnpike/);
      }
      await Promise.all([client?.stop(), peer?.stop()]);
      deleteNamespaces(tag);
      expect(leftoverNamespaces(tag)).toEqual([]);
    }, 30_000);

    async function received(agent: Agent, name: string): Promise<Datagram[]> {
      return agent.call<Datagram[]>("received", { name, clear: true });
    }

    async function drainAll(): Promise<void> {
      for (const f of [4, 6]) {
        await received(relay, `listener${f}`);
        for (const n of ["a", "b"]) {
          await received(relay, `relayed${f}${n}`);
          await received(client, `client${f}${n}`);
          await received(peer, `peer${f}${n}`);
        }
      }
    }

    async function waitFor(agent: Agent, name: string, count: number): Promise<Datagram[]> {
      const got: Datagram[] = [];
      await eventually(
        async () => {
          got.push(...(await received(agent, name)));
          return got.length;
        },
        (n) => n >= count,
      );
      return got;
    }

    for (const f of [4, 6] as const) {
      describe(`IPv${f}`, () => {
        const a = () => t.addresses[f];
        const route = (channel: number, deadlineMs: number, n = "a") => ({
          client: { address: a().client, port: ports[`client${f}${n}`]! },
          listener: { address: a().listener, port: LISTEN_PORT },
          channel,
          relayed: { address: a().relayed, port: ports[`relayed${f}${n}`]! },
          peer: { address: a().peer, port: ports[`peer${f}${n}`]! },
          deadlineMs,
        });
        const fromClient = (hex: string, n = "a") =>
          client.call("send", {
            name: `client${f}${n}`,
            address: a().listener,
            port: LISTEN_PORT,
            hex,
          });
        const fromPeer = (hex: string, n = "a") =>
          peer.call("send", {
            name: `peer${f}${n}`,
            address: a().relayed,
            port: ports[`relayed${f}${n}`],
            hex,
          });
        const farFuture = async () => (await relay.call<number>("now")) + 600_000;

        it("relays bound ChannelData both ways in the kernel: bare data from the relayed address to the peer, ChannelData from the listener to the client", async () => {
          await drainAll();
          const before = await relay.call<Record<string, number>>("stats");
          const slot = await relay.call<number>("bind", {
            route: route(0x4000, await farFuture()),
          });
          expect(slot).toBeGreaterThanOrEqual(0);
          const toPeer = [bytes(1, 1), bytes(0, 0), bytes(1200, 3), bytes(33, 4)];
          for (const d of toPeer) await fromClient(channelData(0x4000, d));
          const atPeer = await waitFor(peer, `peer${f}a`, toPeer.length);
          expect(atPeer.map((d) => d.hex)).toEqual(toPeer);
          for (const d of atPeer) {
            expect(d.address).toBe(a().relayed);
            expect(d.port).toBe(ports[`relayed${f}a`]);
          }
          const toClient = [bytes(5, 5), bytes(1400, 6), bytes(0, 0)];
          for (const d of toClient) await fromPeer(d);
          const atClient = await waitFor(client, `client${f}a`, toClient.length);
          expect(atClient.map((d) => d.hex)).toEqual(toClient.map((d) => channelData(0x4000, d)));
          for (const d of atClient) {
            expect(d.address).toBe(a().listener);
            expect(d.port).toBe(LISTEN_PORT);
          }
          // The counters saw every datagram; userspace saw none of them.
          await settle();
          expect(await received(relay, `listener${f}`)).toEqual([]);
          expect(await received(relay, `relayed${f}a`)).toEqual([]);
          const size = (list: string[]) => list.reduce((s, d) => s + d.length / 2, 0);
          expect(await relay.call("counters", { slot })).toEqual({
            toPeerPackets: toPeer.length,
            toPeerBytes: size(toPeer),
            toClientPackets: toClient.length,
            toClientBytes: size(toClient),
            limitedPackets: 0,
            limitedBytes: 0,
          });
          const after = await relay.call<Record<string, number>>("stats");
          expect(after["relayed-to-peer"]! - before["relayed-to-peer"]!).toBe(toPeer.length);
          expect(after["relayed-to-client"]! - before["relayed-to-client"]!).toBe(toClient.length);
          // readStats (what a metrics collection uses) reads the same counters into an array.
          expect(await relay.call("readStats")).toEqual(after);
          // The receiving stacks checked every UDP checksum (computed in software by the senders).
          expect(checksumErrors(t.client) + checksumErrors(t.peer)).toBe(0);
          expect(await relay.call("unbind", { slot })).not.toBeNull();
        });

        it("trims up to 3 bytes of padding after the data and leaves longer trailers to userspace", async () => {
          await drainAll();
          const slot = await relay.call<number>("bind", {
            route: route(0x4001, await farFuture()),
          });
          const data = bytes(5, 9);
          for (const pad of ["00", "0000", "000000"])
            await fromClient(channelData(0x4001, data, pad));
          const atPeer = await waitFor(peer, `peer${f}a`, 3);
          expect(atPeer.map((d) => d.hex)).toEqual([data, data, data]);
          const long = channelData(0x4001, data, "00000000");
          await fromClient(long);
          const atListener = await waitFor(relay, `listener${f}`, 1);
          expect(atListener.map((d) => d.hex)).toEqual([long]);
          expect(checksumErrors(t.peer)).toBe(0);
          await relay.call("unbind", { slot });
        });

        it("leaves to userspace unchanged: a length beyond the datagram, STUN, an unbound channel, an unbound peer, fragments", async () => {
          await drainAll();
          const slot = await relay.call<number>("bind", {
            route: route(0x4002, await farFuture()),
          });
          const before = await relay.call<Record<string, number>>("stats");
          const tooLong = channelData(0x4002, bytes(4, 1), "", 9);
          const stun = `000100002112a442${bytes(12, 2)}`;
          const unbound = channelData(0x4003, bytes(8, 3));
          const fragmented = channelData(0x4002, bytes(3000, 4));
          for (const d of [tooLong, stun, unbound, fragmented]) await fromClient(d);
          const atListener = await waitFor(relay, `listener${f}`, 4);
          expect(atListener.map((d) => d.hex).sort()).toEqual(
            [tooLong, stun, unbound, fragmented].sort(),
          );
          const stranger = bytes(20, 5);
          await peer.call("send", {
            name: `peer${f}b`,
            address: a().relayed,
            port: ports[`relayed${f}a`],
            hex: stranger,
          });
          const atRelayed = await waitFor(relay, `relayed${f}a`, 1);
          expect(atRelayed.map((d) => d.hex)).toEqual([stranger]);
          await settle();
          expect(await received(peer, `peer${f}a`)).toEqual([]);
          expect(await received(client, `client${f}b`)).toEqual([]);
          const after = await relay.call<Record<string, number>>("stats");
          const delta = (k: string) => after[k]! - before[k]!;
          expect(delta("pass-channel-data-length")).toBe(1);
          expect(delta("pass-fragment")).toBeGreaterThanOrEqual(3); // 3000 bytes over a 1500 MTU
          expect(delta("pass-no-entry")).toBeGreaterThanOrEqual(3); // STUN, channel, peer
          expect(delta("relayed-to-peer") + delta("relayed-to-client")).toBe(0);
          expect(await relay.call("counters", { slot })).toMatchObject({ toPeerPackets: 0 });
          await relay.call("unbind", { slot });
        });

        it("stops relaying in the kernel at the deadline, with no userspace action, and unbind stops it at once", async () => {
          await drainAll();
          const deadline = (await relay.call<number>("now")) + 400;
          const slot = await relay.call<number>("bind", { route: route(0x4004, deadline) });
          await client.call("sendTimed", {
            name: `client${f}a`,
            address: a().listener,
            port: LISTEN_PORT,
            channel: 0x4004,
            count: 100,
            everyMs: 8,
          });
          await settle();
          const sentAt = (d: Datagram, offset: number) =>
            Buffer.from(d.hex, "hex").readDoubleBE(offset);
          const inKernel = (await received(peer, `peer${f}a`)).map((d) => sentAt(d, 0));
          const inUserspace = (await received(relay, `listener${f}`)).map((d) => sentAt(d, 4));
          expect(inKernel.length).toBeGreaterThan(10);
          expect(inUserspace.length).toBeGreaterThan(10);
          expect(inKernel.length + inUserspace.length).toBe(100);
          // The program compares the arrival time with the deadline. Nothing sent after it was
          // relayed in the kernel (exact: stamps are taken before sending); what reached
          // userspace was sent at most a few ms before it (a send can wait for the sender's
          // event loop on a loaded machine: the slack is for that, not for the kernel).
          expect(Math.max(...inKernel)).toBeLessThan(deadline);
          expect(Math.min(...inUserspace)).toBeGreaterThan(deadline - 15);
          expect(await relay.call("counters", { slot })).toMatchObject({
            toPeerPackets: inKernel.length,
          });

          // A live binding again, then unbind: the very next datagram goes to userspace.
          await relay.call("setDeadline", { slot, deadlineMs: await farFuture() });
          await fromClient(channelData(0x4004, bytes(3, 1)));
          await waitFor(peer, `peer${f}a`, 1);
          const final = await relay.call<{ toPeerPackets: number }>("unbind", { slot });
          expect(final.toPeerPackets).toBe(inKernel.length + 1);
          await fromClient(channelData(0x4004, bytes(3, 2)));
          expect((await waitFor(relay, `listener${f}`, 1)).length).toBe(1);
          expect(await received(peer, `peer${f}a`)).toEqual([]);
        });

        it("relays from a wildcard listener once the client has shown which address it uses", async () => {
          await drainAll();
          const wildcard = f === 4 ? "0.0.0.0" : "::";
          const r = {
            ...route(0x4005, await farFuture()),
            listener: { address: wildcard, port: LISTEN_PORT },
          };
          const slot = await relay.call<number>("bind", { route: r });
          await fromPeer(bytes(6, 1)); // no ChannelData seen yet: userspace answers
          expect((await waitFor(relay, `relayed${f}a`, 1)).length).toBe(1);
          await fromClient(channelData(0x4005, bytes(6, 2)));
          expect((await waitFor(peer, `peer${f}a`, 1)).length).toBe(1);
          await fromPeer(bytes(6, 3));
          const atClient = await waitFor(client, `client${f}a`, 1);
          expect(atClient).toEqual([
            { hex: channelData(0x4005, bytes(6, 3)), address: a().listener, port: LISTEN_PORT },
          ]);
          await relay.call("unbind", { slot });
        });

        it("relays between two allocations of this relay in one pass (a peer that is another client's relayed address)", async () => {
          await drainAll();
          const deadline = await farFuture();
          const relayedA = { address: a().relayed, port: ports[`relayed${f}a`]! };
          const relayedB = { address: a().relayed, port: ports[`relayed${f}b`]! };
          const sa = await relay.call<number>("bind", {
            route: { ...route(0x4006, deadline, "a"), peer: relayedB },
          });
          const sb = await relay.call<number>("bind", {
            route: { ...route(0x4007, deadline, "b"), peer: relayedA },
          });
          const before = await relay.call<Record<string, number>>("stats");
          await fromClient(channelData(0x4006, bytes(10, 1)), "a");
          await fromClient(channelData(0x4007, bytes(11, 2)), "b");
          expect((await waitFor(client, `client${f}b`, 1)).map((d) => d.hex)).toEqual([
            channelData(0x4007, bytes(10, 1)),
          ]);
          expect((await waitFor(client, `client${f}a`, 1)).map((d) => d.hex)).toEqual([
            channelData(0x4006, bytes(11, 2)),
          ]);
          const after = await relay.call<Record<string, number>>("stats");
          expect(after["relayed-chained"]! - before["relayed-chained"]!).toBe(2);
          expect(await relay.call("counters", { slot: sa })).toMatchObject({
            toPeerPackets: 1,
            toClientPackets: 1,
          });
          await settle();
          expect(await received(relay, `relayed${f}a`)).toEqual([]);
          expect(await received(relay, `relayed${f}b`)).toEqual([]);
          expect(checksumErrors(t.client)).toBe(0);
          await relay.call("unbind", { slot: sa });
          await relay.call("unbind", { slot: sb });
        });

        it("drops and counts what a token bucket refuses, in the kernel", async () => {
          await drainAll();
          await relay.call("setBucket", { bucket: f, bytesPerSecond: 1, burstBytes: 250 });
          const slot = await relay.call<number>("bind", {
            route: { ...route(0x4008, await farFuture()), buckets: [f] },
          });
          for (let i = 0; i < 5; i++) await fromClient(channelData(0x4008, bytes(100, i)));
          await settle();
          expect((await received(peer, `peer${f}a`)).length).toBe(2);
          expect(await received(relay, `listener${f}`)).toEqual([]);
          expect(await relay.call("counters", { slot })).toMatchObject({
            toPeerPackets: 2,
            limitedPackets: 3,
            limitedBytes: 300,
          });
          expect(await relay.call("bucketDrops", { bucket: f })).toEqual({
            packets: 3,
            bytes: 300,
          });
          await relay.call("unbind", { slot });
        });
      });
    }

    it.skipIf(mode !== "xdp")(
      "leaves a datagram whose next hop has no resolved link address to userspace (XDP cannot resolve it), and relays in the kernel once the stack has",
      async () => {
        await drainAll();
        const a = t.addresses[4];
        const slot = await relay.call<number>("bind", {
          route: {
            client: { address: a.client, port: ports.client4a },
            listener: { address: a.listener, port: LISTEN_PORT },
            channel: 0x400a,
            relayed: { address: a.relayed, port: ports.relayed4a },
            peer: { address: a.peer, port: ports.peer4a },
            deadlineMs: (await relay.call<number>("now")) + 60_000,
          },
        });
        inNs(t.relay, "ip", "neigh", "flush", "dev", t.relayInterfaces[1]);
        const before = await relay.call<Record<string, number>>("stats");
        const hex = channelData(0x400a, bytes(8, 1));
        await client.call("send", {
          name: "client4a",
          address: a.listener,
          port: LISTEN_PORT,
          hex,
        });
        expect((await waitFor(relay, "listener4", 1)).map((d) => d.hex)).toEqual([hex]);
        const after = await relay.call<Record<string, number>>("stats");
        expect(after["pass-no-neighbour"]! - before["pass-no-neighbour"]!).toBe(1);
        expect(await received(peer, "peer4a")).toEqual([]);
        // Userspace's own datagram to the peer resolves it; from then on the kernel relays.
        await relay.call("send", {
          name: "relayed4a",
          address: a.peer,
          port: ports.peer4a,
          hex: "00",
        });
        expect((await waitFor(peer, "peer4a", 1)).map((d) => d.hex)).toEqual(["00"]);
        await eventually(
          async () => {
            await client.call("send", {
              name: "client4a",
              address: a.listener,
              port: LISTEN_PORT,
              hex,
            });
            await settle();
            return (await received(peer, "peer4a")).length;
          },
          (n) => n > 0,
        );
        await relay.call("unbind", { slot });
      },
    );

    it("leaves IPv4 datagrams with options to userspace", async () => {
      await drainAll();
      const port = 40999;
      const slot = await relay.call<number>("bind", {
        route: {
          client: { address: t.addresses[4].client, port },
          listener: { address: t.addresses[4].listener, port: LISTEN_PORT },
          channel: 0x4009,
          relayed: { address: t.addresses[4].relayed, port: ports.relayed4a },
          peer: { address: t.addresses[4].peer, port: ports.peer4a },
          deadlineMs: (await relay.call<number>("now")) + 60_000,
        },
      });
      const before = await relay.call<Record<string, number>>("stats");
      const hex = channelData(0x4009, bytes(8, 1));
      // Four NOPs end-of-options: IHL 6. (Node cannot set IP_OPTIONS; Python's socket can.)
      execFileSync("ip", [
        "netns",
        "exec",
        t.client,
        "python3",
        "-c",
        `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("${t.addresses[4].client}", ${port})); s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\\x01\\x01\\x01\\x00"); s.sendto(bytes.fromhex("${hex}"), ("${t.addresses[4].listener}", ${LISTEN_PORT}))`,
      ]);
      expect((await waitFor(relay, "listener4", 1)).map((d) => d.hex)).toEqual([hex]);
      const after = await relay.call<Record<string, number>>("stats");
      expect(after["pass-ip-options"]! - before["pass-ip-options"]!).toBe(1);
      expect(await received(peer, "peer4a")).toEqual([]);
      await relay.call("unbind", { slot });
    });
  });

describe.skipIf(unavailable)("kernel path and locally sent datagrams (checksum offload)", () => {
  it("leaves a datagram whose checksum the device would compute to userspace when it would leave the host", async () => {
    const tag = uniqueTag("tpo");
    try {
      const t = makeTopology(tag, { offload: true });
      const [relay, client] = await Promise.all([Agent.start(t.relay), Agent.start(t.client)]);
      await relay.call("open", { interfaces: t.relayInterfaces, maxBindings: 16, maxBuckets: 1 });
      const a = t.addresses[4];
      await relay.call("socket", { name: "listener", address: a.listener, port: LISTEN_PORT });
      const cport = await client.call<number>("socket", { name: "c", address: a.client, port: 0 });
      await relay.call("bind", {
        route: {
          client: { address: a.client, port: cport },
          listener: { address: a.listener, port: LISTEN_PORT },
          channel: 0x4000,
          relayed: { address: a.relayed, port: 50000 },
          peer: { address: a.peer, port: 50001 },
          deadlineMs: (await relay.call<number>("now")) + 60_000,
        },
      });
      const hex = channelData(0x4000, bytes(20, 1));
      await client.call("send", { name: "c", address: a.listener, port: LISTEN_PORT, hex });
      const got = await eventually(
        () => relay.call<Datagram[]>("received", { name: "listener" }),
        (l) => l.length > 0,
      );
      expect(got.map((d) => d.hex)).toEqual([hex]);
      expect((await relay.call<Record<string, number>>("stats"))["pass-checksum-offload"]).toBe(1);
      await Promise.all([relay.stop(), client.stop()]);
    } finally {
      deleteNamespaces(tag);
    }
    expect(leftoverNamespaces(tag)).toEqual([]);
  }, 30_000);
});
