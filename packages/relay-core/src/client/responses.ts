/**
 * What each answer from the server changes, method by method, and what a request left
 * unanswered does (RFC 8489 §6.2.1: 39.5 s by default, transaction.ts):
 *
 *   Allocate          "allocated" (the wanted permissions and channels go out then), or
 *                     "allocate-failed", with the ALTERNATE-SERVER of a 300 (RFC 8656 §7.3,
 *                     §7.4; RFC 8489 §10)
 *   Refresh           "refreshed"; a LIFETIME of 0 granted is "released"; an error or a
 *                     timeout is "refresh-failed" (437: the allocation is gone, RFC 8656 §8.3)
 *   release           "released" whatever the answer (437: already gone, RFC 8656 §8.3)
 *   CreatePermission  "permission-created" once, or "permission-failed" (RFC 8656 §10.3)
 *   ChannelBind       "channel-bound" once, the peer's permission refreshed too, or
 *                     "channel-bind-failed" (RFC 8656 §12.3)
 *   Connect           "connected" with the CONNECTION-ID, or "connect-failed" (RFC 6062 §4.3)
 *   Binding           nothing: that the server answers is the point (the keep-alive)
 *
 * An answer counts only when it matches a request in flight (same transaction id and method,
 * RFC 8489 §6.3) and, when that request was signed, carries our MESSAGE-INTEGRITY (§9.2.5; a
 * 401 or 438 cannot). 401, 438 and 441 get a new request, signed as they say
 * (authentication.ts); any other error ends the request.
 */
import type { TransportAddress } from "../codec/address.js";
import {
  hasAttribute,
  readAddress,
  readErrorCode,
  readUint32,
  readXorAddress,
  verifyMessageIntegrity,
} from "../codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { PeerConnectionId } from "../ids.js";
import type { ClientAllocation } from "./allocation.js";
import type { RequestSigner } from "./authentication.js";
import type { ClientSettings } from "./options.js";
import type { Requests } from "./requests.js";
import type { Transaction } from "./transaction.js";
import type { TurnClientOutput } from "./types.js";
import {
  CHANNEL_LIFETIME_MS,
  type ChannelState,
  type PermissionState,
  type Wants,
} from "./wants.js";

/** RFC 8656 §6: the default lifetime, taken when an Allocate success carries no LIFETIME. */
const DEFAULT_ALLOCATION_LIFETIME = 600;

/** An ERROR-CODE (RFC 8489 §14.8): the code and its reason phrase. */
type StunError = { readonly code: number; readonly reason: string };

export class Responses {
  readonly #settings: ClientSettings;
  readonly #allocation: ClientAllocation;
  readonly #wants: Wants;
  readonly #signer: RequestSigner;
  readonly #requests: Requests;
  readonly #emit: (output: TurnClientOutput) => void;

  constructor(
    settings: ClientSettings,
    allocation: ClientAllocation,
    wants: Wants,
    signer: RequestSigner,
    requests: Requests,
    emit: (output: TurnClientOutput) => void,
  ) {
    this.#settings = settings;
    this.#allocation = allocation;
    this.#wants = wants;
    this.#signer = signer;
    this.#requests = requests;
    this.#emit = emit;
  }

  /**
   * A success or error response. False when it answers no request of ours or is not signed
   * with our key: it is then dropped and changes nothing.
   */
  handle(msg: StunMessage, now: number): boolean {
    const tx = this.#requests.answered(msg);
    if (tx === undefined) return false;
    if (msg.messageClass === MessageClass.SuccessResponse) {
      // RFC 8489 §9.2.5: a success to a signed request must carry our MESSAGE-INTEGRITY.
      if (tx.signature !== undefined && !verifyMessageIntegrity(msg, tx.signature.key)) {
        return false;
      }
      this.#requests.finish(tx);
      this.#answered(tx, msg, undefined, now);
      return true;
    }
    const error = readErrorCode(msg);
    if (error === undefined) return false;
    // Errors other than challenges are signed too when the server could check our request; a
    // forged one (bad MESSAGE-INTEGRITY) is discarded. 401/438 cannot be signed.
    if (
      tx.signature !== undefined &&
      hasAttribute(msg, AttributeType.MessageIntegrity) &&
      !verifyMessageIntegrity(msg, tx.signature.key)
    ) {
      return false;
    }
    this.#requests.finish(tx);
    if (!this.#retryAfterError(tx, msg, error.code, now)) this.#answered(tx, msg, error, now);
    return true;
  }

  /** `tx` got no answer in time (it is no longer in flight). */
  timedOut(tx: Transaction, now: number): void {
    const op = tx.op;
    const peer =
      op.kind === "permission"
        ? { family: op.permission.family, address: op.permission.ip, port: 0 }
        : op.kind === "channel"
          ? op.channel.peer
          : op.kind === "connect"
            ? op.peer
            : undefined;
    this.#emit(
      peer === undefined
        ? { type: "transaction-timeout", method: tx.method }
        : { type: "transaction-timeout", method: tx.method, peer },
    );
    switch (op.kind) {
      case "allocate":
        if (this.#allocation.state === "allocating") this.#toFailed();
        return;
      case "refresh":
        if (this.#allocation.state === "allocated") this.#toFailed();
        return;
      case "release":
        this.#emit({ type: "released" });
        return;
      case "permission":
        // Still wanted: try again at the next timeout (each attempt lasts 39.5 s).
        op.permission.refreshAt = now;
        return;
      case "channel":
        if (!op.channel.wanted && !op.channel.bound) this.#wants.forgetChannel(op.channel);
        op.channel.refreshAt = now;
        return;
      default:
        return;
    }
  }

  /** 401 / 438 / 441 (RFC 8489 §9.2.5, RFC 8656 §5): true when a retry went out. */
  #retryAfterError(tx: Transaction, msg: StunMessage, code: number, now: number): boolean {
    const op = tx.op;
    if (code === ErrorCode.Unauthorized || code === ErrorCode.StaleNonce) {
      const challenge = this.#signer.readChallenge(msg);
      if (challenge === undefined) return false;
      if (code === ErrorCode.StaleNonce) {
        if (tx.staleRetries >= this.#settings.maxStaleRetries) return false;
        this.#signer.learn(challenge);
        this.#requests.start(op, now, tx.staleRetries + 1, tx.challengeRetries);
        return true;
      }
      // 401: the first answer to an unsigned request is the challenge; a signed request gets one
      // more try (a realm or nonce change), then the credentials are wrong.
      if (tx.challengeRetries >= 1 && tx.signature !== undefined) return false;
      this.#signer.learn(challenge);
      this.#requests.start(op, now, tx.staleRetries, tx.challengeRetries + 1);
      return true;
    }
    if (
      code === ErrorCode.WrongCredentials &&
      op.kind !== "allocate" &&
      this.#signer.fallBackToAllocationCredentials(tx.signature)
    ) {
      this.#requests.start(op, now, tx.staleRetries, tx.challengeRetries);
      return true;
    }
    return false;
  }

  /** A success (`error` undefined) or a final error response to `tx`, by method. */
  #answered(tx: Transaction, msg: StunMessage, error: StunError | undefined, now: number): void {
    const op = tx.op;
    switch (op.kind) {
      case "allocate":
        this.#allocateAnswered(tx, msg, error, now);
        return;
      case "refresh":
        this.#refreshAnswered(tx, msg, op.lifetime, error, now);
        return;
      case "release":
        // RFC 8656 §8.3: a 437 means the allocation was already gone, which is what we wanted.
        this.#emit({ type: "released" });
        return;
      case "permission":
        this.#permissionAnswered(op.permission, error, now);
        return;
      case "channel":
        this.#channelAnswered(op.channel, error, now);
        return;
      case "connect":
        this.#connectAnswered(op.peer, msg, error);
        return;
      case "binding":
        return;
    }
  }

  /** RFC 8656 §7.3, §7.4; a 300 names the server to try instead (RFC 8489 §10). */
  #allocateAnswered(
    tx: Transaction,
    msg: StunMessage,
    error: StunError | undefined,
    now: number,
  ): void {
    const allocation = this.#allocation;
    if (allocation.state !== "allocating") return;
    if (error !== undefined) {
      const alternate =
        error.code === ErrorCode.TryAlternate
          ? readAddress(msg, AttributeType.AlternateServer)
          : undefined;
      this.#fail("allocate-failed", error.code, error.reason, alternate);
      return;
    }
    const relayed = readXorAddress(msg, AttributeType.XorRelayedAddress);
    if (relayed === undefined) {
      this.#fail("allocate-failed", 0, "no XOR-RELAYED-ADDRESS in the Allocate success");
      return;
    }
    const lifetime = readUint32(msg, AttributeType.Lifetime) ?? DEFAULT_ALLOCATION_LIFETIME;
    allocation.relayed = relayed;
    allocation.mapped = readXorAddress(msg, AttributeType.XorMappedAddress);
    this.#signer.allocated(tx.signature);
    allocation.state = "allocated";
    allocation.granted(lifetime, now);
    this.#emit({ type: "allocated", relayed, mapped: allocation.mapped, lifetime });
    // Permissions and channels asked for while allocating go out now.
    for (const p of this.#wants.permissions.values()) {
      if (p.explicit && !p.inFlight) {
        this.#requests.start({ kind: "permission", permission: p }, now);
      }
    }
    for (const c of this.#wants.channels.values()) {
      if (c.wanted && !c.inFlight) this.#requests.start({ kind: "channel", channel: c }, now);
    }
  }

  /** RFC 8656 §8.3: the lifetime granted (0: deleted), or the allocation is lost (437). */
  #refreshAnswered(
    tx: Transaction,
    msg: StunMessage,
    asked: number | undefined,
    error: StunError | undefined,
    now: number,
  ): void {
    const allocation = this.#allocation;
    if (allocation.state !== "allocated") return;
    if (error !== undefined) {
      this.#fail("refresh-failed", error.code, error.reason);
      return;
    }
    const lifetime = readUint32(msg, AttributeType.Lifetime) ?? asked ?? allocation.lifetime;
    if (lifetime === 0) {
      allocation.end("released");
      this.#wants.clear();
      this.#emit({ type: "released" });
      return;
    }
    // Credentials the server accepted for this allocation are the ones to fall back to
    // after a later 441 (renewed REST credentials it took replace the creating ones).
    this.#signer.accepted(tx.signature);
    allocation.granted(lifetime, now);
    this.#emit({ type: "refreshed", lifetime });
  }

  /** RFC 8656 §10.3: installed (refreshed from now on), or refused and no longer wanted. */
  #permissionAnswered(p: PermissionState, error: StunError | undefined, now: number): void {
    if (error === undefined) {
      p.refreshAt = now + this.#settings.permissionRefreshMs;
      if (!p.created) {
        p.created = true;
        if (p.explicit) this.#emit({ type: "permission-created", peerIp: p.ip });
      }
      return;
    }
    const wasExplicit = p.explicit;
    p.explicit = false;
    // Channels to this IP still keep it (ChannelBind installs it too).
    if (p.channels === 0) this.#wants.permissions.delete(p.ip);
    else p.refreshAt = now + this.#settings.permissionRefreshMs;
    if (wasExplicit) {
      this.#emit({
        type: "permission-failed",
        peerIp: p.ip,
        code: error.code,
        reason: error.reason,
      });
    }
  }

  /** RFC 8656 §12.3: bound (the peer's permission with it), or refused and no longer wanted. */
  #channelAnswered(c: ChannelState, error: StunError | undefined, now: number): void {
    if (error === undefined) {
      c.refreshAt = now + this.#settings.channelRefreshMs;
      c.expiresAt = now + CHANNEL_LIFETIME_MS;
      const p = this.#wants.permissions.get(c.ip);
      if (p !== undefined && !p.inFlight) p.refreshAt = now + this.#settings.permissionRefreshMs;
      if (!c.bound) {
        c.bound = true;
        if (c.wanted) this.#emit({ type: "channel-bound", peer: c.peer, channel: c.number });
      }
      return;
    }
    const wasWanted = c.wanted;
    if (c.wanted) {
      c.wanted = false;
      this.#wants.releasePermissionRef(c);
    }
    // A binding the server still holds keeps its number until it expires (RFC 8656 §12).
    if (!c.bound) this.#wants.forgetChannel(c);
    if (wasWanted) {
      const { code, reason } = error;
      this.#emit({ type: "channel-bind-failed", peer: c.peer, channel: c.number, code, reason });
    }
  }

  /** RFC 6062 §4.3: the server's connection to the peer, named by its CONNECTION-ID. */
  #connectAnswered(peer: TransportAddress, msg: StunMessage, error: StunError | undefined): void {
    if (error !== undefined) {
      this.#emit({ type: "connect-failed", peer, code: error.code, reason: error.reason });
      return;
    }
    const connectionId = readUint32(msg, AttributeType.ConnectionId) as
      | PeerConnectionId
      | undefined;
    if (connectionId === undefined) {
      const reason = "no CONNECTION-ID in the Connect success";
      this.#emit({ type: "connect-failed", peer, code: 0, reason });
      return;
    }
    this.#emit({ type: "connected", peer, connectionId });
  }

  #fail(
    type: "allocate-failed" | "refresh-failed",
    code: number,
    reason: string,
    alternateServer?: TransportAddress,
  ): void {
    this.#toFailed();
    if (type === "allocate-failed" && alternateServer !== undefined) {
      this.#emit({ type, code, reason, alternateServer });
    } else {
      this.#emit({ type, code, reason });
    }
  }

  /** The allocation is lost (or never made): nothing in flight or scheduled any more. */
  #toFailed(): void {
    this.#allocation.end("failed");
    this.#requests.clear();
  }
}
