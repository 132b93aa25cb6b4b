/**
 * RFC 8656 §7.2 quotas: allocations per user (486 Allocation Quota Reached) and for the whole
 * server (508 Insufficient Capacity). A server counts its own by default; several engines
 * that must hold one limit together (the relay's worker threads) inject a shared ledger with
 * the same two calls.
 */
export interface AllocationQuota {
  /** Take one allocation for `principal`: 0 when granted, else the error code to answer. */
  acquire(principal: string): 0 | 486 | 508;
  /** Give back one allocation `acquire` granted. */
  release(principal: string): void;
}

/** The quota of one server on its own. */
export class LocalAllocationQuota implements AllocationQuota {
  readonly #perUser = new Map<string, number>();
  #total = 0;
  readonly #maxTotal: number;
  readonly #maxPerUser: number;

  constructor(maxTotal = Number.POSITIVE_INFINITY, maxPerUser = Number.POSITIVE_INFINITY) {
    this.#maxTotal = maxTotal;
    this.#maxPerUser = maxPerUser;
  }

  acquire(principal: string): 0 | 486 | 508 {
    const held = this.#perUser.get(principal) ?? 0;
    if (held >= this.#maxPerUser) return 486;
    if (this.#total >= this.#maxTotal) return 508;
    this.#perUser.set(principal, held + 1);
    this.#total++;
    return 0;
  }

  release(principal: string): void {
    const held = this.#perUser.get(principal);
    if (held === undefined) return;
    this.#total--;
    if (held > 1) this.#perUser.set(principal, held - 1);
    else this.#perUser.delete(principal);
  }
}
