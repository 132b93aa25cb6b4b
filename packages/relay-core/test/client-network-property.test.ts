/**
 * Property: over a lossy, duplicating, reordering UDP path (bounded: only the first few dozen
 * datagrams each way are disturbed, and at most 6 are lost in all, fewer than the Rc = 7 sends
 * of one transaction, so no transaction can time out), the
 * TurnClient against the real TurnServer always ends up allocated, binds a channel, and data
 * flows both ways. Nothing throws, nothing fails.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../src/rng.js";
import { type Direction, type Fate, Harness, PEER, text } from "./client-harness.js";

interface Disturbance {
  readonly copies: number;
  readonly delay: number;
}

const disturbance = fc.record({
  // 0: lost, 1: delivered, 2-3: duplicated.
  copies: fc.oneof(
    { weight: 3, arbitrary: fc.constant(0) },
    { weight: 5, arbitrary: fc.constant(1) },
    { weight: 2, arbitrary: fc.integer({ min: 2, max: 3 }) },
  ),
  // Up to 1.5 s extra: reorders against retransmissions (RTO 500 ms) and later messages.
  delay: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 1_500 })),
});

const MAX_LOSSES = 6;

/** The scripted fate; losses beyond MAX_LOSSES are delivered after all. */
function boundedFate(plan: Record<Direction, readonly Disturbance[]>): Fate {
  let lost = 0;
  return (direction, seq) => {
    const d = plan[direction][seq] ?? { copies: 1, delay: 0 };
    let copies = d.copies;
    if (copies === 0 && ++lost > MAX_LOSSES) copies = 1;
    return { copies, delay: d.delay };
  };
}

describe("TurnClient over a disturbed network", () => {
  it("eventually allocates and a channel delivers data both ways", () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.array(disturbance, { maxLength: 40 }),
        fc.array(disturbance, { maxLength: 40 }),
        (seed, up, down) => {
          const h = new Harness({
            seed,
            fate: boundedFate({ "to-server": up, "to-client": down }),
          });
          h.client.allocate(h.now);
          expect(h.runUntil(() => h.client.state === "allocated", 300_000)).toBe(true);
          const channel = h.client.bindChannel(PEER, h.now);
          expect(h.runUntil(() => h.client.channelFor(PEER) === channel, 300_000)).toBe(true);
          // Data is best effort (no retransmission): send until one copy gets through each way.
          for (let i = 0; i < 30 && h.clientInbox.length === 0; i++) {
            h.peerSends(text(`down ${i}`));
            h.advance(2_000);
          }
          for (let i = 0; i < 30 && h.peerInbox.length === 0; i++) {
            h.clientSends(h.client.encodeChannelData(channel, text(`up ${i}`)));
            h.advance(2_000);
          }
          expect(h.clientInbox[0]?.channel).toBe(channel);
          expect(h.clientInbox[0]?.peer).toEqual(PEER);
          expect(h.peerInbox[0]?.peer).toEqual(PEER);
          // The allocation stays healthy for a while after the storm.
          h.advance(1_200_000);
          expect(h.client.state).toBe("allocated");
          expect(h.server.allocationCount).toBe(1);
          const failures = h.events.filter((e) =>
            [
              "allocate-failed",
              "refresh-failed",
              "channel-bind-failed",
              "permission-failed",
            ].includes(e.event.type),
          );
          expect(failures).toEqual([]);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("under any loss, an Allocate ends allocated or failed within 40 s, never stuck", () => {
    fc.assert(
      fc.property(
        fc.integer(),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.integer({ min: 1, max: 4 }),
        (seed, lossRate, rto) => {
          const rng = new SeededRandom(seed);
          const h = new Harness({
            seed,
            client: { retransmission: { rto: rto * 100 } },
            fate: () => ({
              copies: rng.nextUint32() / 2 ** 32 < lossRate ? 0 : 1 + (rng.nextUint32() % 2),
              delay: rng.nextUint32() % 300,
            }),
          });
          h.client.allocate(h.now);
          // Two transactions in a row at most (challenge, then signed), each within 63 RTO + 16 RTO.
          expect(
            h.runUntil(() => h.client.state !== "allocating", 2 * 79 * rto * 100 + 1_000),
          ).toBe(true);
          expect(["allocated", "failed"]).toContain(h.client.state);
          if (h.client.state === "failed") {
            expect(
              h.eventsOf("transaction-timeout").length + h.eventsOf("allocate-failed").length,
            ).toBe(1);
          }
        },
      ),
      { numRuns: 100 },
    );
  });
});
