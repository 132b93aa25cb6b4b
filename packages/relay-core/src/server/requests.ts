/**
 * STUN requests from clients (RFC 8489 §6.3.1): Binding (answered with the reflexive transport
 * address, no credentials needed), then for the TURN methods (RFC 8656 §5): the response cache
 * for retransmissions (RFC 8489 §6.3.1), the long-term credentials (authentication.ts), the
 * revocation list, unknown comprehension-required attributes (420), the allocation's owner
 * (441), and each method to the module that implements it:
 *
 *   Allocate                       allocate.ts (RFC 8656 §7.2)
 *   Refresh                        refresh.ts (RFC 8656 §8.2)
 *   CreatePermission, ChannelBind  permissions.ts (RFC 8656 §10.2, §12.2)
 *   Connect, ConnectionBind        tcp-relay.ts (RFC 6062 §5.2, §5.4)
 */

import { constantTimeEqual } from "../auth/constant-time.js";
import { AttributeType, ErrorCode, MessageClass, Method } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { AllocateRequests } from "./allocate.js";
import type { ClientEndpoint, ClientRecord } from "./allocation.js";
import type { Allocations } from "./allocations.js";
import type { Authenticator } from "./authentication.js";
import type { PermissionRequests } from "./permissions.js";
import type { RefreshRequests } from "./refresh.js";
import { Reply, type Responder, ResponseCache } from "./responses.js";
import type { ServerStats } from "./stats.js";
import type { TcpRelay } from "./tcp-relay.js";

/** The module of each TURN method. */
export interface MethodHandlers {
  readonly allocate: AllocateRequests;
  readonly refresh: RefreshRequests;
  readonly permissions: PermissionRequests;
  readonly tcp: TcpRelay;
}

export class ClientRequests {
  readonly #responder: Responder;
  readonly #responses: ResponseCache;
  readonly #auth: Authenticator;
  readonly #stats: ServerStats;
  readonly #allocations: Allocations;
  readonly #methods: MethodHandlers;

  constructor(
    responder: Responder,
    responses: ResponseCache,
    auth: Authenticator,
    stats: ServerStats,
    allocations: Allocations,
    methods: MethodHandlers,
  ) {
    this.#responder = responder;
    this.#responses = responses;
    this.#auth = auth;
    this.#stats = stats;
    this.#allocations = allocations;
    this.#methods = methods;
  }

  /** A request: Binding, or a TURN method from an authenticated client (RFC 8656 §5). */
  handle(
    endpoint: ClientEndpoint,
    client: ClientRecord | undefined,
    msg: StunMessage,
    now: number,
  ): void {
    if (msg.method === Method.Binding) {
      this.#binding(endpoint, msg, now);
      return;
    }
    if (!isTurnRequestMethod(msg.method)) {
      this.#responder.error(endpoint, msg.method, msg.transactionId, ErrorCode.BadRequest, now);
      return;
    }
    // RFC 8656 §6: what has expired by `now` is gone at `now`, even when the runtime's timer
    // fires late. Catch up first (as handleTimeout does), so a lapsed allocation gets 437, not
    // a Refresh back to life.
    this.#allocations.expire(now);
    if (client !== undefined && client.transport === "udp" && client.allocation === undefined) {
      client = undefined; // its record left the UDP client table with the allocation
    }
    // RFC 8489 §6.3.1 / RFC 8656 §7.2: a retransmission gets the very same response.
    const cacheKey = ResponseCache.key(endpoint, msg.bytes, 8);
    const cached = this.#responses.get(cacheKey, now);
    if (cached !== undefined) {
      this.#responder.transmit(
        endpoint,
        cached.data,
        msg.method,
        cached.messageClass,
        cached.errorCode,
      );
      return;
    }
    const auth = this.#auth.authenticate(endpoint, msg, now);
    if (auth === undefined) return;
    const reply = new Reply(this.#responder, this.#responses, endpoint, msg, auth, cacheKey, now);
    if (this.#auth.refusesRevoked(auth)) {
      reply.error(ErrorCode.Forbidden, undefined, "Forbidden: credentials revoked", {
        reason: "revoked",
      });
      return;
    }
    if (msg.unknownRequired.length > 0) {
      reply.error(ErrorCode.UnknownAttribute, (b) => b.unknownAttributes(msg.unknownRequired));
      return;
    }
    const allocation = client?.allocation;
    // A new Allocate from another user on a 5-tuple in use is not about that allocation: the
    // 5-tuple is taken, 437 (RFC 8656 §7.2, allocate.ts), which clients recover from by
    // allocating from another port (a stale allocation of an earlier program on a reused
    // ephemeral port: coturn's uclient retries on 437 and gives up on 441). A replay of the
    // allocation's own Allocate is about it.
    const anotherAllocate =
      msg.method === Method.Allocate &&
      allocation !== undefined &&
      !constantTimeEqual(allocation.transactionId, msg.transactionId);
    if (allocation !== undefined && allocation.principal !== auth.principal && !anotherAllocate) {
      // RFC 8656 §5: requests about an allocation come from the user that created it. For TURN
      // REST credentials that is the <user> part: the timestamp part is renewed over time
      // (coturn's uclient -W mints a fresh one per request, and coturn accepts it). A static
      // user of the same name is someone else (credentials.ts, principals).
      this.#stats.authFailures["wrong-credentials"]++;
      reply.error(ErrorCode.WrongCredentials, undefined, undefined, {
        reason: "wrong-credentials",
      });
      return;
    }
    const methods = this.#methods;
    switch (msg.method) {
      case Method.Allocate:
        methods.allocate.handle(endpoint, client, msg, auth, reply, now);
        return;
      case Method.ConnectionBind:
        methods.tcp.connectionBind(endpoint, client, msg, auth, reply);
        return;
    }
    // Everything else acts on the 5-tuple's allocation: none (or one still binding its relay
    // port) is 437 Allocation Mismatch (RFC 8656 §5; RFC 6062 §5.2).
    if (allocation === undefined || allocation.state !== "active") {
      reply.error(ErrorCode.AllocationMismatch, undefined, undefined, { reason: "no-allocation" });
      return;
    }
    switch (msg.method) {
      case Method.Refresh:
        methods.refresh.handle(allocation, msg, reply, now);
        return;
      case Method.CreatePermission:
        methods.permissions.createPermission(allocation, msg, reply, now);
        return;
      case Method.ChannelBind:
        methods.permissions.channelBind(allocation, msg, reply, now);
        return;
      case Method.Connect:
        methods.tcp.connect(allocation, msg, reply, now);
        return;
      default:
        reply.error(ErrorCode.BadRequest);
    }
  }

  /** RFC 8489 §6.3.1: the reflexive transport address, and nothing else to remember. */
  #binding(endpoint: ClientEndpoint, msg: StunMessage, now: number): void {
    const responder = this.#responder;
    if (msg.unknownRequired.length > 0) {
      const b = responder
        .builder(Method.Binding, MessageClass.ErrorResponse, msg.transactionId)
        .errorCode(ErrorCode.UnknownAttribute)
        .unknownAttributes(msg.unknownRequired);
      responder.send(endpoint, b, undefined, Method.Binding, ErrorCode.UnknownAttribute, now);
      return;
    }
    const b = responder
      .builder(Method.Binding, MessageClass.SuccessResponse, msg.transactionId)
      .xorAddress(AttributeType.XorMappedAddress, endpoint);
    responder.send(endpoint, b, undefined, Method.Binding, 0, now);
  }
}

function isTurnRequestMethod(method: number): boolean {
  return (
    method === Method.Allocate ||
    method === Method.Refresh ||
    method === Method.CreatePermission ||
    method === Method.ChannelBind ||
    method === Method.Connect ||
    method === Method.ConnectionBind
  );
}
