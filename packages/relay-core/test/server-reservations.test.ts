// EVEN-PORT reservations (RFC 8656 §7.2, §18.10) outlive the Allocate that made them, so they
// count against their maker's allocation quota until redeemed or lapsed, and they are bounded
// in number: allocate-and-delete churn cannot take the port range from other users.
import { describe, expect, it } from "vitest";
import { SharedSecretCredentials } from "../src/auth/credentials.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { readBytes, readErrorCode } from "../src/codec/attributes.js";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import { type AllocationQuota, LocalAllocationQuota } from "../src/server/allocation-quota.js";
import type { TurnServerOptions } from "../src/server/options.js";
import { Harness, type OutputOf, Response, TestClient, UNIX_T0 } from "./harness.js";

const SECRET = "webrtc-app-token";

function harness(options: Partial<TurnServerOptions> = {}): Harness {
  return new Harness({
    credentials: new SharedSecretCredentials([SECRET]),
    relayAddresses: { ip4: { bind: "127.0.0.1" } },
    minPort: 50000,
    maxPort: 50499,
    maxUnauthenticatedRate: 0,
    ...options,
  });
}

let nextPort = 1;

/** A client on a 5-tuple of its own, with TURN REST credentials of `user`. */
function user(h: Harness, name: string): TestClient {
  const c = mintRestCredentials(SECRET, UNIX_T0, 3600, name);
  return new TestClient(h, { port: nextPort++, username: c.username, password: c.password });
}

const reserveNext = { extra: (b: StunMessageBuilder) => b.evenPort(true) };
const evenOnly = { extra: (b: StunMessageBuilder) => b.evenPort(false) };
const redeem = (token: Uint8Array) => ({
  extra: (b: StunMessageBuilder) => b.bytes(AttributeType.ReservationToken, token),
});
const tokenOf = (r: Response) => readBytes(r.msg, AttributeType.ReservationToken)!.slice();
const reason = (r: Response) => readErrorCode(r.msg)?.reason ?? "";

/** Allocate with EVEN-PORT R=1, then delete the allocation (Refresh LIFETIME 0): the churn. */
function allocateReserveAndDelete(c: TestClient): number {
  const r = c.allocate(reserveNext);
  if (r.code !== 0) return r.code;
  c.send(c.buildSigned(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, 0)));
  c.h.drain();
  return 0;
}

describe("EVEN-PORT reservations", () => {
  // The attack: 500 rounds of Allocate EVEN-PORT(R=1) + delete, a millisecond apart, over a
  // 500-port range. Without the bounds every round left its odd port reserved for 30 s.
  function churn(h: Harness, name: string): Map<number, number> {
    const mallory = user(h, name);
    const codes = new Map<number, number>();
    for (let i = 0; i < 500; i++) {
      h.advance(0.001);
      const code = allocateReserveAndDelete(mallory);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    return codes;
  }

  /** How many of `count` new users get a plain allocation. */
  function plainAllocations(h: Harness, count: number): number {
    let granted = 0;
    for (let i = 0; i < count; i++) if (user(h, `u${i}`).allocate().code === 0) granted++;
    return granted;
  }

  it("cannot be churned into the port range by a user with a quota of 1: it reserves nothing", () => {
    const h = harness({ maxAllocationsPerUser: 1 });
    // Each reservation would be a second allocation: over the quota (486), none is made.
    expect(churn(h, "mallory")).toEqual(new Map([[486, 500]]));
    expect(h.server.stats.reservationsActive).toBe(0);
    // Within the 30 s the reservations would have lasted, others get EVEN-PORT and plain ports.
    expect(user(h, "carol").allocate(evenOnly).code).toBe(0);
    expect(plainAllocations(h, 450)).toBe(450);
  });

  it("cannot be churned into the port range by a user with a quota of 2: one reservation at a time", () => {
    const h = harness({ maxAllocationsPerUser: 2 });
    expect(churn(h, "mallory")).toEqual(
      new Map([
        [0, 1],
        [486, 499],
      ]),
    );
    expect(h.server.stats.reservationsActive).toBe(1);
    expect(user(h, "bob").allocate(reserveNext).code).toBe(0);
    expect(user(h, "carol").allocate(evenOnly).code).toBe(0);
    // 500 ports: bob's two, carol's, mallory's reserved one; the rest for plain allocations.
    expect(plainAllocations(h, 500)).toBe(496);
  });

  it("counts a reservation as an allocation of its maker until it is redeemed", () => {
    const h = harness({ maxAllocationsPerUser: 2 });
    const r = user(h, "alice").allocate(reserveNext);
    expect(r.code).toBe(0);
    expect(h.server.stats.reservationsActive).toBe(1);
    // One allocation and one reservation: the quota of 2 is used up.
    expect(user(h, "alice").allocate().code).toBe(486);
    // Redeemed by alice, the reservation's count becomes the new allocation's.
    const second = user(h, "alice").allocate(redeem(tokenOf(r)));
    expect(second.code).toBe(0);
    expect(second.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(
      r.xorAddress(AttributeType.XorRelayedAddress)!.port + 1,
    );
    expect(h.server.stats.reservationsActive).toBe(0);
    expect(user(h, "alice").allocate().code).toBe(486);
  });

  it("gives the count back when the reservation lapses", () => {
    const h = harness({ maxAllocationsPerUser: 2 });
    expect(allocateReserveAndDelete(user(h, "alice"))).toBe(0);
    expect(user(h, "alice").allocate().code).toBe(0);
    // The allocation and the reservation outliving its deleted allocation.
    expect(user(h, "alice").allocate().code).toBe(486);
    h.tick(30);
    expect(h.server.stats.reservationsActive).toBe(0);
    expect(user(h, "alice").allocate().code).toBe(0);
  });

  it("refuses EVEN-PORT R=1 with 486 when the reserved port would exceed the quota, holding nothing", () => {
    const h = harness({ maxAllocationsPerUser: 1 });
    const c = user(h, "alice");
    const r = c.allocate(reserveNext);
    expect(r.code).toBe(486);
    expect(reason(r)).toBe("Allocation Quota Reached: the reserved port counts as an allocation");
    expect(h.server.stats.allocationsActive).toBe(0);
    // Nothing was kept: the same user's plain allocation is granted.
    expect(user(h, "alice").allocate().code).toBe(0);
  });

  it("takes the redeemer's own quota when another user redeems the token, and gives the maker's back", () => {
    const h = harness({ maxAllocationsPerUser: 2 });
    const made = user(h, "alice").allocate(reserveNext);
    expect(made.code).toBe(0);
    const token = tokenOf(made);
    expect(user(h, "bob").allocate().code).toBe(0);
    expect(user(h, "bob").allocate().code).toBe(0);
    // Bob is at his quota: refused, and the reservation stays alice's.
    expect(user(h, "bob").allocate(redeem(token)).code).toBe(486);
    expect(h.server.stats.reservationsActive).toBe(1);
    expect(user(h, "carol").allocate(redeem(token)).code).toBe(0);
    // Alice's count is back to her one allocation.
    expect(user(h, "alice").allocate().code).toBe(0);
    expect(user(h, "alice").allocate().code).toBe(486);
  });

  it("are bounded to one port in eight of the range across users, beyond which EVEN-PORT R=1 gets 508", () => {
    // 80 ports: at most 10 reservations.
    const h = harness({ minPort: 50000, maxPort: 50079, maxAllocationsPerUser: 2 });
    const codes: number[] = [];
    for (let i = 0; i < 20; i++) {
      h.advance(0.001);
      codes.push(allocateReserveAndDelete(user(h, `m${i}`)));
    }
    expect(codes.filter((c) => c === 0)).toHaveLength(10);
    expect(codes.slice(10)).toEqual(new Array(10).fill(508));
    expect(h.server.stats.reservationsActive).toBe(10);
    const refused = user(h, "bob").allocate(reserveNext);
    expect(refused.code).toBe(508);
    expect(reason(refused)).toBe(
      "Insufficient Capacity: EVEN-PORT refused, no port can be reserved now",
    );
    // What the reservations do not hold is there for everyone: 70 plain allocations fit.
    let plain = 0;
    for (let i = 0; i < 75; i++) if (user(h, `u${i}`).allocate().code === 0) plain++;
    expect(plain).toBe(70);
  });

  it("count through the injected quota, and every count comes back at shutdown", () => {
    const local = new LocalAllocationQuota(Number.POSITIVE_INFINITY, 3);
    let held = 0;
    const quota: AllocationQuota = {
      acquire: (p) => {
        const code = local.acquire(p);
        if (code === 0) held++;
        return code;
      },
      release: (p) => {
        held--;
        local.release(p);
      },
    };
    const h = harness({ allocationQuota: quota });
    expect(user(h, "alice").allocate(reserveNext).code).toBe(0);
    expect(allocateReserveAndDelete(user(h, "bob"))).toBe(0);
    expect(held).toBe(3);
    h.server.closeAll(h.now);
    h.drain();
    expect(held).toBe(0);
    expect(h.server.stats.reservationsActive).toBe(0);
  });

  it("fails with 508 naming the reserved port when it cannot be bound, without moving it", () => {
    const h = harness();
    const made = user(h, "alice").allocate(reserveNext);
    const reserved = made.xorAddress(AttributeType.XorRelayedAddress)!.port + 1;
    const c = user(h, "alice");
    const fill = (b: StunMessageBuilder) => {
      b.requestedTransport(TransportProtocol.Udp).bytes(
        AttributeType.ReservationToken,
        tokenOf(made),
      );
    };
    c.learn(c.ask(c.build(Method.Allocate, fill)));
    c.send(c.buildSigned(Method.Allocate, fill));
    const [open] = h.expectOutputs([{ type: "open-relay", port: reserved }]) as [
      OutputOf<"open-relay">,
    ];
    h.server.handleRelayBindFailed(open.relay, h.now);
    const [sent] = h.expectOutputs([{ type: "transmit", errorCode: 508 }]) as [
      OutputOf<"transmit">,
    ];
    expect(reason(c.verified(new Response(sent.data)))).toBe(
      `Insufficient Capacity: reserved port ${reserved} could not be bound`,
    );
  });
});
