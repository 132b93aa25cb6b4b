// The process-wide limits workers share (src/shared/shared-limits.ts): checked against a plain
// model over random sequences of acquisitions, releases and worker deaths; their keyed hash
// against SipHash's reference vectors and against keys crafted to collide; the rate buckets
// against a flood of new sources; and the one lock against a worker thread that is terminated
// while it holds it.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { KeyedHash } from "../src/shared/keyed-hash.js";
import {
  createSharedState,
  openSharedState,
  recoverWorker,
  type SharedState,
  type SharedStateInit,
} from "../src/shared/shared-state.js";

const KEY = Uint8Array.from({ length: 16 }, (_, i) => i);

function stateFor(workers: number, perUser = 6, total = 20, tableSlots?: number) {
  const init = createSharedState({
    tableSlots,
    workers,
    maxAllocations: total,
    maxAllocationsPerUser: perUser,
    maxConnections: total,
    maxConnectionsPerIp: perUser,
    unauthenticatedRate: 10,
    dynamicPorts: 100,
    hashKey: KEY,
  });
  const views = Array.from({ length: workers }, (_, w) => openSharedState(init, w));
  return { init, views, supervisor: openSharedState(init, workers) };
}

const limitsFor = (workers: number, perUser = 6, total = 20, tableSlots?: number) =>
  stateFor(workers, perUser, total, tableSlots).views.map((v) => v.limits);

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

  it("counts a load balancer's connection in the total at once and against its client's source once named", () => {
    const [a, b] = limitsFor(2, 2, 4);
    // Three connections from one balancer before their PROXY headers: a per-source cap of 2
    // does not apply to the balancer, the total does.
    expect([a!.admitUnidentified(), b!.admitUnidentified(), a!.admitUnidentified()]).toEqual([
      "ok",
      "ok",
      "ok",
    ]);
    expect(a!.totals().connections).toBe(3);
    // Their headers name clients: two of 198.51.100.9 reach its cap, the third is refused.
    expect([a!.admitSource("198.51.100.9"), b!.admitSource("198.51.100.9")]).toEqual(["ok", "ok"]);
    expect(a!.admitSource("198.51.100.9")).toBe("per-ip");
    expect(a!.admitConnection("198.51.100.9")).toBe("per-ip");
    // The refused one closes (never counted against a source); the total has room again.
    a!.releaseConnection("", false);
    expect([b!.admitUnidentified(), a!.admitUnidentified()]).toEqual(["ok", "ok"]);
    expect(a!.admitUnidentified()).toBe("total");
    expect(b!.totals().connections).toBe(4);
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
    const { views, supervisor } = stateFor(2);
    const [a, b] = views.map((v) => v.limits);
    for (let i = 0; i < 4; i++) a!.acquireAllocation("alice");
    for (let i = 0; i < 2; i++) b!.acquireAllocation("alice");
    expect(a!.acquireAllocation("alice")).toBe(486);
    recoverWorker(supervisor, 1);
    expect(a!.totals().allocations).toBe(4);
    expect(a!.acquireAllocation("alice")).toBe(0);
    expect(b!.acquireAllocation("alice")).toBe(0);
    expect(b!.acquireAllocation("alice")).toBe(486);
  });

  it("keeps counting a user whose entry sits behind a removed one in the same probe run", () => {
    // Names whose hashes share a home slot in a 16-slot table: the second one is stored in
    // the next slot, and removing the first must move it back or it would be lost.
    const hash = new KeyedHash(KEY);
    const home = (name: string) => (hash.of(name)[1] >>> 0) & 15;
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
        const { views: state, supervisor } = stateFor(3, perUser, total, 16);
        const views = state.map((v) => v.limits);
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
            recoverWorker(supervisor, o.w);
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

/** The hash the tables used before they were keyed: anyone could compute slots with it. */
function unkeyedHash64(text: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x9e3779b9 ^ text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  a ^= a >>> 13;
  a = Math.imul(a, 0xc2b2ae35);
  a ^= a >>> 16;
  return [b | 0, a | 1];
}

describe("keyed hash and full tables", () => {
  it("is SipHash-2-4: the reference vectors (key 00..0f, message 00..n-1)", () => {
    const hash = new KeyedHash(KEY);
    const hex = (n: number) =>
      hash
        .bytes(Uint8Array.from({ length: n }, (_, i) => i))
        .map((w) => w.toString(16).padStart(8, "0"))
        .join("");
    // The vectors of the SipHash paper's reference code (and `openssl mac ... SIPHASH`).
    expect([0, 1, 7, 8, 15, 63].map(hex)).toEqual([
      "726fdb47dd0e0e31",
      "74f839c593dc67fd",
      "ab0200f58b01d137",
      "93f5f5799a932462",
      "a129ca6149be45e5",
      "958a324ceb064572",
    ]);
  });

  it("leaves no client a way to fill another source's probe run with crafted IPv6 /64 sources", () => {
    // 1,024 slots per connection table. The attacker holds many /64s and picks, with the hash
    // it could compute before, 130 whose home slot is the victim's: a run longer than the 128
    // probes a lookup makes, so the victim's next connection was refused as if the relay were
    // full. Keyed, those sources land anywhere.
    const [relay] = limitsFor(1, 100, 500);
    const victim = "20010db9000000ff::/64";
    const home = (s: string) => (unkeyedHash64(s)[1] >>> 0) & 1023;
    const crafted: string[] = [];
    for (let i = 0; crafted.length < 130 && i < 1 << 22; i++) {
      const source = `20010db8${i.toString(16).padStart(8, "0")}::/64`;
      if (home(source) === home(victim)) crafted.push(source);
    }
    expect(crafted.length).toBe(130);
    for (const source of crafted) expect(relay!.admitConnection(source)).toBe("ok");
    expect(relay!.admitConnection(victim)).toBe("ok");
  });

  it("refuses a flood of new sources when the rate table is full instead of evicting a limited source's bucket", () => {
    // 16 rate slots. The victim has spent its burst (20: twice the rate of 10/s); then 200 new
    // sources ask within the same instant. Evicting to make room handed the victim a fresh
    // burst (its slot taken, then its next request a "new" source): 20 more spoofed answers.
    const [a, b] = limitsFor(2, 6, 20, 16);
    const victim = "198.51.100.7";
    let allowed = 0;
    for (let i = 0; i < 25; i++) if (a!.allowUnauthenticated(victim, 1000)) allowed++;
    expect(allowed).toBe(20);
    const flood = Array.from({ length: 200 }, (_, i) => `203.0.113.${i}`);
    const admitted = flood.filter((s) => b!.allowUnauthenticated(s, 1000));
    // Room for 15 of them (the victim keeps its slot); the rest refused.
    expect(admitted.length).toBe(15);
    expect(a!.allowUnauthenticated(victim, 1000)).toBe(false);
    expect(b!.allowUnauthenticated(victim, 1050)).toBe(false);
    // Those that got a bucket keep it; a source refused now is served once buckets refill
    // (a full bucket's slot is as good as free).
    expect(b!.allowUnauthenticated(admitted[0]!, 1000)).toBe(true);
    expect(b!.allowUnauthenticated(flood.at(-1)!, 1000)).toBe(false);
    expect(b!.allowUnauthenticated(flood.at(-1)!, 3000)).toBe(true);
    // The victim's bucket refilled at its rate: 10 per second, no more.
    let later = 0;
    for (let i = 0; i < 25; i++) if (a!.allowUnauthenticated(victim, 2000)) later++;
    expect(later).toBe(10);
  });
});

/** The built module (the worker thread below loads it: it cannot run TypeScript). */
const BUILT = new URL("../dist/shared/shared-state.js", import.meta.url);

/**
 * A worker thread that opens the shared state as worker `worker` and runs `task` ("hold": take
 * the lock and never leave the critical section; "acquire": one allocation for "alice"),
 * posting "inside" or the result.
 */
function thread(init: SharedStateInit, worker: number, task: "hold" | "acquire"): Worker {
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    import(workerData.module).then(({ openSharedState }) => {
      const state = openSharedState(workerData.init, workerData.worker);
      if (workerData.task === "hold") {
        state.lock.locked(() => {
          parentPort.postMessage("inside");
          for (;;) {}
        });
      } else {
        parentPort.postMessage(state.limits.acquireAllocation("alice"));
      }
    });
  `;
  return new Worker(code, {
    eval: true,
    workerData: { module: BUILT.href, init, worker, task },
  });
}

const threads: Worker[] = [];
afterEach(async () => {
  await Promise.all(threads.splice(0).map((t) => t.terminate()));
});

function nextMessage(t: Worker, ms: number): Promise<unknown> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("no answer"), ms);
    t.once("message", (m) => {
      clearTimeout(timer);
      resolve(m);
    });
  });
}

describe("the shared lock", () => {
  it("is freed by the supervisor when a worker thread is terminated inside a critical section, and the others go on", async () => {
    if (!existsSync(fileURLToPath(BUILT))) throw new Error("build first: pnpm exec tsc -b");
    const { init, supervisor } = stateFor(3);
    const holder = thread(init, 0, "hold");
    threads.push(holder);
    expect(await nextMessage(holder, 10_000)).toBe("inside");
    await holder.terminate();
    // Dead, and still the lock's holder: another worker waits...
    const state: SharedState = supervisor;
    expect(state.lock.holder).toBe(1);
    const other = thread(init, 1, "acquire");
    threads.push(other);
    expect(await nextMessage(other, 500)).toBe("no answer");
    // ... until the supervisor, told of the exit, frees it and clears what worker 0 held.
    const answer = nextMessage(other, 5000);
    expect(recoverWorker(supervisor, 0)).toBe(true);
    expect(await answer).toBe(0);
    expect(supervisor.lock.holder).toBe(0);
    expect(supervisor.limits.totals().allocations).toBe(1);
    expect(recoverWorker(supervisor, 0)).toBe(false);
  });
});
