// The engine's clocks: the ONE timer relay-core asks for (pollTimeout(), then handleTimeout),
// and the wall-clock offset TURN REST expiry is computed with.
//
// relay-core keeps its deadlines in a heap, so pollTimeout() is O(1) and the timer is re-armed
// after every input (driver.ts, afterInput). Re-arming keeps a timer that fires earlier than
// asked, and moves it only when relay-core needs it sooner: most inputs touch no timer at all.

import { performance } from "node:perf_hooks";
import type { TurnServer } from "@turnpike/relay-core";

/** Wall-clock jumps matter only for TURN REST expiry: a periodic resync is plenty. */
const WALL_CLOCK_RESYNC_MS = 10_000;

export class RelayTimer {
  private timer: NodeJS.Timeout | undefined;
  /** When the armed timer fires (monotonic ms), +Infinity when none is armed. */
  private at = Number.POSITIVE_INFINITY;
  private closed = false;

  /** `fire` runs relay-core's handleTimeout and the loop (driver.ts). */
  constructor(private readonly fire: () => void) {}

  /** Arms the timer at `at` (relay-core's pollTimeout()); undefined: nothing is scheduled. */
  arm(at: number | undefined): void {
    if (at === undefined || this.closed) {
      this.cancel();
      return;
    }
    if (this.timer !== undefined && this.at <= at) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.at = at;
    this.timer = setTimeout(() => this.onFire(), Math.max(0, Math.ceil(at - performance.now())));
  }

  /** No timer from now on (the engine closes). */
  close(): void {
    this.closed = true;
    this.cancel();
  }

  private onFire(): void {
    this.timer = undefined;
    this.at = Number.POSITIVE_INFINITY;
    this.fire();
  }

  private cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.at = Number.POSITIVE_INFINITY;
  }
}

/**
 * relay-core's clock is monotonic (performance.now()); TURN REST usernames carry wall-clock
 * expiry, so the server keeps `wall = now + offset`, resynced here.
 */
export class WallClockSync {
  private interval: NodeJS.Timeout | undefined;

  constructor(private readonly core: TurnServer) {}

  start(): void {
    this.interval = setInterval(
      () => this.core.setUnixTimeOffset(unixTimeOffsetMs()),
      WALL_CLOCK_RESYNC_MS,
    );
    this.interval.unref();
  }

  stop(): void {
    if (this.interval !== undefined) clearInterval(this.interval);
    this.interval = undefined;
  }
}

/** Wall clock minus the monotonic clock, in ms (relay-core's unixTimeOffsetMs). */
export function unixTimeOffsetMs(): number {
  return Date.now() - performance.now();
}
