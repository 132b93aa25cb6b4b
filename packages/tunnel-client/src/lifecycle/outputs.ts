// What the lifecycle machine (../lifecycle.ts) asks of its driver (tunnel.ts) or tells it, in
// order: one tagged union, polled like relay-core's outputs (ARCHITECTURE.md, "The sans-IO
// contract"). The I/O outputs name the attempt they belong to, so that a report about an older
// attempt is ignored.

import type { TransportAddress, TurnClientEvent } from "@turnpike/relay-core/client";
import type { RelayAddress } from "../redirects.js";

/** A failure the tunnel waits out (state "backoff" or "refused") before trying again. */
export type TunnelDown = {
  readonly type: "down";
  readonly reason: string;
  readonly delayMs: number;
  /** Failures in a row (the backoff attempt). */
  readonly failures: number;
  readonly wasReady: boolean;
  /** The relay refused the tunnel (state "refused"), rather than being lost. */
  readonly refused: boolean;
  /** The same refusal as the failure before: said already. */
  readonly repeated: boolean;
};

/** What the driver must do or may tell people, in order. */
export type TunnelOutput =
  /** Bytes for the control connection. */
  | { readonly type: "transmit"; readonly bytes: Uint8Array }
  /** Get credentials; report with handleCredentials / handleCredentialsFailed. */
  | { readonly type: "fetch-credentials"; readonly attempt: number }
  /**
   * Open the control connection to `relay` (the tunnel's own, or where a draining one sent it),
   * resolving the target first for a UDP service; report with handleConnected /
   * handleTransportFailed, and feed what arrives to handleInput.
   */
  | { readonly type: "connect"; readonly attempt: number; readonly relay: RelayAddress }
  /**
   * Close the control connection (gracefully after the transmits before this one when
   * `release`, at once otherwise) and everything of the allocation (peer flows, data pipes).
   */
  | { readonly type: "disconnect"; readonly release: boolean }
  | { readonly type: "ready"; readonly relayed: TransportAddress; readonly lifetime: number }
  | TunnelDown
  /** A draining relay sent the tunnel elsewhere (300 Try Alternate, RFC 8489 §10). */
  | { readonly type: "redirected"; readonly from: RelayAddress; readonly to: RelayAddress }
  | { readonly type: "window-closed" }
  | { readonly type: "window-opened" }
  | { readonly type: "reallocating"; readonly refusedInPlace: boolean }
  | {
      readonly type: "renewed";
      readonly renewals: number;
      readonly relayed: TransportAddress | undefined;
    }
  /** 441 to renewed credentials; `reallocateAt` (on the machine's clock) is when it re-allocates. */
  | { readonly type: "renewal-refused"; readonly reallocateAt: number | undefined }
  | { readonly type: "renewal-failed"; readonly error: string }
  /** The relay gave a dynamic port to credentials that pin one (coturn); said once. */
  | {
      readonly type: "pin-ignored";
      readonly pinnedPort: number;
      readonly relayed: TransportAddress;
    }
  /** The data path's business, passed on as the TurnClient said it. */
  | Extract<
      TurnClientEvent,
      { type: "channel-bound" | "channel-bind-failed" | "connection-attempt" }
    >;
