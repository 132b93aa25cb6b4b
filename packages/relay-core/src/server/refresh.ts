/**
 * Refresh requests (RFC 8656 §8.2): a new lifetime for the allocation ("desired lifetime", as
 * for Allocate), or its deletion with LIFETIME 0; with REQUESTED-ADDRESS-FAMILY, the deletion of
 * that family's relayed address only (allocations.ts). The families of a dual allocation share
 * one lifetime here, so a Refresh naming one family with a non-zero LIFETIME refreshes both.
 */

import { readAddressFamily, readUint32 } from "../codec/attributes.js";
import { AttributeType, ErrorCode } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import { type Allocation, desiredLifetime } from "./allocation.js";
import type { AllocationContext, Allocations } from "./allocations.js";
import type { Reply } from "./responses.js";

export class RefreshRequests {
  readonly #context: AllocationContext;
  readonly #allocations: Allocations;

  constructor(context: AllocationContext, allocations: Allocations) {
    this.#context = context;
    this.#allocations = allocations;
  }

  /** A Refresh on the 5-tuple's active `allocation`. */
  handle(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const family = readAddressFamily(msg, AttributeType.RequestedAddressFamily);
    if (family === "invalid") {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    if (family !== undefined && allocation.relayFor(family) === undefined) {
      reply.error(ErrorCode.PeerAddressFamilyMismatch);
      return;
    }
    const requested = readUint32(msg, AttributeType.Lifetime);
    if (requested === 0) {
      // RFC 8656 §8.1, §8.2: with REQUESTED-ADDRESS-FAMILY the request applies to that
      // family only: one relayed address of a dual allocation goes, the other stays.
      if (family !== undefined) this.#allocations.deleteFamily(allocation, family, now);
      else this.#allocations.delete(allocation, "deleted", now);
      reply.success((b) => b.uint32(AttributeType.Lifetime, 0));
      return;
    }
    const lifetime = desiredLifetime(requested, this.#context.lifetimes);
    allocation.refresh(lifetime, now);
    this.#context.deadlines.schedule(allocation);
    // Every offloaded channel of it may have a new deadline: queued before the answer.
    this.#context.offload?.sync(allocation, now);
    reply.success((b) => b.uint32(AttributeType.Lifetime, lifetime));
  }
}
