// RESERVATION-TOKENs for every worker at once: relay-core's ReservationExchange
// (relay-core/src/server/reservation-exchange.ts) in shared memory. RFC 8656 §7.2: a client that
// reserved the port next to its even one (EVEN-PORT R=1) allocates it with the token from
// another 5-tuple, within 30 s, once. The kernel hashes each UDP 5-tuple to one worker, so that
// Allocate lands on another worker than the reservation about half the time with two workers.
//
// How it is honoured there: the maker publishes each reservation here (its port, family,
// expiry, the maker's principal hash and worker); the worker the Allocate reaches takes it here,
// under the one lock, and binds the port itself (a port of the maker's slice: slices only keep
// workers from picking the same port, and the maker never picks a reserved one). The
// reservation's count in the allocation quota moves in the same critical section: to the
// redeeming worker's table when the maker redeems it (it becomes the allocation's count), back
// to nobody when another principal does. The maker's own redemption, its expiry and its
// shutdown withdraw the entry, and whichever of withdraw and take comes first wins: single use.
//
// Handing the Allocate itself to the maker instead (the token naming its worker, as
// CONNECTION-IDs do) cannot work for UDP: the allocation must live where the client's 5-tuple
// lands, since every later request and ChannelData of that 5-tuple arrives there. And the
// Allocate waits for no other worker here: the maker binds no socket for a reservation, so
// there is nothing to close first, and the take answers the Allocate at once. The maker only
// learns afterwards (relay-core's "reservation-taken", worker-link.ts) and stops holding the
// port and counting the reservation against its bound of one port in eight.
//
// Left as is: once the maker's reservation lapses (or is withdrawn) its pool forgets the port,
// which the redeemer may still relay on; a later pick of it by the maker fails to bind (UDP)
// and relay-core picks another, or a TCP relay shares the number with that UDP one.

import type {
  ExchangedReservation,
  PublishedReservation,
  ReservationExchange,
} from "@turnpike/relay-core";
import type { Carver } from "./carve.js";
import type { KeyedHash } from "./keyed-hash.js";
import type { SharedLimits } from "./shared-limits.js";
import type { SharedLock } from "./shared-lock.js";
import { SlotTable } from "./slot-table.js";

// Per slot: token hash high, low; maker worker + 1, family, port, maker principal hash high,
// low. And the expiry (ms since the epoch: every worker's clock) as a double.
const STRIDE = 7;
const MAKER = 2;
const FAMILY = 3;
const PORT = 4;
const PRINCIPAL = 5;

/** Slots for at most `reservations` live reservations at half load (at least 64). */
export function reservationSlots(reservations: number): number {
  let slots = 64;
  while (slots < reservations * 2) slots *= 2;
  return slots;
}

export function carveReservations(c: Carver, slots: number) {
  return { words: c.int32(slots * STRIDE), expiries: c.float64(slots) };
}

export type ReservationsViews = ReturnType<typeof carveReservations>;

export class SharedReservations implements ReservationExchange {
  private readonly table: SlotTable;

  constructor(
    slots: number,
    views: ReservationsViews,
    private readonly worker: number,
    private readonly lock: SharedLock,
    private readonly hash: KeyedHash,
    /** The allocation quota, whose counts move with a reservation another worker takes. */
    private readonly limits: SharedLimits,
    /** This engine's clock (relay-core's `now`) to the one every worker shares. */
    private readonly wallClock: (now: number) => number,
  ) {
    this.table = new SlotTable(slots, views.words, STRIDE, views.expiries, 1);
  }

  publish(r: PublishedReservation): boolean {
    const [hi, lo] = this.hash.key(r.token);
    const [phi, plo] = this.hash.of(r.principal);
    const t = this.table;
    return this.lock.locked(() => {
      const slot = t.findOrInsert(hi, lo);
      if (slot < 0) return false;
      t.words.set([this.worker + 1, r.family, r.port, phi, plo], slot * STRIDE + MAKER);
      t.floats![slot] = this.wallClock(r.expiresAt);
      return true;
    });
  }
  withdraw(token: Uint8Array): boolean {
    const [hi, lo] = this.hash.key(token);
    const t = this.table;
    return this.lock.locked(() => {
      const slot = t.find(hi, lo);
      if (slot < 0 || t.words[slot * STRIDE + MAKER] !== this.worker + 1) return false;
      t.remove(slot);
      return true;
    });
  }

  peek(token: Uint8Array, principal: string, now: number): ExchangedReservation | undefined {
    return this.redeem(token, principal, now, false);
  }

  take(token: Uint8Array, principal: string, now: number): ExchangedReservation | undefined {
    return this.redeem(token, principal, now, true);
  }

  private redeem(
    token: Uint8Array,
    principal: string,
    now: number,
    take: boolean,
  ): ExchangedReservation | undefined {
    const [hi, lo] = this.hash.key(token);
    const [phi, plo] = this.hash.of(principal);
    const nowMs = this.wallClock(now);
    const t = this.table;
    return this.lock.locked(() => {
      const slot = t.find(hi, lo);
      if (slot < 0) return undefined;
      const at = slot * STRIDE;
      const maker = t.words[at + MAKER]! - 1;
      // Its maker's own (redeemed there, or about to be) or lapsed: the maker withdraws it.
      if (maker === this.worker || t.floats![slot]! <= nowMs) return undefined;
      const [mhi, mlo] = [t.words[at + PRINCIPAL]!, t.words[at + PRINCIPAL + 1]!];
      const r: ExchangedReservation = {
        engine: maker,
        family: t.words[at + FAMILY] as 4 | 6,
        port: t.words[at + PORT]!,
        inherits: mhi === phi && mlo === plo,
      };
      if (take) {
        t.remove(slot);
        this.limits.moveAllocation(mhi, mlo, maker, r.inherits ? this.worker : undefined);
      }
      return r;
    });
  }

  /** Worker `w` died: its reservations went with its engine. The caller holds the lock. */
  clearWorker(w: number): void {
    this.table.removeWhere((slot) => this.table.words[slot * STRIDE + MAKER] === w + 1);
  }
}
