// Relay sockets (RFC 8656 §7: the allocation's relayed transport address), opened and closed
// in one place. relay-core asks with `open-relay`; the room that owns the protocol binds (the
// UDP path, or stream/peers.ts for an RFC 6062 TCP relayed address) and reports a RelayBind;
// the answer to relay-core is given here, from that result:
//
//   bound     handleRelayBound(relay, now, handle)
//   failed    handleRelayBindFailed(relay, now): relay-core tries another port (bounded), or
//             answers the Allocate with 508
//
// Pinned ports across workers: when this worker took a pinned port over from the same
// principal's stale allocation on another worker, relay-core says so first
// ("release-pinned-port"); that worker is asked to end it (shared/worker-link.ts), and the
// "open-relay" for that family and port waits for its answer, so the bind does not find the
// stale socket still open.
//
// Reserved ports across workers: an Allocate here took another worker's RESERVATION-TOKEN
// ("reservation-taken"); that worker is told, and stops holding the port.
//
// Every answer runs the engine's loop: relay-core queues outputs on it (the Allocate's
// success or error, the next port to try).

import type { RelayId, TurnServerOutput } from "@turnpike/relay-core";
import type { RateLimitedLogger } from "@turnpike/runtime-kit";
import type { WorkerLink } from "../shared/worker-link.js";
import type { PeerConnections } from "../stream/peers.js";
import type { UdpPath } from "../udp/udp-path.js";
import type { EngineHost, RelayBind, RelayBindDone } from "./host.js";

type OpenRelay = Extract<TurnServerOutput, { type: "open-relay" }>;
type ReleasePinnedPort = Extract<TurnServerOutput, { type: "release-pinned-port" }>;
type ReservationTaken = Extract<TurnServerOutput, { type: "reservation-taken" }>;

/** A bind failure that ends Allocates is told once per reason in this window. */
const BIND_WARNING_WINDOW_MS = 10 * 60_000;

export class RelaySockets {
  /**
   * Pinned ports (by "family:port") whose stale holder on another worker is being ended: how
   * many answers are awaited, and the open-relay outputs waiting for them.
   */
  private readonly releasing = new Map<string, { pending: number; waiting: OpenRelay[] }>();
  /** Bind failures that cost Allocates (508), once per reason per window. */
  private readonly bindWarnings: RateLimitedLogger;

  constructor(
    private readonly host: EngineHost,
    private readonly udp: UdpPath,
    private readonly peers: PeerConnections,
    /** Set when this engine is one of several workers. */
    private readonly link: WorkerLink | undefined,
  ) {
    this.bindWarnings = host.log.rateLimited({ perWindow: 1, windowMs: BIND_WARNING_WINDOW_MS });
  }

  /** The release-pinned-port output: open-relay outputs of that port wait for the answer. */
  releaseElsewhere(o: ReleasePinnedPort): void {
    if (this.link === undefined) return;
    const key = `${o.family}:${o.port}`;
    const entry = this.releasing.get(key) ?? { pending: 0, waiting: [] };
    entry.pending++;
    this.releasing.set(key, entry);
    this.link.releasePinnedPort(o.engine, o, () => {
      if (--entry.pending > 0) return;
      this.releasing.delete(key);
      for (const open of entry.waiting) this.bind(open);
    });
  }

  /** The reservation-taken output: the worker that made it forgets it. */
  reservationTaken(o: ReservationTaken): void {
    this.link?.reservationTaken(o.engine, o.token);
  }

  /** The open-relay output. */
  open(o: OpenRelay): void {
    const entry =
      o.pinnedFor === undefined ? undefined : this.releasing.get(`${o.family}:${o.port}`);
    if (entry !== undefined) entry.waiting.push(o);
    else this.bind(o);
  }

  /** The close-relay output: whichever room holds it closes it (bound, binding or waiting). */
  close(relay: RelayId): void {
    for (const { waiting } of this.releasing.values()) {
      const i = waiting.findIndex((o) => o.relay === relay);
      if (i >= 0) waiting.splice(i, 1);
    }
    if (!this.udp.closeRelay(relay)) this.peers.closeRelay(relay);
  }

  private bind(o: OpenRelay): void {
    const done: RelayBindDone = (result) => this.answer(o, result);
    if (o.protocol === "tcp") this.peers.openRelay(o.relay, o.bindAddress, o.port, done);
    else this.udp.openRelay(o.relay, o.family, o.bindAddress, o.port, done);
  }

  private answer(o: OpenRelay, result: RelayBind): void {
    const core = this.host.core;
    if (result.ok) {
      core.handleRelayBound(o.relay, performance.now(), result.handle);
    } else {
      this.bindFailed(o, result.error);
      core.handleRelayBindFailed(o.relay, performance.now());
    }
    this.host.afterInput();
  }

  /**
   * A dynamic port in use is everyday business (relay-core tries another one); anything else (a
   * relay address gone from the host, no permission, no file descriptors left, a pinned port
   * held by another program) refuses Allocates with 508 until someone acts: said at WARN, once
   * per reason per window.
   */
  private bindFailed(o: OpenRelay, error: Error): void {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    const fields = {
      protocol: o.protocol,
      address: o.bindAddress,
      port: o.port,
      pinned: o.pinnedFor !== undefined ? true : undefined,
      error: error.message,
    };
    if (code === "EADDRINUSE" && o.pinnedFor === undefined) {
      this.host.log.debug("relay port bind failed, trying another port", fields);
      return;
    }
    this.bindWarnings.warn(
      `relay-bind:${code}`,
      "relay socket bind failed: Allocates get 508 while this lasts",
      { ...fields, code },
    );
  }
}
