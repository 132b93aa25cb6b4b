/**
 * Answers to clients: how a response is built and signed (RFC 8489 §9.2.4: with the request's
 * key, MESSAGE-INTEGRITY or -SHA256 as the request used; FINGERPRINT last, §14.7), the cap on
 * unauthenticated answers (rate-limit.ts), and the response cache that gives a retransmitted
 * request the very same response (RFC 8489 §6.3.1: remembered about 40 s).
 */

import { AttributeType, MessageClass, REASON_PHRASES } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import { StunMessageBuilder } from "../codec/message-builder.js";
import { InsertionOrderedMap } from "../insertion-order.js";
import type { ClientEndpoint } from "./allocation.js";
import type { ServerStats } from "./stats.js";
import type { Emit, Refusal } from "./types.js";

const EMPTY_BYTES = new Uint8Array(0);
/** Reply's transaction id for the builder, written just before each use (Uint8Array wraps). */
const TRANSACTION_ID_SCRATCH = new Uint8Array(12);
/** Entries the response cache holds at most; the oldest goes first. */
const RESPONSE_CACHE_ENTRIES = 8192;

/** What a response to an authenticated request is signed with. */
export interface Signer {
  readonly key: Uint8Array;
  /** The request carried MESSAGE-INTEGRITY-SHA256 (else MESSAGE-INTEGRITY). */
  readonly sha256: boolean;
  /** Who signed the request (named in a refusal, never sent). */
  readonly username?: string;
}

/** A refusal's detail as the code refusing knows it; the reply adds the USERNAME. */
export type RefusalDetail = Omit<Refusal, "username">;

/** Builds, signs and queues messages for clients. */
export class Responder {
  readonly #emit: Emit;
  readonly #software: string | undefined;
  readonly #limiter: { allow(source: string, now: number): boolean };
  readonly #stats: ServerStats;

  constructor(
    emit: Emit,
    software: string | undefined,
    limiter: { allow(source: string, now: number): boolean },
    stats: ServerStats,
  ) {
    this.#emit = emit;
    this.#software = software;
    this.#limiter = limiter;
    this.#stats = stats;
  }

  /** A message of `method` and `cls` with our SOFTWARE (RFC 8489 §14.14), to be filled. */
  builder(method: number, cls: MessageClass, transactionId: Uint8Array): StunMessageBuilder {
    const b = new StunMessageBuilder(method, cls, transactionId);
    if (this.#software !== undefined) b.string(AttributeType.Software, this.#software);
    return b;
  }

  /**
   * Finish a response (integrity when authenticated, FINGERPRINT) and queue it. An
   * unauthenticated one over its source's budget is dropped instead (no amplification,
   * rate-limit.ts): then the bytes are empty.
   */
  send(
    endpoint: ClientEndpoint,
    b: StunMessageBuilder,
    signer: Signer | undefined,
    method: number,
    errorCode: number,
    now: number,
    refusal?: Refusal,
  ): Uint8Array {
    if (signer !== undefined) {
      if (signer.sha256) b.messageIntegritySha256(signer.key);
      else b.messageIntegrity(signer.key);
    } else if (!this.#limiter.allow(endpoint.address, now)) {
      this.#stats.drops["rate-limited"]++;
      return EMPTY_BYTES;
    }
    const data = b.fingerprint().build();
    this.transmit(
      endpoint,
      data,
      method,
      errorCode === 0 ? MessageClass.SuccessResponse : MessageClass.ErrorResponse,
      errorCode,
      refusal,
    );
    return data;
  }

  /** An unauthenticated error response (400 before authentication, 420 to a Binding, ...). */
  error(
    endpoint: ClientEndpoint,
    method: number,
    transactionId: Uint8Array,
    code: number,
    now: number,
    refusal?: Refusal,
  ): void {
    const b = this.builder(method, MessageClass.ErrorResponse, transactionId).errorCode(code);
    this.send(endpoint, b, undefined, method, code, now, refusal);
  }

  /** Queue finished bytes (a cached response, an indication). */
  transmit(
    client: ClientEndpoint,
    data: Uint8Array,
    method: number,
    messageClass: number,
    errorCode: number,
    refusal?: Refusal,
  ): void {
    this.#emit(
      refusal === undefined
        ? { type: "transmit", client, data, method, messageClass, errorCode }
        : { type: "transmit", client, data, method, messageClass, errorCode, refusal },
    );
  }
}

interface CachedResponse {
  readonly data: Uint8Array;
  readonly messageClass: MessageClass;
  readonly errorCode: number;
  readonly expiresAt: number;
}

/** Responses to authenticated requests by 5-tuple and transaction id (RFC 8489 §6.3.1). */
export class ResponseCache {
  /** Entries held (for tests and stats). */
  get size(): number {
    return this.#entries.size;
  }

  readonly #entries = new InsertionOrderedMap<string, CachedResponse>();
  readonly #lifetimeMs: number;

  constructor(lifetimeSeconds: number) {
    this.#lifetimeMs = lifetimeSeconds * 1000;
  }

  /**
   * The key of a request: its client 5-tuple and transaction id. Made per request, so it is
   * one String.fromCharCode call for the common case (a UDP client over IPv4): the 96-bit
   * transaction id as six 16-bit units, then a tag, the listener, the port and the address,
   * twelve units in all, no intermediate strings and a short hash for the Map (the text form
   * cost ~250 ns more per request, and 14 strings). Other clients get the tag 1 and their
   * transport, connection and address as text; fixed-width fields first, so no two requests
   * share a key.
   */
  static key(endpoint: ClientEndpoint, transactionId: Uint8Array, at = 0): string {
    // The 96-bit transaction id (RFC 8489 §5) at `at`: the server passes the message's bytes
    // and 8, where it sits, rather than a view made for it.
    const t = transactionId;
    const tag = endpoint.transport === "udp" && endpoint.family === 4 ? 0 : 1;
    const head = String.fromCharCode(
      (t[at]! << 8) | t[at + 1]!,
      (t[at + 2]! << 8) | t[at + 3]!,
      (t[at + 4]! << 8) | t[at + 5]!,
      (t[at + 6]! << 8) | t[at + 7]!,
      (t[at + 8]! << 8) | t[at + 9]!,
      (t[at + 10]! << 8) | t[at + 11]!,
      tag,
      endpoint.listener & 0xffff,
      endpoint.listener >>> 16,
      endpoint.port,
      tag === 0 ? endpoint.ip4 >>> 16 : 0,
      tag === 0 ? endpoint.ip4 & 0xffff : 0,
    );
    return tag === 0
      ? head
      : `${head}${endpoint.transport}|${endpoint.connection}|${endpoint.address}`;
  }

  /** The response remembered under `key`, if it is still fresh at `now`. */
  get(key: string, now: number): CachedResponse | undefined {
    const cached = this.#entries.get(key);
    if (cached === undefined) return undefined;
    if (cached.expiresAt > now) return cached;
    this.#entries.delete(key);
    return undefined;
  }

  remember(key: string, data: Uint8Array, errorCode: number, now: number): void {
    // Entries go in oldest first with one lifetime, so the expired ones are at the front: let
    // them go now rather than when the cap pushes them out, which under light traffic would
    // be never (and would keep 8,192 responses after the clients have gone).
    this.#entries.dropExpiredOldest((old) => old.expiresAt <= now);
    this.#entries.evictOldestAtCap(RESPONSE_CACHE_ENTRIES);
    this.#entries.set(key, {
      data,
      messageClass: errorCode === 0 ? MessageClass.SuccessResponse : MessageClass.ErrorResponse,
      errorCode,
      expiresAt: now + this.#lifetimeMs,
    });
  }
}

/**
 * The response to one authenticated request: signed with the request's key, cached for
 * retransmissions, and possibly sent later than the request was handled (an Allocate waits
 * for its relay socket to bind, an RFC 6062 Connect for the dial).
 */
export class Reply {
  readonly #responder: Responder;
  readonly #cache: ResponseCache;
  readonly #endpoint: ClientEndpoint;
  readonly #method: number;
  /** The request's transaction id as three 32-bit words (see the constructor). */
  readonly #tid0: number;
  readonly #tid1: number;
  readonly #tid2: number;
  readonly #signer: Signer;
  readonly #cacheKey: string;
  readonly #now: number;

  constructor(
    responder: Responder,
    cache: ResponseCache,
    endpoint: ClientEndpoint,
    msg: StunMessage,
    signer: Signer,
    cacheKey: string,
    now: number,
  ) {
    this.#responder = responder;
    this.#cache = cache;
    this.#endpoint = endpoint;
    this.#method = msg.method;
    // A reply may be sent after this input returns: keep a copy of the transaction id, not a
    // view into bytes the runtime reuses (a batched receive arena). As numbers: a copied
    // Uint8Array was an object and a backing store per request (bench/README.md, "2026-12-07,
    // third pass"); the builder copies them out of a scratch array at once (transactionId()).
    const t = msg.bytes; // the transaction id at offset 8 (RFC 8489 §5)
    this.#tid0 = ((t[8]! << 24) | (t[9]! << 16) | (t[10]! << 8) | t[11]!) >>> 0;
    this.#tid1 = ((t[12]! << 24) | (t[13]! << 16) | (t[14]! << 8) | t[15]!) >>> 0;
    this.#tid2 = ((t[16]! << 24) | (t[17]! << 16) | (t[18]! << 8) | t[19]!) >>> 0;
    this.#signer = signer;
    this.#cacheKey = cacheKey;
    this.#now = now;
  }

  success(fill?: (b: StunMessageBuilder) => void): Uint8Array {
    const b = this.#responder.builder(
      this.#method,
      MessageClass.SuccessResponse,
      this.#transactionIdScratch(),
    );
    fill?.(b);
    return this.#finish(b, 0);
  }

  /**
   * An error response; `reason` replaces the standard reason phrase (RFC 8489 §14.8). `why`
   * tells the runtime's log what refused it (default: the reason phrase); never sent.
   */
  error(
    code: number,
    fill?: (b: StunMessageBuilder) => void,
    reason?: string,
    why?: RefusalDetail,
  ): Uint8Array {
    const b = this.#responder
      .builder(this.#method, MessageClass.ErrorResponse, this.#transactionIdScratch())
      .errorCode(code, reason);
    fill?.(b);
    const refusal: Refusal = {
      reason: reason ?? REASON_PHRASES[code] ?? String(code),
      ...why,
      ...(this.#signer.username !== undefined ? { username: this.#signer.username } : {}),
    };
    return this.#finish(b, code, refusal);
  }

  /**
   * The transaction id in a scratch array shared by every Reply: valid until the next call, which
   * is enough for StunMessageBuilder, which copies it into the message when constructed.
   */
  #transactionIdScratch(): Uint8Array {
    const t = TRANSACTION_ID_SCRATCH;
    t[0] = this.#tid0 >>> 24;
    t[1] = this.#tid0 >>> 16;
    t[2] = this.#tid0 >>> 8;
    t[3] = this.#tid0;
    t[4] = this.#tid1 >>> 24;
    t[5] = this.#tid1 >>> 16;
    t[6] = this.#tid1 >>> 8;
    t[7] = this.#tid1;
    t[8] = this.#tid2 >>> 24;
    t[9] = this.#tid2 >>> 16;
    t[10] = this.#tid2 >>> 8;
    t[11] = this.#tid2;
    return t;
  }

  #finish(b: StunMessageBuilder, code: number, refusal?: Refusal): Uint8Array {
    const data = this.#responder.send(
      this.#endpoint,
      b,
      this.#signer,
      this.#method,
      code,
      this.#now,
      refusal,
    );
    this.#cache.remember(this.#cacheKey, data, code, this.#now);
    return data;
  }
}
