// Connection tracking and the real relay (conntrack.ts, deploy/nftables/turnpike-notrack.nft),
// in the namespaces of the kernel-path suites (client, relay, peer joined by veths: a client's
// datagrams reach the relay's namespace through its prerouting hook, as from another host):
//
// - with nothing in the relay's namespace asking for connection state, the relay says nothing;
// - with a stateful firewall rule there (`ct state established,related accept`, the usual
//   first rule of a host firewall), the relay warns at start naming the ports the kernel
//   tracked and the recipe, and a relayed exchange does fill the kernel's table: the client's
//   flow to the listener and the relay port's flow to the peer;
// - with the recipe loaded as shipped (the relay's default ports), the relay says nothing, and
//   neither UDP flow of an allocation, IPv4 or IPv6, nor a TCP connection to the listener is
//   tracked, while relaying works as before.
//
// The namespaces (and their nftables tables) are removed at the end; nothing is loaded on the
// host's own interfaces.
import { fileURLToPath } from "node:url";
import {
  deleteNamespaces,
  inNs,
  leftoverNamespaces,
  netnsUnavailable,
  uniqueTag,
} from "@turnpike/test-support/netns";
import type { TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  allocateIn,
  type KernelNet,
  LISTEN_PORT,
  makeKernelNet,
  startRelayIn,
  startUnderCapsh,
} from "./kernel-netns.js";

const unavailable = netnsUnavailable(["nft", "ethtool", "python3"], "relay-server conntrack suite");

const RECIPE = fileURLToPath(
  new URL("../../../deploy/nftables/turnpike-notrack.nft", import.meta.url),
);
const WARNING = /WARN connection tracking follows the relay's traffic/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** capsh: user nobody, as the systemd unit's dynamic user, to whom /proc/net/nf_conntrack is closed. */
const AS_NOBODY = ["--user=nobody"];

describe.skipIf(unavailable)("connection tracking and the relay's flows", () => {
  const tag = uniqueTag("tpc");
  let net: KernelNet;
  let relay: TurnpikeHandle | undefined;
  let allocations = 0;

  /** The kernel's flow table in the relay's namespace, as text. */
  const flows = () => inNs(net.t.relay, "cat", "/proc/net/nf_conntrack");
  const nft = (...args: string[]) => inNs(net.t.relay, "nft", ...args);

  /**
   * The usual first rule of a host firewall, which makes the kernel track every flow of the
   * namespace (`add` of what exists already changes nothing but the rule, added once more).
   */
  function trackEverything(): void {
    nft("add table inet fw");
    nft("add chain inet fw input { type filter hook input priority 0; policy accept; }");
    nft("add rule inet fw input ct state established,related accept");
  }

  /** One UDP datagram from the client's namespace to the relay's client-side address; its port. */
  function datagramFromClient(port: number): string {
    const a = net.t.addresses[4];
    return inNs(
      net.t.client,
      "python3",
      "-c",
      `import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b"x", ("${a.listener}", ${port})); print(s.getsockname()[1])`,
    ).trim();
  }

  /**
   * The relay's start-time lines when it runs as nobody (the probe then counts the table's
   * entries instead of reading it), stopped again once it listens.
   */
  async function startLinesAsNobody(): Promise<string> {
    expect(() =>
      inNs(net.t.relay, "capsh", ...AS_NOBODY, "--", "-c", "head -c1 /proc/net/nf_conntrack"),
    ).toThrow();
    const proc = await startUnderCapsh(net, AS_NOBODY, "auto", LISTEN_PORT);
    await proc.stop("SIGKILL");
    expect(proc.stderr).toMatch(/ INFO listening /);
    return proc.stderr;
  }

  /** The relay as the suites run it, without the kernel path: every datagram meets netfilter. */
  async function start(): Promise<TurnpikeHandle> {
    // Every listener on the default port, the harness's loopback one too: the recipe as shipped
    // names the default ports.
    relay = await startRelayIn(net, ["--kernel-path", "off"], { loopback: LISTEN_PORT });
    return relay;
  }

  /**
   * An allocation of `family` relaying one ChannelData to the peer and its echo back; returns
   * the two flows' ports as /proc/net/nf_conntrack writes them.
   */
  async function relayedExchange(family: 4 | 6): Promise<{ client: string; peer: string }> {
    const name = `c${++allocations}`;
    const { relayed, local } = await allocateIn(net, name, family);
    const peer = { address: net.t.addresses[family].peer, port: net.peerPorts[`peer${family}`]! };
    const bound = await net.client.call<{ code: number }>("channelBind", {
      name,
      channel: 0x4000,
      ...peer,
    });
    expect(bound.code).toBe(0);
    await net.client.call("channelData", { name, clear: true });
    await net.client.call("sendChannelData", { name, channel: 0x4000, size: 40 });
    for (let i = 0; i < 100; i++) {
      const back = await net.client.call<unknown[]>("channelData", { name });
      if (back.length > 0) break;
      await sleep(20);
    }
    expect(await net.client.call<unknown[]>("channelData", { name })).toHaveLength(1);
    return {
      client: `sport=${local.port} dport=${LISTEN_PORT} `,
      peer: `sport=${relayed.port} dport=${peer.port} `,
    };
  }

  beforeAll(async () => {
    net = await makeKernelNet(tag);
  }, 60_000);

  afterEach(async () => {
    await relay?.stop("SIGKILL");
    relay = undefined;
  });

  afterAll(async () => {
    for (const a of [net?.client, net?.peer, net?.observer]) await a?.stop();
    deleteNamespaces(tag);
    expect(leftoverNamespaces(tag)).toEqual([]);
  });

  it("says nothing where nothing in the relay's namespace asks for connection state", async () => {
    const r = await start();
    await sleep(200);
    expect(r.stderr).not.toMatch(WARNING);
    expect(r.stderr).toMatch(/relay started|ready/i);
  });

  it("warns at start under a stateful firewall rule, whose table then holds the relay's client and peer flows", async () => {
    trackEverything();
    const r = await start();
    const line = r.stderr.split("\n").find((l) => WARNING.test(l));
    expect(line).toBeDefined();
    expect(line).toMatch(/trackedPorts=3478,\d+ /);
    expect(line).toMatch(/conntrackMax=\d+ /);
    expect(line).toContain("file=deploy/nftables/turnpike-notrack.nft");
    const exchange = await relayedExchange(4);
    const table = flows();
    expect(table).toContain(exchange.client);
    expect(table).toContain(exchange.peer);
    await r.stop("SIGKILL");
    // The same from the table's size, as the systemd unit's user sees it.
    expect(await startLinesAsNobody()).toMatch(/WARN connection tracking .*trackedPorts=3478,\d+ /);
  });

  it("with the shipped recipe loaded: no warning, and neither an allocation's flows nor a TCP connection to the listener is tracked", async () => {
    trackEverything();
    // Twice, as a reload would: the table replaces itself, its four rules are not doubled.
    for (let n = 0; n < 2; n++) nft("-f", RECIPE);
    const rules = nft("list", "table", "inet", "turnpike_notrack").match(/ notrack$/gm);
    expect(rules).toHaveLength(4);
    // Tracking is on for what the recipe does not name (a port the relay does not use).
    const other = datagramFromClient(LISTEN_PORT + 1);
    await sleep(50);
    expect(flows()).toContain(`sport=${other} dport=${LISTEN_PORT + 1} `);
    const r = await start();
    await sleep(200);
    expect(r.stderr).not.toMatch(WARNING);
    for (const family of [4, 6] as const) {
      const exchange = await relayedExchange(family);
      const table = flows();
      expect(table).not.toContain(exchange.client);
      expect(table).not.toContain(exchange.peer);
    }
    // TURN over TCP (--listen takes TCP too): a connection from the client's namespace.
    const a = net.t.addresses[4];
    const sport = inNs(
      net.t.client,
      "python3",
      "-c",
      `import socket; s = socket.create_connection(("${a.listener}", ${LISTEN_PORT})); print(s.getsockname()[1]); s.close()`,
    ).trim();
    expect(Number(sport)).toBeGreaterThan(0);
    expect(flows()).not.toContain(`sport=${sport} dport=${LISTEN_PORT} `);
    await r.stop("SIGKILL");
    expect(await startLinesAsNobody()).not.toMatch(WARNING);
  });
});
