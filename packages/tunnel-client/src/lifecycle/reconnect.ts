// When a tunnel gives up on its relay and when it tries again. A relay silent for two
// keep-alive intervals is lost (the TurnClient sends one every interval, so silence that long
// means the relay or the path is gone). A lost or refused tunnel waits a full-jitter backoff
// delay (backoff.ts) and tries again; a refusal keeps the same rhythm (the operator may lift
// it: a revocation withdrawn, the relay's peer policy changed) and is marked `repeated` when it
// is the one said last, so that the log says it once. Pure: time is a parameter, the jitter is
// injected.

import { Backoff } from "../backoff.js";
import { type Failure, lost } from "./failures.js";
import type { TunnelDown } from "./outputs.js";

export interface ReconnectOptions {
  /** Seconds between keep-alives; silence from the relay for twice this = lost. */
  readonly keepalive: number;
  /** Seconds: the first backoff window, and the largest. */
  readonly backoffBase: number;
  readonly backoffMax: number;
  /** A uniform number in [0, 1) for backoff jitter. */
  readonly jitter: () => number;
}

export class Reconnect {
  readonly #backoff: Backoff;
  readonly #keepalive: number;
  readonly #deadAfterMs: number;
  /** When the relay last sent anything. */
  #lastRx = 0;
  /** Between attempts: when to try again. */
  #retryAt = Number.POSITIVE_INFINITY;
  #count = 0;
  /** The reason of the last refusal, until the tunnel is ready again (said once). */
  #lastRefusal: string | undefined;

  constructor(o: ReconnectOptions) {
    this.#backoff = new Backoff({
      baseMs: o.backoffBase * 1000,
      capMs: o.backoffMax * 1000,
      random: o.jitter,
    });
    this.#keepalive = o.keepalive;
    this.#deadAfterMs = o.keepalive * 2000;
  }

  /** Times the relay was lost or refused (not windows closing, not planned re-allocations). */
  get count(): number {
    return this.#count;
  }

  /** When to try again; undefined when no retry is scheduled. */
  get retryAt(): number | undefined {
    return Number.isFinite(this.#retryAt) ? this.#retryAt : undefined;
  }

  /** The scheduled retry is due at `now`. */
  due(now: number): boolean {
    return now >= this.#retryAt;
  }

  /** No retry is scheduled (an attempt starts, or the tunnel is torn down). */
  cancel(): void {
    this.#retryAt = Number.POSITIVE_INFINITY;
  }

  /** The relay sent something (or a control connection just opened) at `now`. */
  heard(now: number): void {
    this.#lastRx = now;
  }

  /** When the relay counts as lost if it stays silent. */
  get silentAt(): number {
    return this.#lastRx + this.#deadAfterMs;
  }

  /** The relay has been silent for two keep-alive intervals at `now`: the failure, or undefined. */
  silence(now: number): Failure | undefined {
    if (now < this.silentAt) return undefined;
    return lost(`no answer from the relay for ${this.#keepalive * 2} s`);
  }

  /** Allocated at `now`: a connection that stays up long enough starts the backoff over. */
  connected(now: number): void {
    this.#backoff.connected(now);
  }

  /** Ready: the next refusal is said again, even the same one. */
  ready(): void {
    this.#lastRefusal = undefined;
  }

  /** Forget every failure (an access window opened). */
  reset(): void {
    this.#backoff.reset();
  }

  /** The tunnel went down at `now` for `f`: schedule the retry and say so. */
  down(f: Failure, wasReady: boolean, now: number): TunnelDown {
    const delayMs = f.immediate ? 0 : this.#backoff.next(now);
    this.#count++;
    this.#retryAt = now + delayMs;
    const repeated = f.refused && this.#lastRefusal === f.reason;
    this.#lastRefusal = f.refused ? f.reason : undefined;
    return {
      type: "down",
      reason: f.reason,
      delayMs,
      failures: this.#backoff.attempts,
      wasReady,
      refused: f.refused,
      repeated,
    };
  }
}
