// What a worker's engine is given to share with the others (workers/pool.ts makes it,
// workers/worker.ts hands it to the engine): the shared memory (limits, pinned ports,
// reservations, per-user bandwidth), the nonce secret, a message route to the other workers,
// its listening sockets and its slice of the relay ports.

import type { KernelPathShared } from "@turnpike/kernel-path";
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
  /** The kernel data path the supervisor chose (and attached, for "tc" and "xdp"); absent: off. */
  readonly kernelPath?: KernelPathShare;
}

/**
 * The kernel data path as the supervisor hands it to every worker (kernel/share.ts): the maps
 * it attached, which every worker's engine fills (one process, one set of maps), and which
 * worker holds each slot, so the supervisor can take out a dead worker's bindings.
 */
export type KernelPathShare =
  | ({
      readonly mode: KernelAttachMode;
      readonly maps: KernelPathShared;
      /** Uint16 per slot: the holding worker's index + 1, 0 when free. */
      readonly owners: SharedArrayBuffer;
      /** User bucket ids to kernel bucket indices, for every worker (kernel/buckets.ts). */
      readonly userBuckets: SharedArrayBuffer;
    } & KernelPathPlacement)
  | { readonly mode: "off"; readonly fallbackReason: string | undefined };

/** Where the kernel program is attached: TCX ingress, or the driver's XDP hook (native). */
export type KernelAttachMode = "tc" | "xdp";

/** Where the kernel path runs, as chosen at start (kernel/select.ts). */
export interface KernelPathPlacement {
  /** The interfaces the program is attached to. */
  readonly interfaces: readonly string[];
  /** Relayed addresses for wildcard relay binds (kernel/select.ts, WildcardRelayed). */
  readonly relayed: { readonly 4: string | undefined; readonly 6: string | undefined };
  /** What the operator should know: a sysctl set, interfaces skipped, families left out. */
  readonly notes: readonly string[];
}

/** Listening sockets by kind, in the order of --listen (udp, tcp) and --tls-listen (tls). */
export interface ListenFds {
  readonly udp: readonly number[];
  readonly tcp: readonly number[];
  readonly tls: readonly number[];
}
