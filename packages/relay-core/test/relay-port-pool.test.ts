// The relay port pool: dynamic and pinned ranges, EVEN-PORT reservations (RFC 8656 §7.2).
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../src/rng.js";
import { RelayPortPool } from "../src/server/relay-port-pool.js";

const pool = (pinned?: { min: number; max: number }) =>
  new RelayPortPool({
    dynamic: { min: 50000, max: 50009 },
    ...(pinned !== undefined ? { pinned } : {}),
    random: new SeededRandom("pool"),
  });

describe("RelayPortPool", () => {
  it("refuses a pinned range that overlaps the dynamic one", () => {
    expect(() => pool({ min: 50009, max: 50020 })).toThrow(/overlaps/);
    expect(() => pool({ min: 49990, max: 50000 })).toThrow(/overlaps/);
    expect(() => pool({ min: 40010, max: 40000 })).toThrow(/invalid pinned/);
    expect(() => pool({ min: 50010, max: 50020 })).not.toThrow();
  });

  it("hands out every dynamic port once and never a pinned one, then none", () => {
    const p = pool({ min: 50010, max: 50019 });
    const got = new Set<number>();
    for (let i = 0; i < 10; i++) {
      const port = p.pick(4)!;
      expect(port).toBeGreaterThanOrEqual(50000);
      expect(port).toBeLessThanOrEqual(50009);
      p.take(4, port);
      got.add(port);
    }
    expect(got.size).toBe(10);
    expect(p.pick(4)).toBeUndefined();
    expect(p.pickEven(4, false)).toBeUndefined();
    // Pinned ports in use do not make the dynamic range look fuller or emptier.
    p.take(4, 50015);
    p.release(4, 50003);
    expect(p.pick(4)).toBe(50003);
    // Families are separate port spaces.
    expect(p.pick(6)).toBeDefined();
  });

  it("knows which ports may be pinned", () => {
    const p = pool({ min: 40000, max: 40009 });
    expect(p.isPinnable(40000)).toBe(true);
    expect(p.isPinnable(40009)).toBe(true);
    expect(p.isPinnable(40010)).toBe(false);
    expect(p.isPinnable(50000)).toBe(false);
    expect(pool().isPinnable(40000)).toBe(false);
  });

  it("holds a reserved port until it is redeemed, cancelled or expires", () => {
    const p = pool();
    const token = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
    const ended: string[] = [];
    p.reserve(token, 4, 50001, 1000, "rest:mallory");
    expect(p.isInUse(4, 50001)).toBe(true);
    expect(p.reservation(token, 999)).toEqual({
      token,
      family: 4,
      port: 50001,
      expiresAt: 1000,
      principal: "rest:mallory",
    });
    expect(p.reservation(token, 1000)).toBeUndefined();
    expect(p.nextReservationExpiry()).toBe(1000);
    p.expireReservations(999, (r) => ended.push(r.principal));
    expect(p.isInUse(4, 50001)).toBe(true);
    p.expireReservations(1000, (r) => ended.push(r.principal));
    expect(p.isInUse(4, 50001)).toBe(false);
    expect(p.nextReservationExpiry()).toBeUndefined();
    expect(ended).toEqual(["rest:mallory"]);

    p.reserve(token, 4, 50003, 2000, "rest:mallory");
    p.redeem(token);
    expect(p.isInUse(4, 50003)).toBe(true); // now the redeeming allocation's
    expect(p.nextReservationExpiry()).toBeUndefined();

    p.reserve(token, 4, 50005, 2000, "rest:mallory");
    expect(p.cancel(token)?.port).toBe(50005);
    expect(p.isInUse(4, 50005)).toBe(false);
    expect(p.cancel(token)).toBeUndefined();
    expect(p.reservationCount).toBe(0);
  });

  it("bounds reservations to one port in eight of the dynamic range, per family", () => {
    const p = new RelayPortPool({
      dynamic: { min: 50000, max: 50079 },
      random: new SeededRandom("pool"),
    });
    for (let i = 0; i < 10; i++) {
      expect(p.canReserve(4)).toBe(true);
      p.reserve(Uint8Array.of(4, i), 4, 50001 + 2 * i, 1000 + i, "rest:mallory");
    }
    expect(p.canReserve(4)).toBe(false);
    expect(p.canReserve(6)).toBe(true);
    p.expireReservations(1000, () => {});
    expect(p.canReserve(4)).toBe(true);
    // Expiry order is insertion order: the next due is the oldest left.
    expect(p.nextReservationExpiry()).toBe(1001);
    const ended: number[] = [];
    p.cancelAll((r) => ended.push(r.port));
    expect(ended).toHaveLength(9);
    expect(p.reservationCount).toBe(0);
  });
});
