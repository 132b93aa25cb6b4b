/**
 * Bandwidth limits (TurnServerOptions.maxBytesPerSecond, maxBytesPerSecondPerUser): token
 * buckets on the relayed payload, both directions against the same bucket, one per allocation
 * and one per user (principal) shared by all its allocations. Over the limit a datagram is a
 * counted drop ("bandwidth-limit"), never a disconnect; an RFC 6062 pipe is paused instead
 * (TurnServer.chargeConnectionBytes), since a byte stream cannot lose bytes.
 *
 * What is counted is application data: a ChannelData or DATA payload, a peer datagram; not the
 * 4-byte ChannelData header, nor STUN around a Send or Data indication. That is what
 * @turnpike/kernel-path charges its buckets with too (its `data_len`), with the same rule: the
 * allocation's bucket first, then the user's, and the first one's tokens given back when the
 * second refuses. So a binding relayed in the kernel obeys the same limits (its buckets are
 * the kernel's own state: a binding's traffic is charged where it is relayed).
 *
 * Unlike coturn's max-bps, which limits each direction of a session separately (per socket,
 * in one-second windows, whole datagrams), one bucket takes both directions: a relayed byte
 * costs the relay the same whichever way it goes, and the kernel path has one bucket per
 * allocation and per user for both. For symmetric traffic, coturn's max-bps N is about 2N here.
 *
 * The data path pays nothing when no limit is configured (Allocation.bandwidth is undefined:
 * one field read), and a few arithmetic operations per datagram when one is: no allocation,
 * no lookup.
 */
import type { AllocationId } from "../ids.js";

/** A rate and the burst allowed on top of it. */
export interface BandwidthLimit {
  /** Sustained bytes per second. */
  readonly bytesPerSecond: number;
  /** Bytes that may go at once after a quiet period (the bucket's size). */
  readonly burstBytes: number;
}

/** The burst is never below this, so one datagram of any size passes under any limit. */
export const MIN_BURST_BYTES = 65_536;

/** The limit for a rate: a burst of one second's worth, at least MIN_BURST_BYTES. */
export function bandwidthLimit(bytesPerSecond: number): BandwidthLimit {
  return { bytesPerSecond, burstBytes: Math.max(bytesPerSecond, MIN_BURST_BYTES) };
}

/**
 * A token bucket over relayed bytes. The server's own is TokenBucket; a runtime whose engines
 * share a per-user limit (worker threads) gives its own through UserBandwidth.
 */
export interface ByteBucket {
  /** A datagram of `bytes` at `now` (ms): true and taken, or false (over the limit, nothing taken). */
  take(bytes: number, now: number): boolean;
  /** Give back `bytes` taken a moment ago (another bucket refused the same datagram). */
  refund(bytes: number): void;
  /**
   * Stream bytes already on their way (an RFC 6062 pipe): taken even into debt. Returns the ms
   * until the bucket is out of debt, for which the caller pauses reading (0: go on).
   */
  charge(bytes: number, now: number): number;
}

export class TokenBucket implements ByteBucket {
  readonly #perMs: number;
  readonly #burst: number;
  /**
   * [tokens, at]: the level and when it was computed. A Float64Array, not two number fields:
   * both change per relayed datagram, and a double written to a field may cost V8 a heap
   * number each time (measured: a garbage collection per so many datagrams); a typed array
   * element never does.
   */
  readonly #state = new Float64Array(2);

  /** Full at `now`. */
  constructor(limit: BandwidthLimit, now: number) {
    this.#perMs = limit.bytesPerSecond / 1000;
    this.#burst = limit.burstBytes;
    this.#state[0] = limit.burstBytes;
    this.#state[1] = now;
  }

  take(bytes: number, now: number): boolean {
    const tokens = this.#refill(now);
    if (tokens < bytes) return false;
    this.#state[0] = tokens - bytes;
    return true;
  }

  refund(bytes: number): void {
    this.#state[0] = Math.min(this.#burst, this.#state[0]! + bytes);
  }

  charge(bytes: number, now: number): number {
    const tokens = this.#refill(now) - bytes;
    this.#state[0] = tokens;
    return tokens >= 0 ? 0 : Math.ceil(-tokens / this.#perMs);
  }

  /** Tokens at `now` (a clock that stands still or steps back adds none). */
  #refill(now: number): number {
    const state = this.#state;
    const elapsed = now - state[1]!;
    if (!(elapsed > 0)) return state[0]!;
    state[1] = now;
    const tokens = Math.min(state[0]! + elapsed * this.#perMs, this.#burst);
    state[0] = tokens;
    return tokens;
  }
}

/** A user's bucket and its identity (stable while the user holds allocations). */
export interface UserBucket {
  /** Names the bucket for a lower data path (offload-channel's userBucket); never 0. */
  readonly id: number;
  readonly bucket: ByteBucket;
}

/**
 * Where per-user buckets live. The server keeps its own (LocalUserBandwidth); engines that must
 * hold one per-user limit together (the relay's workers) inject one backed by memory they
 * share, as they do for AllocationQuota (README.md, "Bandwidth limits").
 */
export interface UserBandwidth {
  /** The bucket `principal`'s allocations share; each new allocation of it acquires it once. */
  acquire(principal: string, now: number): UserBucket;
  /** One allocation of `principal` ended. */
  release(principal: string): void;
}

/** Per-user buckets of one engine: made full when a user's first allocation comes, gone with its last. */
export class LocalUserBandwidth implements UserBandwidth {
  readonly #limit: BandwidthLimit;
  readonly #users = new Map<string, { user: UserBucket; held: number }>();
  #nextId = 1;

  constructor(limit: BandwidthLimit) {
    this.#limit = limit;
  }

  acquire(principal: string, now: number): UserBucket {
    let entry = this.#users.get(principal);
    if (entry === undefined) {
      const user = { id: this.#nextId++, bucket: new TokenBucket(this.#limit, now) };
      entry = { user, held: 0 };
      this.#users.set(principal, entry);
    }
    entry.held++;
    return entry.user;
  }

  release(principal: string): void {
    const entry = this.#users.get(principal);
    if (entry !== undefined && --entry.held <= 0) this.#users.delete(principal);
  }
}

/** A bucket as a lower data path needs it: an identity and its parameters, all numbers. */
export interface BucketRef extends BandwidthLimit {
  readonly id: number;
}

/** The buckets one allocation's relayed bytes are charged to. */
export class AllocationBandwidth {
  readonly #own: ByteBucket | undefined;
  readonly #user: ByteBucket | undefined;
  /** For offload-channel: the allocation's bucket (id: the allocation id) and the user's. */
  readonly allocationBucket: BucketRef | undefined;
  readonly userBucket: BucketRef | undefined;

  constructor(
    own: { bucket: ByteBucket; ref: BucketRef } | undefined,
    user: { bucket: ByteBucket; ref: BucketRef } | undefined,
  ) {
    this.#own = own?.bucket;
    this.#user = user?.bucket;
    this.allocationBucket = own?.ref;
    this.userBucket = user?.ref;
  }

  /** A datagram of `bytes` payload: true when both buckets hold it (and it is taken from both). */
  admit(bytes: number, now: number): boolean {
    const own = this.#own;
    if (own !== undefined && !own.take(bytes, now)) return false;
    const user = this.#user;
    if (user === undefined || user.take(bytes, now)) return true;
    own?.refund(bytes);
    return false;
  }

  /** Stream bytes (RFC 6062 pipe): charged to both; ms to pause reading (0: none). */
  charge(bytes: number, now: number): number {
    const own = this.#own?.charge(bytes, now) ?? 0;
    const user = this.#user?.charge(bytes, now) ?? 0;
    return Math.max(own, user);
  }
}

/** The server's limits: which buckets each new allocation gets. */
export class BandwidthLimits {
  readonly perAllocation: BandwidthLimit | undefined;
  readonly perUser: BandwidthLimit | undefined;
  readonly #users: UserBandwidth | undefined;

  constructor(options: {
    maxBytesPerSecond?: number | undefined;
    maxBytesPerSecondPerUser?: number | undefined;
    userBandwidth?: UserBandwidth | undefined;
  }) {
    const own = rate("maxBytesPerSecond", options.maxBytesPerSecond);
    const user = rate("maxBytesPerSecondPerUser", options.maxBytesPerSecondPerUser);
    this.perAllocation = own === undefined ? undefined : bandwidthLimit(own);
    this.perUser = user === undefined ? undefined : bandwidthLimit(user);
    this.#users =
      this.perUser === undefined
        ? undefined
        : (options.userBandwidth ?? new LocalUserBandwidth(this.perUser));
  }

  /** The buckets of allocation `id` of `principal`, or undefined when nothing is limited. */
  open(id: AllocationId, principal: string, now: number): AllocationBandwidth | undefined {
    const perAllocation = this.perAllocation;
    const users = this.#users;
    if (perAllocation === undefined && users === undefined) return undefined;
    const own =
      perAllocation === undefined
        ? undefined
        : { bucket: new TokenBucket(perAllocation, now), ref: { id, ...perAllocation } };
    let user: { bucket: ByteBucket; ref: BucketRef } | undefined;
    if (users !== undefined) {
      const held = users.acquire(principal, now);
      user = { bucket: held.bucket, ref: { id: held.id, ...this.perUser! } };
    }
    return new AllocationBandwidth(own, user);
  }

  /** The allocation of `principal` that `open` gave buckets to ended. */
  close(principal: string): void {
    this.#users?.release(principal);
  }
}

/** A configured rate: undefined (or 0) is no limit; anything but a positive number is refused. */
function rate(option: string, value: number | undefined): number | undefined {
  if (value === undefined || value === 0) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`${option} must be a positive number of bytes per second, got ${value}`);
  }
  return value;
}
