// The real-client interop checks of interop-turnpike.test.ts (coturn's turnutils, Chromium)
// and pion's TURN client, against turnpike-relay with its kernel data path on (--kernel-path
// tc). Attaching is forbidden on the host's loopback, so everything runs inside a network
// namespace this suite makes (loopback up, the forwarding sysctl set): the relay, every client
// and peer process, the browser (test-support's spawnInNamespace). After each client's checks,
// the relay's own counters say the clients' bound ChannelData went through the kernel.
import { restCredentials } from "@turnpike/test-support/credentials";
import {
  defineChromiumChecks,
  defineTurnutilsChecks,
  useTurnpike,
} from "@turnpike/test-support/interop-checks";
import {
  addNamespace,
  deleteNamespaces,
  enableLoopbackForwarding,
  inNs,
  leftoverNamespaces,
  netnsUnavailable,
  nsHttpGet,
  relayedPacketsIn,
  uniqueTag,
} from "@turnpike/test-support/netns";
import { pionUnavailable, runPionClient } from "@turnpike/test-support/pion";
import { spawnInNamespace } from "@turnpike/test-support/process";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { type PeerHandle, startPeer } from "@turnpike/test-support/turnutils";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "interop-kernel-path-token";
const METRICS_PORT = 9464;
const TURNUTILS = ["turnutils_uclient", "turnutils_peer", "turnutils_stunclient"];
const unavailable = netnsUnavailable([], "relay-server kernel-path interop");

/**
 * A namespace of its own with turnpike-relay --kernel-path tc in it, and every process the
 * suite starts placed there; `target()` as interop-checks wants it, `relayed()` the relay's
 * counters of UDP clients by path.
 */
function useKernelPathTurnpike(label: string) {
  const tag = uniqueTag(`tpi${label}`);
  beforeAll(() => {
    addNamespace(tag);
    enableLoopbackForwarding(tag);
    // A host has more than a loopback: Chromium ends ICE gathering early only with another
    // network (with the loopback alone it waits out its timeouts). A veth pair with both ends
    // in here (this kernel has no dummy interfaces).
    inNs(tag, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1");
    inNs(tag, "ip", "addr", "add", "10.255.0.1/24", "dev", "eth0");
    inNs(tag, "ip", "link", "set", "eth0", "up");
    inNs(tag, "ip", "link", "set", "eth1", "up");
    spawnInNamespace(tag);
  });
  const started = useTurnpike(TOKEN, {
    name: "turnpike (kernel path)",
    extraArgs: ["--kernel-path", "tc", "--prometheus-listen", `127.0.0.1:${METRICS_PORT}`],
  });
  beforeAll(() => {
    expect(started.relay()?.stderr).toMatch(
      / INFO ready .*\bkernelPath=tc\b.*\bkernelPathInterfaces=lo\b/,
    );
  });
  afterAll(() => {
    // After useTurnpike's afterAll stopped the relay (vitest runs afterAll hooks in reverse).
    spawnInNamespace(undefined);
    deleteNamespaces(tag);
    expect(leftoverNamespaces(tag)).toEqual([]);
  });
  return {
    target: started.target,
    relayed: () => relayedPacketsIn(nsHttpGet(tag, METRICS_PORT, "/metrics").body),
  };
}

describe.skipIf(unavailable || skipUnlessTools(...TURNUTILS))(
  "turnpike with its kernel path: turnutils clients",
  () => {
    beforeAll(() => requireTools(...TURNUTILS));
    const relay = useKernelPathTurnpike("u");
    defineTurnutilsChecks(relay.target, { tcpRelay: true });

    it("carried uclient's UDP channel traffic in the kernel", () => {
      const r = relay.relayed();
      console.info(`[turnpike (kernel path)] uclient: ${JSON.stringify(r)}`);
      // 24 allocations x 200 messages each way on UDP channels; the Send indications and TCP
      // variants stay in userspace (no channel; framing).
      expect(r.kernel.toPeer).toBeGreaterThanOrEqual(24 * 200);
      expect(r.kernel.toClient).toBeGreaterThanOrEqual(24 * 200);
    });
  },
);

describe.skipIf(unavailable || skipUnlessTools("chromium"))(
  "turnpike with its kernel path: Chromium",
  () => {
    beforeAll(() => requireTools("chromium"));
    const relay = useKernelPathTurnpike("c");
    defineChromiumChecks(relay.target);

    it("carried the relay-only data channel over TURN/UDP in the kernel", () => {
      const r = relay.relayed();
      console.info(`[turnpike (kernel path)] Chromium: ${JSON.stringify(r)}`);
      // Both browsers' relayed addresses are on this relay: a channel of one leads to the
      // other's allocation, relayed in one pass (kernel-path README, "Two allocations").
      expect(r.kernel.toPeer).toBeGreaterThan(0);
    });
  },
);

describe.skipIf(
  unavailable || pionUnavailable() !== undefined || skipUnlessTools("go", "turnutils_peer"),
)("turnpike with its kernel path: pion's TURN client", () => {
  beforeAll(() => {
    const missing = pionUnavailable();
    if (missing !== undefined) throw new Error(missing);
    requireTools("go", "turnutils_peer");
  });
  const relay = useKernelPathTurnpike("p");
  let peer: PeerHandle | undefined;
  beforeAll(async () => {
    peer = await startPeer();
  });
  afterAll(async () => {
    await peer?.stop();
  });

  it("echoes every message of pion's client through its channel, in the kernel", async () => {
    const before = relay.relayed();
    const creds = restCredentials(TOKEN, "pion");
    const r = await runPionClient({
      server: `127.0.0.1:${relay.target().port}`,
      username: creds.username,
      password: creds.credential,
      peer: `127.0.0.1:${peer!.port}`,
      local: "127.0.0.1",
      count: 300,
      intervalMs: 5,
    });
    expect(r.error, r.log).toBeUndefined();
    expect(r.exitCode, r.log).toBe(0);
    expect(r.received).toBe(300);
    const after = relay.relayed();
    console.info(
      `[turnpike (kernel path)] pion: ${r.received}/${r.sent} echoed, rtt p50 ${r.rttP50Ms.toFixed(2)} ms; ${JSON.stringify({ before, after })}`,
    );
    // pion sends its first writes as Send indications while the ChannelBind is under way,
    // then ChannelData: those went through the kernel.
    expect(after.kernel.toPeer - before.kernel.toPeer).toBeGreaterThan(200);
    expect(after.kernel.toClient - before.kernel.toClient).toBeGreaterThan(200);
  });
});
