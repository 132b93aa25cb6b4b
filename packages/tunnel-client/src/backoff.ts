// Reconnect delays: exponential backoff with "full jitter" (AWS Architecture Blog, "Exponential
// Backoff And Jitter", 2015): sleep = random(0, min(cap, base * 2^attempt)). Full jitter spreads
// a fleet of tunnels that lost the same relay at the same instant, so the relay is not hit by a
// synchronized reconnect storm when it comes back. Pure: randomness and time are parameters.

export interface BackoffOptions {
  /** Milliseconds; the first window is [0, base). */
  readonly baseMs: number;
  /** Milliseconds; no window is ever larger. */
  readonly capMs: number;
  /** A uniform number in [0, 1). Injected so tests replay exactly. */
  readonly random: () => number;
  /**
   * A connection that stayed up this long (ms) counts as stable: the next failure starts over
   * at attempt 0. Default: capMs (a relay that flaps faster than the cap keeps backing off).
   */
  readonly stableAfterMs?: number;
}

export class Backoff {
  private attempt = 0;
  private connectedAt: number | undefined;

  constructor(private readonly options: BackoffOptions) {}

  /** Failures in a row since the last stable connection. */
  get attempts(): number {
    return this.attempt;
  }

  /** The window the next delay is drawn from (ms), before jitter. */
  window(): number {
    const { baseMs, capMs } = this.options;
    // 2^attempt overflows to Infinity long after it passed any sane cap; min() keeps it finite.
    return Math.min(capMs, baseMs * 2 ** Math.min(this.attempt, 1023));
  }

  /** The delay before the next attempt (ms); counts one more failure. */
  next(now: number): number {
    this.maybeReset(now);
    this.connectedAt = undefined;
    const delay = Math.floor(this.options.random() * this.window());
    this.attempt++;
    return delay;
  }

  /** The connection is up (allocation succeeded) at `now`. */
  connected(now: number): void {
    this.connectedAt = now;
  }

  /** Forget every failure (e.g. the operator changed the configuration). */
  reset(): void {
    this.attempt = 0;
    this.connectedAt = undefined;
  }

  private maybeReset(now: number): void {
    if (this.connectedAt === undefined) return;
    const stable = this.options.stableAfterMs ?? this.options.capMs;
    if (now - this.connectedAt >= stable) this.attempt = 0;
  }
}
