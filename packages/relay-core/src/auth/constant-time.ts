import { timingSafeEqual } from "node:crypto";

/**
 * Compares MACs and keys without leaking, through timing, how many leading bytes match
 * (RFC 8489 §9.1.3 / §9.2.4 integrity checks). A length mismatch returns false after a
 * same-length dummy comparison, so the content is never compared with an early exit.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array)) return false;
  if (a.length !== b.length) {
    timingSafeEqual(a, a);
    return false;
  }
  return timingSafeEqual(a, b);
}
