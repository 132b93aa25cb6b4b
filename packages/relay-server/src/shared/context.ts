// What a worker's engine is given to share with the others (workers/pool.ts makes it,
// workers/worker.ts hands it to the engine): the shared memory (limits, pinned ports,
// reservations, per-user bandwidth), the nonce secret, a message route to the other workers,
// its listening sockets and its slice of the relay ports.

import type { SharedState } from "./shared-state.js";

/** What a worker's engine shares with the others. */
export interface WorkerContext {
  readonly index: number;
  readonly count: number;
  /**
   * What holds for the whole process (shared-state.ts): allocation and connection quotas, the
   * unauthenticated rate, pinned-port owners, RESERVATION-TOKENs, per-user bandwidth.
   */
  readonly shared: SharedState;
  /** The nonce secret every worker uses, so any worker verifies any client. */
  readonly secret: Uint8Array;
  /**
   * Post a message to worker `to` (worker-link.ts: RFC 6062 hand-over, pinned ports). One the
   * supervisor cannot deliver (that worker is restarting) comes back as "undeliverable".
   */
  route(to: number, message: unknown): void;
  /** Receive messages other workers route here. */
  onRoute(handler: (from: number, message: unknown) => void): void;
  /**
   * This worker's listening sockets, made and kept by the supervisor (one per worker per
   * address, in configuration order), so a restarted worker takes over its predecessor's
   * place in each SO_REUSEPORT group; absent where the native module is unavailable (the
   * worker binds its own, with SO_REUSEPORT).
   */
  readonly listenFds?: ListenFds;
  /** This worker's slice of the relay port range: its allocations' ports come from it. */
  readonly portSlice: { readonly minPort: number; readonly maxPort: number };
}

/** Listening sockets by kind, in the order of --listen (udp, tcp) and --tls-listen (tls). */
export interface ListenFds {
  readonly udp: readonly number[];
  readonly tcp: readonly number[];
  readonly tls: readonly number[];
}
