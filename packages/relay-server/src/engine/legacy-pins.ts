// Pinned credentials of the old scheme (signed with the token itself) are accepted only inside
// the --legacy-pinned-credentials-until window (relay-core's SharedSecretCredentials counts
// each one: stats.legacyPinnedAccepted). While any arrive the operator has credentials left to
// re-mint before the window closes: a warning says so, at most once per WINDOW_MS per engine.

import type { TurnServer } from "@turnpike/relay-core";
import type { Logger, RateLimitedLogger } from "@turnpike/runtime-kit";

/** How often the count is looked at. */
const CHECK_MS = 10_000;
/** At most one warning per engine in this long (then a summary of how many were held back). */
const WINDOW_MS = 10 * 60_000;

export class LegacyPinWarnings {
  private interval: NodeJS.Timeout | undefined;
  private seen = 0;
  private readonly limited: RateLimitedLogger;

  constructor(
    private readonly core: TurnServer,
    log: Logger,
  ) {
    this.limited = log.rateLimited({ perWindow: 1, windowMs: WINDOW_MS });
  }

  start(): void {
    this.interval = setInterval(() => this.check(), CHECK_MS);
    this.interval.unref();
  }

  /** Warns when old-scheme pinned credentials were accepted since the last look. */
  check(): void {
    const total = this.core.stats.legacyPinnedAccepted;
    if (total <= this.seen) return;
    this.limited.warn(
      "legacy-pinned",
      "accepted pinned credentials of the old scheme (--legacy-pinned-credentials-until): re-mint them before the window closes",
      { accepted: total - this.seen, acceptedTotal: total },
    );
    this.seen = total;
  }

  stop(): void {
    if (this.interval !== undefined) clearInterval(this.interval);
    this.interval = undefined;
    this.limited.flush();
  }
}
