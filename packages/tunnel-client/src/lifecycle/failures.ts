// What the relay's answers mean for a tunnel: lost (try again after a backoff delay), refused
// (the same rhythm, state "refused", said once: the operator may lift it), sent elsewhere (300
// Try Alternate, RFC 8489 §10), or nothing to act on. Pure: a TurnClient event in, a verdict
// out, with the reason worded for the operator (lastError, the log).

import {
  formatTransportAddress,
  Method,
  type TransportAddress,
  type TurnClientEvent,
} from "@turnpike/relay-core/client";
import { REDIRECT_WINDOW_MS } from "../redirects.js";

/** Why the tunnel goes down, and how it waits to try again. */
export interface Failure {
  readonly reason: string;
  /** The relay refused the tunnel (state "refused"), rather than being lost. */
  readonly refused: boolean;
  /** Try again at once, without a backoff delay. */
  readonly immediate: boolean;
}

/**
 * A draining relay's ALTERNATE-SERVER: follow it, unless this relay redirected the tunnel
 * lately (redirects.ts); then `otherwise` is the failure.
 */
export interface Alternate {
  readonly alternate: TransportAddress;
  readonly otherwise: Failure;
}

/** The relay was lost (no refusal, with a backoff delay). */
export function lost(reason: string): Failure {
  return { reason, refused: false, immediate: false };
}

/**
 * What a TurnClient event means for the tunnel; undefined when it is no failure (or not the
 * tunnel's: a ChannelBind timing out is the data path's). `renewing`: renewed credentials are
 * being tried, so a refused Refresh re-allocates at once rather than after a backoff delay.
 */
export function failureOf(e: TurnClientEvent, renewing: boolean): Failure | Alternate | undefined {
  switch (e.type) {
    case "permission-failed":
      // A peer the relay will not let in: the service is not what was asked for, so it is
      // not ready (a relay's peer policy refuses loopback and private peers by default).
      return {
        reason: `permission for ${e.peerIp} refused: ${e.code} ${e.reason}${e.code === 403 ? peerPolicyHint(e.peerIp) : ""}`,
        refused: true,
        immediate: false,
      };
    case "allocate-failed":
      if (e.code === 300 && e.alternateServer !== undefined) {
        return {
          alternate: e.alternateServer,
          otherwise: lost(
            `allocate failed: 300 ${e.reason}: ${formatTransportAddress(e.alternateServer)} redirected this tunnel within the last ${REDIRECT_WINDOW_MS / 60_000} minutes, not followed again`,
          ),
        };
      }
      // 401 to credentials just signed (a wrong or expired key), 403 (revoked, a pinned port
      // outside the range or held by another user): refused, not lost.
      return {
        reason: `allocate failed: ${e.code} ${e.reason}`,
        refused: e.code === 401 || e.code === 403,
        immediate: false,
      };
    case "refresh-failed":
      // A refused renewal must not wait out a backoff delay: re-allocate at once.
      return {
        reason: `refresh failed: ${e.code} ${e.reason}`,
        refused: false,
        immediate: renewing,
      };
    case "transaction-timeout": {
      const what = TIMED_OUT[e.method];
      return what === undefined ? undefined : lost(`relay did not answer (${what})`);
    }
    default:
      return undefined;
  }
}

/** The requests whose timeout means the relay is gone, by the name the reason gives them. */
const TIMED_OUT: Partial<Record<number, string>> = {
  [Method.Binding]: "keep-alive",
  [Method.Allocate]: "Allocate",
  [Method.Refresh]: "Refresh",
};

/** Another service of this process serves the pinned port (pins.ts): wait, it may go away. */
export function pinTaken(port: number, relayIp: string, holder: string): Failure {
  return lost(
    `pinned port ${port} on ${relayIp} is already served by service "${holder}": one service per pinned credential`,
  );
}

/** What a 403 to a permission most likely means, and what would change it. */
export function peerPolicyHint(peerIp: string): string {
  const loopback = peerIp.startsWith("127.") || peerIp === "::1";
  return ` (the relay's peer policy refuses ${peerIp}: ${loopback ? "run the relay with --allow-loopback-peers when everything is on one machine" : `the relay needs --allow-peer ${peerIp}`}, or leave it out of this tunnel's --allow-peer)`;
}
