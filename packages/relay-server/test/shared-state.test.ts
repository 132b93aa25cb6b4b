// What workers share beside the limits (src/shared/shared-state.ts): pinned-port owners, the
// RESERVATION-TOKEN exchange (its quota count moving with it) and per-user bandwidth buckets
// leased to workers, each seen from two workers' views of one shared memory, and what the
// supervisor clears when a worker dies.
import { type AllocationId, bandwidthLimit } from "@turnpike/relay-core";
import { describe, expect, it } from "vitest";
import {
  createSharedState,
  openSharedState,
  recoverWorker,
  type SharedState,
} from "../src/shared/shared-state.js";
import { leaseBytes } from "../src/shared/user-bandwidth.js";

const PINNED = { min: 40000, max: 40009 };
const RATE = 64 << 10;

function state(workers = 2, maxAllocationsPerUser = 10) {
  const init = createSharedState({
    workers,
    maxAllocations: 100,
    maxAllocationsPerUser,
    maxConnections: 100,
    maxConnectionsPerIp: 10,
    unauthenticatedRate: 0,
    pinnedPorts: PINNED,
    dynamicPorts: 200,
    perUserBandwidth: bandwidthLimit(RATE),
  });
  return {
    views: Array.from({ length: workers }, (_, w) => openSharedState(init, w)),
    supervisor: openSharedState(init, workers),
  };
}

const id = (n: number) => n as AllocationId;
const token = (n: number) => Uint8Array.of(n, 1, 2, 3, 4, 5, 6, 7);

/** Alice's reservation `n` of IPv4 `port` until `expiresAt`, made by the worker of `view`. */
const publish = (view: SharedState, n: number, port: number, expiresAt: number) =>
  view.reservations.publish({
    token: token(n),
    family: 4,
    port,
    expiresAt,
    principal: "rest:alice",
  });

describe("pinned-port owners shared by workers", () => {
  it("gives a port to one principal on both families, names the same principal's holder on another worker, and clears a dead worker's", () => {
    const { views, supervisor } = state();
    const [a, b] = views.map((v) => v.pinnedPorts!);
    expect(a!.claim(40001, 4, "rest:acme", id(1))).toBe("claimed");
    expect(b!.claim(40001, 6, "rest:globex", id(1))).toBe("held-by-other");
    expect(b!.claim(40001, 4, "static:acme", id(1))).toBe("held-by-other");
    expect(b!.claim(40001, 4, "rest:acme", id(7))).toEqual({ engine: 0, allocation: 1 });
    // The stale holder's release comes late: the claim is worker 1's now, and stays.
    a!.release(40001, 4, id(1));
    expect(a!.claim(40001, 4, "rest:globex", id(2))).toBe("held-by-other");
    b!.release(40001, 4, id(7));
    expect(a!.claim(40001, 4, "rest:globex", id(2))).toBe("claimed");
    recoverWorker(supervisor, 0);
    expect(b!.claim(40001, 4, "rest:acme", id(8))).toBe("claimed");
  });
});

describe("RESERVATION-TOKENs shared by workers", () => {
  it("lets another worker take a live reservation once, moving the maker's count with it", () => {
    const { views } = state(2, 2);
    const [a, b] = views;
    const now = performance.now();
    // Worker 0: an allocation and its reservation, both counted against alice.
    expect(a!.limits.acquireAllocation("rest:alice")).toBe(0);
    expect(a!.limits.acquireAllocation("rest:alice")).toBe(0);
    expect(publish(a!, 1, 50001, now + 30_000)).toBe(true);
    expect(a!.reservations.peek(token(1), "rest:alice", now)).toBeUndefined(); // its own
    expect(b!.reservations.peek(token(1), "rest:alice", now)).toEqual({
      engine: 0,
      family: 4,
      port: 50001,
      inherits: true,
    });
    expect(b!.reservations.take(token(1), "rest:alice", now)?.port).toBe(50001);
    expect(b!.reservations.take(token(1), "rest:alice", now)).toBeUndefined();
    // The maker's expiry finds it gone: its count went to worker 1's allocation.
    expect(a!.reservations.withdraw(token(1))).toBe(false);
    b!.limits.releaseAllocation("rest:alice");
    expect(a!.limits.acquireAllocation("rest:alice")).toBe(0);
    expect(a!.limits.acquireAllocation("rest:alice")).toBe(486);
  });

  it("gives the maker's count back when another principal takes it, and ignores a lapsed one", () => {
    const { views, supervisor } = state(2, 1);
    const [a, b] = views;
    const now = performance.now();
    expect(a!.limits.acquireAllocation("rest:alice")).toBe(0);
    publish(a!, 2, 50003, now + 30_000);
    publish(a!, 3, 50005, now + 10);
    expect(b!.reservations.take(token(3), "rest:bob", now + 10)).toBeUndefined();
    expect(b!.reservations.take(token(2), "rest:bob", now)).toEqual({
      engine: 0,
      family: 4,
      port: 50003,
      inherits: false,
    });
    expect(b!.limits.acquireAllocation("rest:alice")).toBe(0);
    // A dead maker's reservations go with it.
    publish(a!, 4, 50007, now + 30_000);
    recoverWorker(supervisor, 0);
    expect(b!.reservations.peek(token(4), "rest:alice", now)).toBeUndefined();
  });
});

describe("per-user bandwidth shared by workers", () => {
  it("names a user's bucket with one id on every worker, and another user's with another", () => {
    const { views } = state();
    const [a, b] = views.map((v) => v.userBandwidth!);
    const now = performance.now();
    const alice = a!.acquire("rest:alice", now);
    expect(b!.acquire("rest:alice", now).id).toBe(alice.id);
    expect(a!.acquire("rest:alice", now)).toBe(alice);
    expect(b!.acquire("rest:bob", now).id).not.toBe(alice.id);
    expect(alice.id).toBeGreaterThan(0);
  });

  it("holds one burst for a user whose datagrams go through two workers, leasing it in chunks", () => {
    const { views } = state();
    const [a, b] = views.map((v) => v.userBandwidth!.acquire("rest:alice", 1000).bucket);
    // At one instant: the burst (64 KiB) once, whichever worker relays, 1,000 bytes at a time.
    let passed = 0;
    for (let i = 0; i < 200; i++) if ((i % 2 ? a : b)!.take(1000, 1000)) passed += 1000;
    expect(passed).toBeLessThanOrEqual(RATE);
    expect(passed).toBeGreaterThan(RATE - 2 * leaseBytes(bandwidthLimit(RATE), 2));
    // A second later the rate's worth again, no more.
    let later = 0;
    for (let i = 0; i < 200; i++) if ((i % 2 ? a : b)!.take(1000, 2000)) later += 1000;
    expect(passed + later).toBeLessThanOrEqual(2 * RATE);
  });

  it("returns a worker's unspent lease when its last allocation of the user ends, and forgets the user with the last one anywhere", () => {
    const { views, supervisor } = state();
    const [a, b] = views.map((v) => v.userBandwidth!);
    const first = a!.acquire("rest:alice", 1000);
    const onB = b!.acquire("rest:alice", 1000);
    expect(first.bucket.take(1000, 1000)).toBe(true); // leases a chunk
    a!.release("rest:alice");
    // Everything but the 1,000 bytes spent is available to worker 1 at the same instant.
    let passed = 0;
    while (onB.bucket.take(1000, 1000)) passed += 1000;
    expect(passed).toBe(Math.floor((RATE - 1000) / 1000) * 1000);
    b!.release("rest:alice");
    // A new bucket, full, under a new id.
    const again = a!.acquire("rest:alice", 1000);
    expect(again.id).not.toBe(first.id);
    // A dead worker's hold goes: worker 1's acquire makes a fresh bucket after the death.
    recoverWorker(supervisor, 0);
    expect(b!.acquire("rest:alice", 1000).id).not.toBe(again.id);
  });
});
