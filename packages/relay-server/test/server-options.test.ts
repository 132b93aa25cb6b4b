// The mapping from a resolved RelayConfig to relay-core's TurnServer and peer-policy options
// (engine/server-options.ts), without sockets: the configuration comes from the real parser,
// the worker's shared limits are real ones.
import { longTermKeyMd5, PeerAddressPolicy, SeededRandom } from "@turnpike/relay-core";
import { CryptoRandom } from "@turnpike/runtime-kit";
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import type { RelayConfig } from "../src/config/types.js";
import { mintCredentials } from "../src/credentials.js";
import {
  peerPolicyOptions,
  processLimits,
  turnServerOptions,
} from "../src/engine/server-options.js";
import type { WorkerContext } from "../src/shared/context.js";
import type { SharedLimits } from "../src/shared/shared-limits.js";
import { createSharedState, openSharedState } from "../src/shared/shared-state.js";

const TOKEN = "server-options-token";

function config(...args: string[]): RelayConfig {
  const parsed = parseRelayArgs(["--token", TOKEN, ...args], {}, { networkInterfaces: () => ({}) });
  if (parsed.command !== "relay") throw new Error(`not a relay config: ${parsed.command}`);
  return parsed;
}

const policy = new PeerAddressPolicy();

/** What one engine is given: the process's limits with one worker's tables. */
function ownLimits(c: RelayConfig): SharedLimits {
  const init = createSharedState({ workers: 1, ...processLimits(c), dynamicPorts: 100 });
  return openSharedState(init, 0).limits;
}

/** The setting of one engine (no worker) for `c`. */
function single(c: RelayConfig, unixTimeOffsetMs = 0) {
  return { limits: ownLimits(c), peerPolicy: policy, unixTimeOffsetMs };
}

function worker(index: number, count: number, maxAllocationsPerUser = 100): WorkerContext {
  const init = createSharedState({
    workers: count,
    maxAllocations: 1000,
    maxAllocationsPerUser,
    maxConnections: 100,
    maxConnectionsPerIp: 10,
    unauthenticatedRate: 1,
    dynamicPorts: 300,
  });
  return {
    index,
    count,
    shared: openSharedState(init, index),
    secret: new Uint8Array(32).fill(7),
    route: () => {},
    onRoute: () => {},
    portSlice: { minPort: 50000 + index * 100, maxPort: 50099 + index * 100 },
  };
}

describe("turnServerOptions: one engine", () => {
  const c = config(
    "--listen",
    "192.0.2.1:3478",
    "--relay-ip",
    "2001:db8::1",
    "--public-ip4",
    "203.0.113.7",
    "--min-port",
    "40000",
    "--max-port",
    "40999",
    "--pinned-ports",
    "30000-30099",
    "--revoke",
    "mallory",
    "--realm",
    "example.org",
    "--max-permissions",
    "7",
    "--max-channels",
    "9",
    "--max-allocations",
    "11",
    "--max-allocations-per-user",
    "3",
    "--max-unauthenticated-rate",
    "5",
    "--legacy-channel-numbers",
    "--software",
    "relay/1",
    "--alternate-server",
    "198.51.100.2:3478",
    "--max-bps",
    "125000",
    "--max-bps-per-user",
    "500000",
  );
  const o = turnServerOptions(c, single(c, 1234));

  it("carries the relay's addresses, ports, limits and identity over as they were configured", () => {
    expect(o).toMatchObject({
      realm: "example.org",
      relayAddresses: {
        ip4: { bind: "192.0.2.1", advertised: "203.0.113.7" },
        ip6: { bind: "2001:db8::1", advertised: undefined },
      },
      minPort: 40000,
      maxPort: 40999,
      pinnedPorts: { min: 30000, max: 30099 },
      software: "relay/1",
      maxPermissionsPerAllocation: 7,
      maxChannelsPerAllocation: 9,
      legacyChannelNumbers: true,
      unixTimeOffsetMs: 1234,
      alternateServer: { family: 4, address: "198.51.100.2", port: 3478 },
      maxBytesPerSecond: 125000,
      maxBytesPerSecondPerUser: 500000,
    });
    expect(o.peerPolicy).toBe(policy);
    expect([...(o.revokedUsers ?? [])]).toEqual(["mallory"]);
  });

  it("shares no secret and encodes no worker in its ids", () => {
    expect(o.secret).toBeUndefined();
    expect(o.connectionIds).toBeUndefined();
  });

  it("counts quotas and unauthenticated answers in the process's limits, which a reload changes", () => {
    const limits = ownLimits(c);
    const own = turnServerOptions(c, { limits, peerPolicy: policy, unixTimeOffsetMs: 0 });
    // --max-allocations-per-user 3, --max-unauthenticated-rate 5 (burst 10).
    expect([0, 1, 2, 3].map(() => own.allocationQuota?.acquire("carol"))).toEqual([0, 0, 0, 486]);
    const answers = () =>
      Array.from({ length: 12 }, () => own.unauthenticatedLimiter?.allow("192.0.2.9", 10)).filter(
        Boolean,
      ).length;
    expect(answers()).toBe(10);
    expect(
      limits.setLimits(
        { ...processLimits(c), maxAllocationsPerUser: 4, unauthenticatedRate: 0 },
        2,
      ),
    ).toBe(true);
    expect(own.allocationQuota?.acquire("carol")).toBe(0);
    expect(answers()).toBe(12);
  });

  it("draws from the system's randomness unless a seed is configured", () => {
    expect(o.random).toBeInstanceOf(CryptoRandom);
  });

  it("verifies TURN REST usernames signed with the token, and no static user", () => {
    const now = 1_800_000_000;
    const rest = mintCredentials(TOKEN, { user: "alice", ttl: 600, uris: [], nowSeconds: now });
    const found = o.credentials.lookup(rest.username, "example.org", now);
    expect(found.ok && Buffer.from(found.key)).toEqual(
      Buffer.from(longTermKeyMd5(rest.username, "example.org", rest.password)),
    );
    expect(o.credentials.lookup("bob", "example.org", now)).toMatchObject({ ok: false });
  });
});

describe("turnServerOptions: what varies", () => {
  it("sets no bandwidth limit by default, nor with --max-bps 0 (coturn's unlimited)", () => {
    for (const args of [[], ["--max-bps", "0", "--max-bps-per-user", "0"]]) {
      const c = config(...args);
      const o = turnServerOptions(c, single(c));
      expect(o.maxBytesPerSecond).toBeUndefined();
      expect(o.maxBytesPerSecondPerUser).toBeUndefined();
    }
  });

  it("verifies static users (--user) next to REST usernames", () => {
    const withBob = config("--user", "bob:secret");
    const o = turnServerOptions(withBob, single(withBob));
    const now = 1_800_000_000;
    const bob = o.credentials.lookup("bob", "turnpike", now);
    expect(bob.ok && Buffer.from(bob.key)).toEqual(
      Buffer.from(longTermKeyMd5("bob", "turnpike", "secret")),
    );
    const rest = mintCredentials(TOKEN, { user: "alice", ttl: 600, uris: [], nowSeconds: now });
    expect(o.credentials.lookup(rest.username, "turnpike", now)).toMatchObject({ ok: true });
  });

  it("verifies REST usernames signed with any of several secrets, old-scheme pins only in their window", () => {
    const now = 1_800_000_000;
    const rotated = { ...config(), tokens: ["new-secret", TOKEN] };
    const o = turnServerOptions(rotated, single(rotated));
    for (const token of ["new-secret", TOKEN]) {
      const rest = mintCredentials(token, { user: "alice", ttl: 600, uris: [], nowSeconds: now });
      expect(o.credentials.lookup(rest.username, "turnpike", now)).toMatchObject({ ok: true });
    }
    const other = mintCredentials("gone", { user: "alice", ttl: 600, uris: [], nowSeconds: now });
    const checked = o.credentials.lookup(other.username, "turnpike", now, "md5", () => false);
    expect(checked).toMatchObject({ ok: false });
    // A pin signed the old way (with the token itself, as a plain REST username).
    const oldPin = mintCredentials(TOKEN, {
      user: "acme;port=40007",
      ttl: 600,
      uris: [],
      nowSeconds: now,
    });
    const key = longTermKeyMd5(oldPin.username, "turnpike", oldPin.password);
    const verify = (k: Uint8Array) => Buffer.from(k).equals(Buffer.from(key));
    const lookup = (c: RelayConfig) =>
      turnServerOptions(c, single(c)).credentials.lookup(
        oldPin.username,
        "turnpike",
        now,
        "md5",
        verify,
      );
    expect(lookup(rotated)).toMatchObject({ ok: false, reason: "legacy-pinned" });
    expect(lookup({ ...rotated, legacyPinnedUntil: now + 60 })).toMatchObject({
      ok: true,
      legacyPinned: true,
    });
  });

  it("revokes the union of --revoke and the entries of --revoke-file, each once", () => {
    const c = { ...config("--revoke", "a"), revokeFileEntries: ["b", "static:c", "a"] };
    const o = turnServerOptions(c, single(c));
    expect([...(o.revokedUsers ?? [])]).toEqual(["a", "b", "static:c"]);
  });

  it("seeds the random source with --rng-seed plus the worker's index", () => {
    const c = config("--rng-seed", "41");
    const one = turnServerOptions(c, single(c));
    const w = worker(1, 2);
    const second = turnServerOptions(c, {
      worker: w,
      limits: w.shared.limits,
      peerPolicy: policy,
      unixTimeOffsetMs: 0,
    });
    const draws = (r: { nextUint32(): number }) => [r.nextUint32(), r.nextUint32()];
    expect(draws(one.random)).toEqual(draws(new SeededRandom(41)));
    expect(draws(second.random)).toEqual(draws(new SeededRandom(42)));
  });

  it("gives a worker its slice of the ports, the shared secret, quotas and limiter, and ids that name it", () => {
    const w = worker(1, 3, 1);
    const o = turnServerOptions(config("--min-port", "50000", "--max-port", "50299"), {
      worker: w,
      limits: w.shared.limits,
      peerPolicy: policy,
      unixTimeOffsetMs: 0,
    });
    expect(o.minPort).toBe(50100);
    expect(o.maxPort).toBe(50199);
    expect(o.secret).toBe(w.secret);
    expect(o.connectionIds).toEqual({ index: 1, count: 3 });
    // The per-user quota is the shared one: one allocation for "carol", then 486.
    expect(o.allocationQuota?.acquire("carol")).toBe(0);
    expect(o.allocationQuota?.acquire("carol")).toBe(486);
    o.allocationQuota?.release("carol");
    expect(w.shared.limits.acquireAllocation("carol")).toBe(0);
    // The unauthenticated rate (1/s, burst 2) is the shared buckets' too.
    const allowed = [0, 1, 2].map(() => o.unauthenticatedLimiter?.allow("192.0.2.9", 10));
    expect(allowed).toEqual([true, true, false]);
  });
});

describe("peerPolicyOptions", () => {
  it("names the relay's own addresses and listening ports, health and metrics included, as self", () => {
    const c = config(
      "--listen",
      "127.0.0.1:3478",
      "--allow-peer",
      "10.0.0.0/8",
      "--deny-peer",
      "10.1.0.0/16",
      "--allow-loopback-peers",
    );
    const withTls = { ...c, tlsListen: [{ ip: "127.0.0.1", port: 5349, family: 4 as const }] };
    expect(peerPolicyOptions(withTls, [8080, 9464])).toEqual({
      allow: ["10.0.0.0/8"],
      deny: ["10.1.0.0/16"],
      allowLoopback: true,
      allowSelf: false,
      self: {
        addresses: c.selfAddresses,
        ports: { udp: [3478], tcp: [3478, 5349, 8080, 9464] },
        relayPorts: { min: 49152, max: 65535 },
      },
    });
    expect(c.selfAddresses).toContain("127.0.0.1");
  });
});

describe("turnServerOptions: the kernel data path", () => {
  it("asks relay-core for offload outputs only when the kernel path runs", () => {
    expect(turnServerOptions(config(), single(config())).channelOffload).toBe(false);
    const offloading = { ...single(config()), channelOffload: true };
    expect(turnServerOptions(config(), offloading).channelOffload).toBe(true);
  });

  it("passes the lifetimes a test shortened (--test-lifetimes) as relay-core's", () => {
    const c = config("--test-lifetimes", "permission=3,defaultAllocation=5");
    expect(turnServerOptions(c, single(c)).lifetimes).toEqual({
      permission: 3,
      defaultAllocation: 5,
    });
    expect(() => config("--test-lifetimes", "permission=0")).toThrow(/--test-lifetimes must be/);
    expect(() => config("--test-lifetimes", "forever=3")).toThrow(/--test-lifetimes must be/);
  });
});
