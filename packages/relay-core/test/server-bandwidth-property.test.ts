// Bandwidth limits as properties of the server's own data path, over random datagram sizes,
// directions and times: what is relayed in any window never exceeds rate * window + burst, and a
// flow that stays within that (a conformant flow) never loses a datagram. Rates are whole
// kilobytes per second and times whole milliseconds, so the bucket's arithmetic is exact and
// the bounds are checked with no tolerance.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { bandwidthLimit } from "../src/server/bandwidth.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, TestClient } from "./harness.js";

const PEER = "198.51.100.1";
const PEER_PORT = 5000;
const CHANNEL = 0x4000;

interface Datagram {
  /** ms since the previous one */
  readonly gap: number;
  readonly size: number;
  readonly toClient: boolean;
  /** Which allocation of the user carries it (0 or 1). */
  readonly allocation: number;
}

const datagramArb = fc.record({
  gap: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 20 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 3000 }) },
  ),
  size: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 1400 }) },
    { weight: 1, arbitrary: fc.integer({ min: 1400, max: 65_000 }) },
  ),
  toClient: fc.boolean(),
  allocation: fc.integer({ min: 0, max: 1 }),
});

/** Kilobytes per second, as bytes per second. */
const rateArb = fc.integer({ min: 1, max: 200 }).map((k) => k * 1000);

interface Sent {
  readonly at: number;
  readonly size: number;
  readonly allocation: number;
  readonly relayed: boolean;
}

/** Two allocations of alice, a channel each, and the datagrams played through them. */
function play(
  limits: { maxBytesPerSecond?: number; maxBytesPerSecondPerUser?: number },
  datagrams: readonly Datagram[],
): Sent[] {
  const h = new Harness({ ...limits, lifetimes: { nonce: 1e9 } });
  const clients = [1, 2].map((port) => {
    const c = new TestClient(h, { port });
    c.allocate({ lifetime: 3600 });
    c.channelBind(CHANNEL, PEER, PEER_PORT);
    return c;
  });
  const sent: Sent[] = [];
  for (const d of datagrams) {
    h.now += d.gap;
    const c = clients[d.allocation]!;
    const payload = new Uint8Array(d.size);
    const kind = d.toClient
      ? h.server.handlePeerData(c.relayFor(4), payload, PEER, PEER_PORT, h.now)
      : c.channelData(CHANNEL, payload).kind;
    sent.push({
      at: h.now,
      size: d.size,
      allocation: d.allocation,
      relayed: kind !== RouteKind.None,
    });
  }
  // Nothing but the limits refuses anything here.
  const drops = Object.entries(h.server.stats.drops).filter(([, n]) => n > 0);
  expect(drops.every(([reason]) => reason === "bandwidth-limit")).toBe(true);
  return sent;
}

/**
 * The largest excess of bytes over rate * window + burst, over every window whose ends are
 * datagrams of `flow` (where the maximum lies): <= 0 when the flow conforms.
 */
function excess(flow: readonly Sent[], bytesPerSecond: number): number {
  const { burstBytes } = bandwidthLimit(bytesPerSecond);
  let worst = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < flow.length; i++) {
    let bytes = 0;
    for (let j = i; j < flow.length; j++) {
      bytes += flow[j]!.size;
      const allowed = ((flow[j]!.at - flow[i]!.at) * bytesPerSecond) / 1000 + burstBytes;
      if (bytes - allowed > worst) worst = bytes - allowed;
    }
  }
  return worst;
}

const relayed = (flow: readonly Sent[]) => flow.filter((s) => s.relayed);
const ofAllocation = (flow: readonly Sent[], a: number) => flow.filter((s) => s.allocation === a);

describe("bandwidth limits, over random datagrams and times", () => {
  it("relay at most rate * window + burst per allocation, and drop nothing from a flow within it", () => {
    let conformant = 0;
    let limited = 0;
    fc.assert(
      fc.property(
        rateArb,
        fc.array(datagramArb, { minLength: 10, maxLength: 120, size: "max" }),
        (rate, datagrams) => {
          const sent = play({ maxBytesPerSecond: rate }, datagrams);
          for (const a of [0, 1]) {
            const offered = ofAllocation(sent, a);
            expect(excess(relayed(offered), rate)).toBeLessThanOrEqual(0);
            if (excess(offered, rate) <= 0) {
              conformant++;
              expect(offered.every((s) => s.relayed)).toBe(true);
            } else if (offered.some((s) => !s.relayed)) limited++;
          }
        },
      ),
      { numRuns: 150 },
    );
    // The generator reaches both sides of the limit.
    expect(conformant).toBeGreaterThan(20);
    expect(limited).toBeGreaterThan(20);
  });

  it("relay at most the user's rate * window + burst over all its allocations, each within its own", () => {
    let conformant = 0;
    fc.assert(
      fc.property(
        rateArb,
        rateArb,
        fc.array(datagramArb, { minLength: 10, maxLength: 120, size: "max" }),
        (perAllocation, perUser, datagrams) => {
          const sent = play(
            { maxBytesPerSecond: perAllocation, maxBytesPerSecondPerUser: perUser },
            datagrams,
          );
          expect(excess(relayed(sent), perUser)).toBeLessThanOrEqual(0);
          for (const a of [0, 1]) {
            expect(excess(relayed(ofAllocation(sent, a)), perAllocation)).toBeLessThanOrEqual(0);
          }
          const withinAll =
            excess(sent, perUser) <= 0 &&
            excess(ofAllocation(sent, 0), perAllocation) <= 0 &&
            excess(ofAllocation(sent, 1), perAllocation) <= 0;
          if (withinAll) {
            conformant++;
            expect(sent.every((s) => s.relayed)).toBe(true);
          }
        },
      ),
      { numRuns: 150 },
    );
    expect(conformant).toBeGreaterThan(10);
  });
});
