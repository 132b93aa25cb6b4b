/**
 * Client transactions (RFC 8489 §6.2): when to send a request again, when to give up.
 *
 * Over UDP a request is sent Rc times, the gaps doubling from RTO (0, RTO, 3 RTO, 7 RTO, ...),
 * and after the last send the client waits Rm * RTO: with the defaults 500 ms, 7 and 16 the
 * transaction times out 39.5 s after the first send (§6.2.1). Over TCP/TLS the stream is
 * reliable, so the request is sent once and the transaction simply times out after 39.5 s
 * (§6.2.2).
 */
import type { TransportAddress } from "../codec/address.js";
import { Method } from "../codec/constants.js";
import type { RandomSource } from "../rng.js";
import type { Signature } from "./authentication.js";
import type { RetransmissionOptions } from "./types.js";
import type { ChannelState, PermissionState } from "./wants.js";

export interface RetransmissionTiming {
  readonly reliable: boolean;
  readonly rto: number;
  readonly rc: number;
  readonly rm: number;
  readonly streamTimeout: number;
}

export function retransmissionTiming(
  reliable: boolean,
  options: RetransmissionOptions | undefined,
): RetransmissionTiming {
  return {
    reliable,
    rto: positive(options?.rto, 500),
    rc: Math.max(1, Math.floor(positive(options?.rc, 7))),
    rm: positive(options?.rm, 16),
    streamTimeout: positive(options?.streamTimeout, 39_500),
  };
}

function positive(value: number | undefined, fallback: number): number {
  return value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback;
}

/** The send/retransmit/timeout clock of one request. */
export class TransactionClock {
  /** How many times the request has been sent. */
  sends = 1;
  /** The instant of the next retransmission, or of the timeout once `sends` reached Rc. */
  nextAt: number;
  #interval: number;
  readonly #timing: RetransmissionTiming;

  constructor(timing: RetransmissionTiming, now: number) {
    this.#timing = timing;
    this.#interval = timing.rto;
    this.nextAt = timing.reliable
      ? now + timing.streamTimeout
      : timing.rc > 1
        ? now + timing.rto
        : now + timing.rm * timing.rto;
  }

  /**
   * Called at `nextAt`: "retransmit" (and the clock moved on) or "timeout" (the transaction is
   * over, RFC 8489 §6.2.1).
   */
  expire(now: number): "retransmit" | "timeout" {
    const t = this.#timing;
    if (t.reliable || this.sends >= t.rc) return "timeout";
    this.sends++;
    this.#interval *= 2;
    this.nextAt = this.sends >= t.rc ? now + t.rm * t.rto : now + this.#interval;
    return "retransmit";
  }
}

/** What a request is for, and what its answer changes. */
export type Operation =
  | { readonly kind: "allocate" }
  | { readonly kind: "refresh"; readonly lifetime: number | undefined }
  | { readonly kind: "release" }
  | { readonly kind: "permission"; readonly permission: PermissionState }
  | { readonly kind: "channel"; readonly channel: ChannelState }
  | { readonly kind: "connect"; readonly peer: TransportAddress }
  | { readonly kind: "binding" };

/** One request in flight. */
export interface Transaction {
  readonly key: string;
  readonly method: number;
  readonly op: Operation;
  readonly bytes: Uint8Array;
  readonly signature: Signature | undefined;
  readonly clock: TransactionClock;
  /** Answers that made us send the request again with a new transaction (bounded). */
  readonly staleRetries: number;
  readonly challengeRetries: number;
}

/** The STUN method of an operation's request. */
export function methodOf(op: Operation): number {
  switch (op.kind) {
    case "allocate":
      return Method.Allocate;
    case "refresh":
    case "release":
      return Method.Refresh;
    case "permission":
      return Method.CreatePermission;
    case "channel":
      return Method.ChannelBind;
    case "connect":
      return Method.Connect;
    case "binding":
      return Method.Binding;
  }
}

/** RFC 8489 §5: a new 96-bit transaction id, from the injected random source. */
export function newTransactionId(random: RandomSource): Uint8Array {
  const id = new Uint8Array(12);
  random.fillBytes(id);
  return id;
}
