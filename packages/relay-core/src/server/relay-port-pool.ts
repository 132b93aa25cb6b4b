/**
 * Relay ports (RFC 8656 §7.2): which port numbers each address family has handed out, where a
 * new allocation's port comes from, and the ports held back for others.
 *
 * Two disjoint ranges:
 *   dynamic  minPort..maxPort: ordinary allocations get a random free port here (RFC 8656
 *            §21.1.7 suggests random choice, so relayed addresses are hard to guess);
 *   pinned   pinnedMin..pinnedMax (optional): only credentials that pin a port
 *            (auth/pinned-username.ts) get a port here, always the one they name, so a
 *            dynamic allocation can never occupy a port a platform assigned to a customer.
 * EVEN-PORT reservations (RFC 8656 §7.2, §18.10): the odd partner of an even port stays taken
 * for ~30 s under a RESERVATION-TOKEN, for the client's second Allocate. A reservation outlives
 * the allocation that made it, so reservations are bounded: at most one port in eight of the
 * dynamic range per family is held by them (the server also counts each against its
 * principal's allocation quota, allocations.ts), and allocate-and-delete churn cannot take the
 * range from others. All reservations share one lifetime, so the Map's insertion order is
 * their expiry order: the earliest is the first, and expiry stops at the first one still due.
 *
 * Ports are tracked per family only (not per UDP/TCP): one number is one allocation's.
 */
import { bytesKey } from "../codec/message.js";
import { type RandomSource, randomIntBelow } from "../rng.js";

export interface PortRange {
  readonly min: number;
  readonly max: number;
}

export interface Reservation {
  /** Its RESERVATION-TOKEN (8 bytes, a copy). */
  readonly token: Uint8Array;
  readonly family: 4 | 6;
  readonly port: number;
  readonly expiresAt: number;
  /** Who made it: its count in the allocation quota is theirs until it is redeemed or gone. */
  readonly principal: string;
}

/** Reservations a family may hold at once: one port in eight of the dynamic range (at least 1). */
export function maxReservations(range: PortRange): number {
  return Math.max(1, Math.floor((range.max - range.min + 1) / 8));
}

export class RelayPortPool {
  readonly dynamic: PortRange;
  readonly pinned: PortRange | undefined;
  readonly #random: RandomSource;
  readonly #inUse: Record<4 | 6, Set<number>> = { 4: new Set(), 6: new Set() };
  /** How many of `inUse` lie in the dynamic range, so a full range is known without a scan. */
  readonly #dynamicInUse: Record<4 | 6, number> = { 4: 0, 6: 0 };
  readonly #reservations = new Map<string, Reservation>();
  readonly #reservationsHeld: Record<4 | 6, number> = { 4: 0, 6: 0 };
  readonly #maxReservations: number;

  constructor(options: { dynamic: PortRange; pinned?: PortRange; random: RandomSource }) {
    const { dynamic, pinned } = options;
    if (!validRange(dynamic)) {
      throw new Error(`invalid relay port range ${dynamic.min}-${dynamic.max}`);
    }
    if (pinned !== undefined) {
      if (!validRange(pinned)) {
        throw new Error(`invalid pinned port range ${pinned.min}-${pinned.max}`);
      }
      if (pinned.min <= dynamic.max && dynamic.min <= pinned.max) {
        throw new Error(
          `pinned port range ${pinned.min}-${pinned.max} overlaps the relay port range ${dynamic.min}-${dynamic.max}`,
        );
      }
    }
    this.dynamic = dynamic;
    this.pinned = pinned;
    this.#random = options.random;
    this.#maxReservations = maxReservations(dynamic);
  }

  /** True when `port` lies in the pinned range (false when there is none). */
  isPinnable(port: number): boolean {
    const p = this.pinned;
    return p !== undefined && port >= p.min && port <= p.max;
  }

  #isDynamic(port: number): boolean {
    return port >= this.dynamic.min && port <= this.dynamic.max;
  }

  isInUse(family: 4 | 6, port: number): boolean {
    return this.#inUse[family].has(port);
  }

  take(family: 4 | 6, port: number): void {
    const used = this.#inUse[family];
    if (used.has(port)) return;
    used.add(port);
    if (this.#isDynamic(port)) this.#dynamicInUse[family]++;
  }

  release(family: 4 | 6, port: number): void {
    if (this.#inUse[family].delete(port) && this.#isDynamic(port)) this.#dynamicInUse[family]--;
  }

  /** A random free port of the dynamic range: random probes first, then a scan from a random start. */
  pick(family: 4 | 6): number | undefined {
    const used = this.#inUse[family];
    const { min, max } = this.dynamic;
    const span = max - min + 1;
    if (this.#dynamicInUse[family] >= span) return undefined;
    for (let i = 0; i < 16; i++) {
      const port = min + randomIntBelow(this.#random, span);
      if (!used.has(port)) return port;
    }
    const start = randomIntBelow(this.#random, span);
    for (let i = 0; i < span; i++) {
      const port = min + ((start + i) % span);
      if (!used.has(port)) return port;
    }
    return undefined;
  }

  /** RFC 8656 §18.7 EVEN-PORT: an even dynamic port, with port+1 free too when it is to be reserved. */
  pickEven(family: 4 | 6, withNext: boolean): number | undefined {
    const used = this.#inUse[family];
    const { min, max } = this.dynamic;
    const first = min % 2 === 0 ? min : min + 1;
    const count = Math.floor((max - first) / 2) + 1;
    if (count <= 0) return undefined;
    const start = randomIntBelow(this.#random, count);
    for (let i = 0; i < count; i++) {
      const port = first + ((start + i) % count) * 2;
      if (used.has(port)) continue;
      if (withNext && (port + 1 > max || used.has(port + 1))) continue;
      return port;
    }
    return undefined;
  }

  // -----------------------------------------------------------------------------------------
  // RESERVATION-TOKEN (RFC 8656 §7.2, §18.10)

  /** True while `family` holds fewer reservations than its bound. */
  canReserve(family: 4 | 6): boolean {
    return this.#reservationsHeld[family] < this.#maxReservations;
  }

  /** Reservations held now (both families). */
  get reservationCount(): number {
    return this.#reservations.size;
  }

  /**
   * Hold `port` under `token` for `principal` until `expiresAt` (the port is taken from now on).
   * The caller checked canReserve; expiresAt is now plus the one reservation lifetime.
   */
  reserve(
    token: Uint8Array,
    family: 4 | 6,
    port: number,
    expiresAt: number,
    principal: string,
  ): void {
    this.take(family, port);
    this.#reservations.set(bytesKey(token), {
      token: Uint8Array.from(token),
      family,
      port,
      expiresAt,
      principal,
    });
    this.#reservationsHeld[family]++;
  }

  /** The live reservation named by `token`, if any. */
  reservation(token: Uint8Array, now: number): Reservation | undefined {
    const r = this.#reservations.get(bytesKey(token));
    return r !== undefined && r.expiresAt > now ? r : undefined;
  }

  /**
   * The port held under `token` becomes `port` (taken from now on; the old one is freed), the
   * expiry unchanged: an EVEN-PORT bind retried on another even port moves its partner along.
   * Returns the reservation as it is now.
   */
  moveReservation(token: Uint8Array, port: number): Reservation | undefined {
    const key = bytesKey(token);
    const r = this.#reservations.get(key);
    if (r === undefined) return undefined;
    this.release(r.family, r.port);
    this.take(r.family, port);
    // Set on an existing key keeps its place, and with it the expiry order.
    const moved = { ...r, port };
    this.#reservations.set(key, moved);
    return moved;
  }

  /** An Allocate redeemed `token`: its port now belongs to that allocation (still taken). */
  redeem(token: Uint8Array): void {
    this.#forget(bytesKey(token));
  }

  /**
   * Forget `token` and free its port (its Allocate never succeeded, so nobody can redeem it);
   * the reservation, if there was one.
   */
  cancel(token: Uint8Array): Reservation | undefined {
    const r = this.#forget(bytesKey(token));
    if (r !== undefined) this.release(r.family, r.port);
    return r;
  }

  /** Free every reservation due at or before `now`, each handed to `ended`. */
  expireReservations(now: number, ended: (r: Reservation) => void): void {
    for (const [key, r] of this.#reservations) {
      // Insertion order is expiry order (one lifetime): the rest are due later.
      if (r.expiresAt > now) return;
      this.#forget(key);
      this.release(r.family, r.port);
      ended(r);
    }
  }

  /** Free every reservation (shutdown), each handed to `ended`. */
  cancelAll(ended: (r: Reservation) => void): void {
    for (const [key, r] of this.#reservations) {
      this.#forget(key);
      this.release(r.family, r.port);
      ended(r);
    }
  }

  /** The earliest reservation expiry (the first in insertion order), or undefined when none. */
  nextReservationExpiry(): number | undefined {
    for (const r of this.#reservations.values()) return r.expiresAt;
    return undefined;
  }

  #forget(key: string): Reservation | undefined {
    const r = this.#reservations.get(key);
    if (r === undefined) return undefined;
    this.#reservations.delete(key);
    this.#reservationsHeld[r.family]--;
    return r;
  }
}

function validRange(r: PortRange): boolean {
  return (
    Number.isInteger(r.min) &&
    Number.isInteger(r.max) &&
    r.min >= 1 &&
    r.max <= 65535 &&
    r.min <= r.max
  );
}
