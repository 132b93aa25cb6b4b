// Relay sockets (RFC 8656 §7: the allocation's relayed transport address), opened and closed
// in one place. relay-core asks with `open-relay`; the room that owns the protocol binds (the
// UDP path, or stream/peers.ts for an RFC 6062 TCP relayed address) and reports a RelayBind;
// the answer to relay-core is given here, from that result:
//
//   bound                        handleRelayBound(relay, now, handle)
//   failed                       handleRelayBindFailed(relay, now): relay-core tries another
//                                port (bounded), or answers the Allocate with 508
//   failed, pinned, EADDRINUSE,  the port may be held by a stale allocation of the same
//   other workers running        principal on another worker (a tunnel that came back through
//                                another worker): the others are asked to release it
//                                (shared/worker-link.ts), then the bind is tried once more,
//                                as a takeover within one engine is
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

/** A bind failure that ends Allocates is told once per reason in this window. */
const BIND_WARNING_WINDOW_MS = 10 * 60_000;

export class RelaySockets {
  /** Relays whose pinned port other workers are asked to release, before one more bind. */
  private readonly awaitingRelease = new Set<RelayId>();
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

  /** The open-relay output. */
  open(o: OpenRelay): void {
    this.bind(o, (result) => {
      if (!result.ok && this.mayBeHeldByAnotherWorker(o, result.error)) {
        this.askRelease(o, result);
        return;
      }
      this.answer(o, result);
    });
  }

  /** The close-relay output: whichever room holds it closes it (bound or still binding). */
  close(relay: RelayId): void {
    this.awaitingRelease.delete(relay);
    if (!this.udp.closeRelay(relay)) this.peers.closeRelay(relay);
  }

  private bind(o: OpenRelay, done: RelayBindDone): void {
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

  private mayBeHeldByAnotherWorker(o: OpenRelay, error: Error): boolean {
    return (
      o.pinnedFor !== undefined &&
      this.link?.hasOthers === true &&
      (error as NodeJS.ErrnoException).code === "EADDRINUSE"
    );
  }

  private askRelease(o: OpenRelay, failed: RelayBind): void {
    this.awaitingRelease.add(o.relay);
    this.link!.releasePinnedPort(o.family, o.port, o.pinnedFor!, (free) => {
      // Closed meanwhile (the allocation went): relay-core forgot it, bind nothing.
      if (!this.awaitingRelease.delete(o.relay)) return;
      // Released (or free by now): one more bind, which answers relay-core either way.
      if (free) this.bind(o, (result) => this.answer(o, result));
      else this.answer(o, failed);
    });
  }
}
