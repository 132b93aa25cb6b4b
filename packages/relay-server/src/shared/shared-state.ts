// Everything workers share in memory, made once by the supervisor (createSharedState, passed to
// each worker in its workerData: structured clones share SharedArrayBuffers) and mapped by each
// thread (openSharedState):
//
//   limits          allocation and connection quotas, the unauthenticated rate  shared-limits.ts
//   pinnedPorts     who owns each pinned port (one principal, every worker)      pinned-ports.ts
//   reservations    RESERVATION-TOKENs redeemable on any worker                  reservations.ts
//   userBandwidth   per-user bandwidth buckets, leased to workers                user-bandwidth.ts
//
// under one lock (shared-lock.ts) and one hash key drawn for the process (keyed-hash.ts). When a
// worker exits the supervisor calls recoverWorker: a lock the dead thread still held is freed,
// then everything it held is cleared, under the lock, in every table. A thread that ended inside
// a critical section may have left the entry it was writing half-written; its own counts are
// cleared anyway, and an entry of a shared table (a rate bucket, a pin's owner, a reservation,
// a user's bucket) can be off until it is next written or removed. That takes a terminate()
// landing inside a few memory operations.

import { randomBytes } from "node:crypto";
import type { BandwidthLimit } from "@turnpike/relay-core";
import { Carver, carveShared } from "./carve.js";
import { KeyedHash } from "./keyed-hash.js";
import { carvePinnedPorts, type PinnedPortRange, SharedPinnedPorts } from "./pinned-ports.js";
import { carveReservations, reservationSlots, SharedReservations } from "./reservations.js";
import {
  carveLimits,
  type LimitsLayout,
  type LimitsOptions,
  limitsLayout,
  SharedLimits,
  slotsFor,
  writeLimits,
} from "./shared-limits.js";
import { lockOwnerOfWorker, SharedLock } from "./shared-lock.js";
import { carveUserBandwidth, SharedUserBandwidth } from "./user-bandwidth.js";

export interface SharedStateOptions extends LimitsOptions {
  /** The configuration generation the limits belong to (default 0; shared-limits.ts). */
  readonly generation?: number;
  /** --pinned-ports, if any. */
  readonly pinnedPorts?: PinnedPortRange | undefined;
  /** Ports of the dynamic relay range (reservations are at most one in eight of them). */
  readonly dynamicPorts: number;
  /** The per-user bandwidth limit, if any. */
  readonly perUserBandwidth?: BandwidthLimit | undefined;
  /** Tests: a known hash key (default: 16 random bytes). */
  readonly hashKey?: Uint8Array;
}

/** What a thread is given to map the shared state (all plain data and SharedArrayBuffers). */
export interface SharedStateInit {
  readonly workers: number;
  readonly lock: SharedArrayBuffer;
  readonly hashKey: Uint8Array;
  readonly limits: { readonly layout: LimitsLayout; readonly buffer: SharedArrayBuffer };
  readonly pinnedPorts:
    | { readonly range: PinnedPortRange; readonly buffer: SharedArrayBuffer }
    | undefined;
  readonly reservations: { readonly slots: number; readonly buffer: SharedArrayBuffer };
  readonly userBandwidth:
    | {
        readonly limit: BandwidthLimit;
        readonly slots: number;
        readonly buffer: SharedArrayBuffer;
      }
    | undefined;
}

export function createSharedState(options: SharedStateOptions): SharedStateInit {
  const layout = limitsLayout(options);
  const workers = options.workers;
  const reservations = reservationSlots(Math.ceil(options.dynamicPorts / 8) + workers);
  const pinned = options.pinnedPorts;
  const bandwidth = options.perUserBandwidth;
  const userSlots = options.tableSlots ?? slotsFor(Math.min(options.maxAllocations, 1 << 19));
  return {
    workers,
    lock: new SharedArrayBuffer(4),
    hashKey: options.hashKey ?? new Uint8Array(randomBytes(16)),
    limits: { layout, buffer: limitsBuffer(layout, options) },
    pinnedPorts:
      pinned === undefined
        ? undefined
        : { range: pinned, buffer: carveShared((c) => carvePinnedPorts(c, pinned)).buffer },
    reservations: {
      slots: reservations,
      buffer: carveShared((c) => carveReservations(c, reservations)).buffer,
    },
    userBandwidth:
      bandwidth === undefined
        ? undefined
        : {
            limit: bandwidth,
            slots: userSlots,
            buffer: carveShared((c) => carveUserBandwidth(c, workers, userSlots)).buffer,
          },
  };
}

/** The limits' memory, with `options`' limits in force as their generation. */
function limitsBuffer(layout: LimitsLayout, options: SharedStateOptions): SharedArrayBuffer {
  const { buffer, views } = carveShared((c) => carveLimits(c, layout));
  writeLimits(views.header, options, options.generation ?? 0);
  return buffer;
}

/** One thread's view of the shared state. */
export interface SharedState {
  readonly lock: SharedLock;
  readonly limits: SharedLimits;
  readonly pinnedPorts: SharedPinnedPorts | undefined;
  readonly reservations: SharedReservations;
  readonly userBandwidth: SharedUserBandwidth | undefined;
}

/** Every worker's clock to one they share: ms since the epoch (each thread has its own origin). */
const wallClock = (now: number) => performance.timeOrigin + now;

/**
 * The shared state as worker `worker` sees it (counting as that worker), or the supervisor
 * (`worker` = init.workers: it counts nothing, and clears what dead workers held).
 */
export function openSharedState(init: SharedStateInit, worker: number): SharedState {
  const lock = new SharedLock(new Int32Array(init.lock, 0, 1), lockOwnerOfWorker(worker));
  const hash = new KeyedHash(init.hashKey);
  const { layout, buffer } = init.limits;
  const limits = new SharedLimits(
    layout,
    carveLimits(new Carver(buffer), layout),
    worker,
    lock,
    hash,
  );
  const pins = init.pinnedPorts;
  const r = init.reservations;
  const bw = init.userBandwidth;
  return {
    lock,
    limits,
    pinnedPorts:
      pins === undefined
        ? undefined
        : new SharedPinnedPorts(
            pins.range,
            carvePinnedPorts(new Carver(pins.buffer), pins.range),
            worker,
            lock,
            hash,
          ),
    reservations: new SharedReservations(
      r.slots,
      carveReservations(new Carver(r.buffer), r.slots),
      worker,
      lock,
      hash,
      limits,
      wallClock,
    ),
    userBandwidth:
      bw === undefined
        ? undefined
        : new SharedUserBandwidth(
            bw.limit,
            init.workers,
            bw.slots,
            carveUserBandwidth(new Carver(bw.buffer), init.workers, bw.slots),
            worker,
            lock,
            hash,
            wallClock,
          ),
  };
}

/**
 * The supervisor saw worker `w` exit: free the lock if the dead thread held it, then clear
 * everything it held in every table. Returns whether it held the lock (worth a log line).
 */
export function recoverWorker(state: SharedState, w: number): boolean {
  const heldLock = state.lock.releaseHeldBy(lockOwnerOfWorker(w));
  state.lock.locked(() => {
    state.limits.clearWorker(w);
    state.pinnedPorts?.clearWorker(w);
    state.reservations.clearWorker(w);
    state.userBandwidth?.clearWorker(w);
  });
  return heldLock;
}
