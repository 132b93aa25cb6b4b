// The process-wide limits workers share (src/shared/shared-limits.ts), checked against a
// plain model over random sequences of acquisitions, releases and worker deaths.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createSharedLimits, hash64, SharedLimits } from "../src/shared/shared-limits.js";

const limitsFor = (workers: number, perUser = 6, total = 20, tableSlots?: number) => {
  const init = createSharedLimits({
    tableSlots,
    workers,
    maxAllocations: total,
    maxAllocationsPerUser: perUser,
    maxConnections: total,
    maxConnectionsPerIp: perUser,
    unauthenticatedRate: 10,
  });
  return Array.from({ length: workers }, (_, w) => new SharedLimits(init, w));
};

describe("limits shared by workers", () => {
  it("refuses the seventh allocation of a user with 486 whichever worker asks", () => {
    const [a, b] = limitsFor(2);
    const got = [a, b, a, b, a, b].map((w) => w!.acquireAllocation("alice"));
    expect(got).toEqual([0, 0, 0, 0, 0, 0]);
    expect(a!.acquireAllocation("alice")).toBe(486);
    expect(b!.acquireAllocation("alice")).toBe(486);
    expect(b!.acquireAllocation("bob")).toBe(0);
    b!.releaseAllocation("alice");
    expect(a!.acquireAllocation("alice")).toBe(0);
  });

  it("refuses beyond the total with 508 and per IP for connections", () => {
    const [a, b] = limitsFor(2, 100, 3);
    expect([
      a!.acquireAllocation("u1"),
      b!.acquireAllocation("u2"),
      a!.acquireAllocation("u3"),
    ]).toEqual([0, 0, 0]);
    expect(b!.acquireAllocation("u4")).toBe(508);
    const [c, d] = limitsFor(2, 2, 3);
    expect([c!.admitConnection("192.0.2.1"), d!.admitConnection("192.0.2.1")]).toEqual([
      "ok",
      "ok",
    ]);
    expect(c!.admitConnection("192.0.2.1")).toBe("per-ip");
    // Authenticated connections stop counting against their source, not against the total.
    d!.recountSource("192.0.2.1", -1);
    expect(c!.admitConnection("192.0.2.1")).toBe("ok");
    expect(d!.admitConnection("192.0.2.2")).toBe("total");
    d!.releaseConnection("192.0.2.1", false);
    expect(d!.admitConnection("192.0.2.2")).toBe("ok");
    expect(c!.totals().connections).toBe(3);
  });

  it("changes the limits for every worker at once, never back to an older generation's", () => {
    const [a, b] = limitsFor(2, 2, 20);
    expect([a, b].map((w) => w!.acquireAllocation("alice"))).toEqual([0, 0]);
    expect(b!.acquireAllocation("alice")).toBe(486);
    const raised = {
      maxAllocations: 20,
      maxAllocationsPerUser: 3,
      maxConnections: 20,
      maxConnectionsPerIp: 2,
      unauthenticatedRate: 10,
    };
    expect(a!.setLimits(raised, 3)).toBe(true);
    expect(b!.acquireAllocation("alice")).toBe(0);
    // Generation 2 arrives late (a worker that was slow to apply it): refused.
    expect(b!.setLimits({ ...raised, maxAllocationsPerUser: 1 }, 2)).toBe(false);
    expect(b!.setLimits({ ...raised, maxAllocationsPerUser: 1 }, 3)).toBe(false);
    expect(b!.limits()).toEqual({ ...raised, generation: 3 });
    // Lowered: what is held stays, new ones are refused until enough have ended.
    expect(a!.setLimits({ ...raised, maxAllocationsPerUser: 1 }, 4)).toBe(true);
    expect(a!.totals().allocations).toBe(3);
    expect(a!.acquireAllocation("alice")).toBe(486);
  });

  it("gives back exactly what a dead worker held", () => {
    const [a, b] = limitsFor(2);
    for (let i = 0; i < 4; i++) a!.acquireAllocation("alice");
    for (let i = 0; i < 2; i++) b!.acquireAllocation("alice");
    expect(a!.acquireAllocation("alice")).toBe(486);
    a!.clearWorker(1);
    expect(a!.totals().allocations).toBe(4);
    expect(a!.acquireAllocation("alice")).toBe(0);
    expect(b!.acquireAllocation("alice")).toBe(0);
    expect(b!.acquireAllocation("alice")).toBe(486);
  });

  it("keeps counting a user whose entry sits behind a removed one in the same probe run", () => {
    // Names whose hashes share a home slot in a 16-slot table: the second one is stored in
    // the next slot, and removing the first must move it back or it would be lost.
    const home = (name: string) => (hash64(name)[1] >>> 0) & 15;
    const names = Array.from({ length: 200 }, (_, i) => `user-${i}`);
    const first = names[0]!;
    const second = names.find((n) => n !== first && home(n) === home(first))!;
    const [a] = limitsFor(1, 3, 100, 16);
    expect(a!.acquireAllocation(first)).toBe(0);
    expect(a!.acquireAllocation(second)).toBe(0);
    a!.releaseAllocation(first);
    expect(a!.acquireAllocation(second)).toBe(0);
    expect(a!.acquireAllocation(second)).toBe(0);
    expect(a!.acquireAllocation(second)).toBe(486);
  });

  it("agrees with a model over random acquisitions, releases and worker deaths (tables small enough to collide)", () => {
    const users = ["alice", "bob", "carol", "dave", "", "ü", "x".repeat(300)];
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("acquire" as const),
        w: fc.nat(2),
        user: fc.constantFrom(...users),
      }),
      fc.record({
        kind: fc.constant("release" as const),
        w: fc.nat(2),
        user: fc.constantFrom(...users),
      }),
      fc.record({ kind: fc.constant("die" as const), w: fc.nat(2) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const perUser = 3;
        const total = 12;
        // 16 slots for 7 users: long probe runs, and removals that must shift entries back.
        const views = limitsFor(3, perUser, total, 16);
        // model: held[w][user] = count
        const held = [
          new Map<string, number>(),
          new Map<string, number>(),
          new Map<string, number>(),
        ];
        const count = (user: string) => held.reduce((n, m) => n + (m.get(user) ?? 0), 0);
        const all = () => held.reduce((n, m) => n + [...m.values()].reduce((x, y) => x + y, 0), 0);
        for (const o of ops) {
          if (o.kind === "acquire") {
            const expected = all() >= total ? 508 : count(o.user) >= perUser ? 486 : 0;
            expect(views[o.w]!.acquireAllocation(o.user)).toBe(expected);
            if (expected === 0) held[o.w]!.set(o.user, (held[o.w]!.get(o.user) ?? 0) + 1);
          } else if (o.kind === "release") {
            const n = held[o.w]!.get(o.user) ?? 0;
            views[o.w]!.releaseAllocation(o.user);
            if (n > 1) held[o.w]!.set(o.user, n - 1);
            else held[o.w]!.delete(o.user);
          } else {
            views[0]!.clearWorker(o.w);
            held[o.w]!.clear();
          }
          expect(views[0]!.totals().allocations).toBe(all());
        }
      }),
      { numRuns: 300 },
    );
  });

  it("caps unauthenticated answers per source across workers", () => {
    const [a, b] = limitsFor(2);
    let allowed = 0;
    for (let i = 0; i < 40; i++)
      if ((i % 2 ? a : b)!.allowUnauthenticated("198.51.100.7", 1000)) allowed++;
    expect(allowed).toBe(20); // the burst: twice the rate of 10/s
    expect(a!.allowUnauthenticated("198.51.100.7", 1100)).toBe(true); // 0.1 s refills one
    expect(b!.allowUnauthenticated("198.51.100.7", 1100)).toBe(false);
    expect(a!.allowUnauthenticated("198.51.100.8", 1100)).toBe(true);
  });
});
