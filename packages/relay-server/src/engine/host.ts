// The host interface: what the rooms that carry traffic (udp/ and stream/) get from the engine
// instead of the engine itself. A room feeds relay-core its input, acts on the returned route
// at once (the data path: `core.route` is one reused object), and hands everything else back
// through afterInput(), the engine's loop (driver.ts). Nothing here calls into a room: the
// engine tells the rooms what to do by executing relay-core's outputs (outputs.ts), and a
// room reports how a job it was given ended through the callback it was given with it
// (RelayBind for an open-relay).
//
// Types only: the rooms import nothing else from engine/.

import type { ClientEndpoint, TurnServer } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import type { RelayStats, RelayTelemetry } from "../stats.js";

export interface EngineHost {
  /** relay-core: the rooms call its handle* methods and read `core.route` after a route. */
  readonly core: TurnServer;
  /** Per-packet counters: recordRelayed(stats, slot, bytes). */
  readonly stats: RelayStats;
  /** Low-rate events: drops by reason, responses, allocations. */
  readonly telemetry: RelayTelemetry;
  readonly log: Logger;
  /**
   * The loop, after an input that returned no route (a control message, a connection opened
   * or closed, a bind result): execute relay-core's outputs, re-arm the timer, send what the
   * UDP path queued. A data route needs none of it: the room sends it and is done.
   */
  afterInput(): void;
  /**
   * The UDP paths': peer data for a TCP/TLS client (`core.route` is RouteKind.ToClient).
   * `copy`: the route's bytes live in a buffer reused after this call (the batch path's
   * receive arena), so a write that queues must copy them.
   */
  deliverToStreamClient(client: ClientEndpoint, copy: boolean): void;
  /**
   * The stream room's: a TCP/TLS client's ChannelData or Send indication for a UDP peer
   * (`core.route` is RouteKind.ToPeer) goes out on the UDP path, counted under `slot`.
   */
  sendToPeer(slot: number): void;
}

/** How binding a relay socket ended: the handle relay-core puts in its routes, or why not. */
export type RelayBind =
  | { readonly ok: true; readonly handle: number }
  | { readonly ok: false; readonly error: Error };

/** Reports a RelayBind; not called at all when the bind was cancelled (close-relay). */
export type RelayBindDone = (result: RelayBind) => void;
