/**
 * A token bucket per source IP address, for the responses a server sends to requests that
 * carry no valid credentials (Binding successes, 401/438 challenges, 400s before
 * authentication). Those answers are several times larger than the requests that trigger
 * them, so without a cap a relay is a UDP amplifier for spoofed sources (RFC 8489 §16.1.2
 * warns about it; RFC 8656 §21.3.1 about resource exhaustion). Authenticated traffic is not
 * limited here: credentials and the allocation quotas govern it.
 */
import { InsertionOrderedMap } from "../insertion-order.js";

export class SourceRateLimiter {
  readonly #buckets = new InsertionOrderedMap<string, { tokens: number; at: number }>();
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #maxSources: number;

  /**
   * @param perSecond sustained responses per second per source IP (0 disables the limit)
   * @param burst how many may go out at once after a quiet period
   * @param maxSources sources tracked at once; beyond, the oldest entry is forgotten (memory
   *   stays bounded under a spray of spoofed addresses; a forgotten source starts full again)
   */
  constructor(perSecond: number, burst: number = perSecond * 2, maxSources = 65_536) {
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#maxSources = maxSources;
  }

  /** Take one token for `source` at `now` (ms); false = over the limit, send nothing. */
  allow(source: string, now: number): boolean {
    if (this.#perSecond <= 0) return true;
    let bucket = this.#buckets.get(source);
    if (bucket === undefined) {
      this.#buckets.evictOldestAtCap(this.#maxSources);
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(source, bucket);
    } else if (now > bucket.at) {
      bucket.tokens = Math.min(
        this.#burst,
        bucket.tokens + ((now - bucket.at) * this.#perSecond) / 1000,
      );
      bucket.at = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get trackedSources(): number {
    return this.#buckets.size;
  }
}
