/**
 * RFC 6062 §4.3: the ConnectionBind a runtime writes first on a new TCP/TLS data connection to
 * the server, and the reading of its answer. The request is signed like the control
 * connection's, with its REALM and NONCE; a 401/438 on the data connection brings a nonce of
 * its own, answered once with a signed retry, without disturbing the control connection's.
 */

import { hasAttribute, readErrorCode, verifyMessageIntegrity } from "../codec/attributes.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../codec/constants.js";
import { bytesKey, decodeStun } from "../codec/message.js";
import { StunMessageBuilder } from "../codec/message-builder.js";
import type { PeerConnectionId } from "../ids.js";
import { evictOldestAtCap } from "../insertion-order.js";
import type { RandomSource } from "../rng.js";
import type { Challenge, RequestSigner, Signature } from "./authentication.js";
import { newTransactionId } from "./transaction.js";
import type { ConnectionBindResult } from "./types.js";

/** ConnectionBind requests remembered for their answers (RFC 6062 §4.3), oldest evicted. */
const MAX_PENDING_CONNECTION_BINDS = 1024;

interface PendingConnectionBind {
  readonly connectionId: PeerConnectionId;
  readonly signature: Signature | undefined;
  readonly retried: boolean;
}

export class ConnectionBinds {
  readonly #pending = new Map<string, PendingConnectionBind>();
  readonly #signer: RequestSigner;
  readonly #random: RandomSource;
  readonly #software: string | undefined;

  constructor(signer: RequestSigner, random: RandomSource, software: string | undefined) {
    this.#signer = signer;
    this.#random = random;
    this.#software = software;
  }

  /** The ConnectionBind for `connectionId`, signed with the control connection's nonce. */
  request(connectionId: PeerConnectionId): Uint8Array {
    return this.#request(connectionId, undefined, false);
  }

  /** The answer to a ConnectionBind (one frame). Never throws. */
  handleResponse(bytes: Uint8Array): ConnectionBindResult {
    const decoded = decodeStun(bytes);
    if (!decoded.ok) return invalid("malformed");
    const msg = decoded.message;
    if (msg.method !== Method.ConnectionBind) return invalid("not a ConnectionBind response");
    const key = bytesKey(msg.transactionId);
    const pending = this.#pending.get(key);
    if (pending === undefined) return invalid("unknown transaction");
    if (msg.messageClass === MessageClass.SuccessResponse) {
      if (pending.signature && !verifyMessageIntegrity(msg, pending.signature.key)) {
        return invalid("bad MESSAGE-INTEGRITY");
      }
      this.#pending.delete(key);
      return { ok: true, connectionId: pending.connectionId };
    }
    if (msg.messageClass !== MessageClass.ErrorResponse) return invalid("not a response");
    const error = readErrorCode(msg);
    if (error === undefined) return invalid("no ERROR-CODE");
    if (
      hasAttribute(msg, AttributeType.MessageIntegrity) &&
      pending.signature &&
      !verifyMessageIntegrity(msg, pending.signature.key)
    ) {
      return invalid("bad MESSAGE-INTEGRITY");
    }
    this.#pending.delete(key);
    if (
      (error.code === ErrorCode.StaleNonce || error.code === ErrorCode.Unauthorized) &&
      !pending.retried
    ) {
      // The nonce may be bound to the data connection's own 5-tuple: sign the retry with the one
      // this answer carries.
      const challenge = this.#signer.readChallenge(msg);
      if (challenge !== undefined) {
        this.#signer.learnRealm(challenge.realm);
        const retry = this.#request(pending.connectionId, challenge, true);
        return { ok: false, code: error.code, reason: error.reason, retry };
      }
    }
    return { ok: false, code: error.code, reason: error.reason };
  }

  #request(
    connectionId: PeerConnectionId,
    challenge: Challenge | undefined,
    retried: boolean,
  ): Uint8Array {
    const id = newTransactionId(this.#random);
    const b = new StunMessageBuilder(Method.ConnectionBind, MessageClass.Request, id);
    if (this.#software !== undefined) b.string(AttributeType.Software, this.#software);
    b.uint32(AttributeType.ConnectionId, connectionId >>> 0);
    const signature = this.#signer.sign(b, true, challenge);
    const bytes = b.fingerprint().build();
    evictOldestAtCap(this.#pending, MAX_PENDING_CONNECTION_BINDS);
    this.#pending.set(bytesKey(id), {
      connectionId: (connectionId >>> 0) as PeerConnectionId,
      signature,
      retried,
    });
    return bytes;
  }
}

function invalid(reason: string): ConnectionBindResult {
  return { ok: false, code: 0, reason };
}
