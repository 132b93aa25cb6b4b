/**
 * The requests a client sends on its control connection, and the ones in flight until answered
 * or timed out (RFC 8489 §6.2; transaction.ts keeps each one's clock). What each carries:
 *
 *   Allocate          REQUESTED-TRANSPORT, REQUESTED-ADDRESS-FAMILY, LIFETIME (RFC 8656 §7.1,
 *                     RFC 6062 §4.1)
 *   Refresh           LIFETIME, 0 to delete the allocation (RFC 8656 §8.1)
 *   CreatePermission  XOR-PEER-ADDRESS (RFC 8656 §10.1)
 *   ChannelBind       CHANNEL-NUMBER, XOR-PEER-ADDRESS (RFC 8656 §12.1)
 *   Connect           XOR-PEER-ADDRESS (RFC 6062 §4.3)
 *   Binding           nothing: the keep-alive (RFC 8489 §6.3.2), unsigned
 *
 * The others are signed with the long-term credentials (authentication.ts); every request
 * carries SOFTWARE when configured (RFC 8656 §5) and ends with FINGERPRINT (RFC 8489 §14.7).
 */
import { AttributeType, MessageClass, TransportProtocol } from "../codec/constants.js";
import { bytesKey, type StunMessage } from "../codec/message.js";
import { StunMessageBuilder } from "../codec/message-builder.js";
import type { RequestSigner, Signature } from "./authentication.js";
import {
  methodOf,
  newTransactionId,
  type Operation,
  type RetransmissionTiming,
  type Transaction,
  TransactionClock,
} from "./transaction.js";
import type { TurnClientOptions, TurnClientOutput, TurnClientStats } from "./types.js";

export class Requests {
  readonly #inFlight = new Map<string, Transaction>();
  readonly #options: TurnClientOptions;
  readonly #requestedTransport: "udp" | "tcp";
  readonly #timing: RetransmissionTiming;
  readonly #signer: RequestSigner;
  readonly #stats: TurnClientStats;
  readonly #emit: (output: TurnClientOutput) => void;
  #lastSentAt = 0;

  constructor(
    options: TurnClientOptions,
    requestedTransport: "udp" | "tcp",
    timing: RetransmissionTiming,
    signer: RequestSigner,
    stats: TurnClientStats,
    emit: (output: TurnClientOutput) => void,
  ) {
    this.#options = options;
    this.#requestedTransport = requestedTransport;
    this.#timing = timing;
    this.#signer = signer;
    this.#stats = stats;
    this.#emit = emit;
  }

  /** When the last request went out (a keep-alive is due an interval later). */
  get lastSentAt(): number {
    return this.#lastSentAt;
  }

  /**
   * Send the request for `op` in a new transaction. `staleRetries` and `challengeRetries`
   * count the 438 and 401 answers that led to it (responses.ts bounds them).
   */
  start(op: Operation, now: number, staleRetries = 0, challengeRetries = 0): void {
    const method = methodOf(op);
    const id = newTransactionId(this.#options.random);
    const b = new StunMessageBuilder(method, MessageClass.Request, id);
    if (this.#options.software !== undefined) {
      b.string(AttributeType.Software, this.#options.software);
    }
    this.#fill(b, op);
    let signature: Signature | undefined;
    if (op.kind !== "binding") signature = this.#signer.sign(b, op.kind === "allocate");
    const bytes = b.fingerprint().build();
    const tx: Transaction = {
      key: bytesKey(id),
      method,
      op,
      bytes,
      signature,
      clock: new TransactionClock(this.#timing, now),
      staleRetries,
      challengeRetries,
    };
    this.#inFlight.set(tx.key, tx);
    markInFlight(op, true);
    this.#stats.requests++;
    this.#lastSentAt = now;
    this.#emit({ type: "transmit", data: bytes });
  }

  /**
   * The transaction `response` answers: RFC 8489 §6.3.3, same transaction id and method as an
   * outstanding request (else undefined, and the response is dropped).
   */
  answered(response: StunMessage): Transaction | undefined {
    const tx = this.#inFlight.get(bytesKey(response.transactionId));
    return tx !== undefined && tx.method === response.method ? tx : undefined;
  }

  /** `tx` got its answer (or timed out): it is no longer in flight. */
  finish(tx: Transaction): void {
    this.#inFlight.delete(tx.key);
    markInFlight(tx.op, false);
  }

  /** Whether a request of this kind is in flight. */
  inFlight(kind: Operation["kind"]): boolean {
    for (const tx of this.#inFlight.values()) if (tx.op.kind === kind) return true;
    return false;
  }

  /** Forget every request in flight: answers to them will be dropped. */
  clear(): void {
    this.#inFlight.clear();
  }

  /** The earliest retransmission or timeout, or infinity with nothing in flight. */
  nextAt(): number {
    let next = Number.POSITIVE_INFINITY;
    for (const tx of this.#inFlight.values()) if (tx.clock.nextAt < next) next = tx.clock.nextAt;
    return next;
  }

  /**
   * Retransmissions and timeouts due at `now` (RFC 8489 §6.2.1). A transaction that timed out
   * is finished, then given to `timedOut`, which may end others (they are then skipped).
   */
  expire(now: number, timedOut: (tx: Transaction, now: number) => void): void {
    for (const tx of [...this.#inFlight.values()]) {
      if (tx.clock.nextAt > now || this.#inFlight.get(tx.key) !== tx) continue;
      if (tx.clock.expire(now) === "retransmit") {
        this.#stats.retransmissions++;
        this.#emit({ type: "transmit", data: tx.bytes });
      } else {
        this.finish(tx);
        this.#stats.timeouts++;
        timedOut(tx, now);
      }
    }
  }

  #fill(b: StunMessageBuilder, op: Operation): void {
    switch (op.kind) {
      case "allocate": {
        b.requestedTransport(
          this.#requestedTransport === "tcp" ? TransportProtocol.Tcp : TransportProtocol.Udp,
        );
        // RFC 8656 §7.1: IPv4 is the default; only ask when IPv6 is wanted.
        if (this.#options.family === 6) b.addressFamily(AttributeType.RequestedAddressFamily, 6);
        if (this.#options.lifetime !== undefined) {
          b.uint32(AttributeType.Lifetime, this.#options.lifetime);
        }
        return;
      }
      case "refresh":
        if (op.lifetime !== undefined) b.uint32(AttributeType.Lifetime, op.lifetime);
        return;
      case "release":
        b.uint32(AttributeType.Lifetime, 0);
        return;
      case "permission": {
        const p = op.permission;
        b.xorAddress(AttributeType.XorPeerAddress, { family: p.family, address: p.ip, port: 0 });
        return;
      }
      case "channel":
        b.channelNumber(op.channel.number);
        b.xorAddress(AttributeType.XorPeerAddress, op.channel.peer);
        return;
      case "connect":
        b.xorAddress(AttributeType.XorPeerAddress, op.peer);
        return;
      case "binding":
        return;
    }
  }
}

/** A permission or channel with a request in flight is not sent again meanwhile. */
function markInFlight(op: Operation, inFlight: boolean): void {
  if (op.kind === "permission") op.permission.inFlight = inFlight;
  else if (op.kind === "channel") op.channel.inFlight = inFlight;
}
