// One set of kernel maps per process, whoever runs the engines:
//
//   --workers 1   the engine on the main thread chooses and opens the kernel path itself;
//   --workers N   the supervisor (workers/pool.ts) chooses and opens it once, hands every
//                 worker the maps' file descriptors (a process's descriptors are valid in all
//                 its threads) and a shared table of which worker holds which slot; each
//                 worker's engine makes its own handle over the same maps
//                 (KernelPath.attach). When a worker dies, the supervisor takes its bindings
//                 out (its successor starts with a fresh relay-core that knows none of them).
//
// Offload ids and allocation ids are per engine: nothing shared is keyed by them. The slots
// come from kernel-path's process-wide allocator; allocation bucket indices are cut into one
// share per engine, user bucket ids (the same in every worker) go through one shared table
// (buckets.ts).

import { KernelPath } from "@turnpike/kernel-path";
import type { RelayConfig } from "../config/types.js";
import type {
  KernelAttachMode,
  KernelPathPlacement,
  KernelPathShare,
  WorkerContext,
} from "../shared/context.js";
import { KernelBuckets, UserBuckets, userBucketTable } from "./buckets.js";
import type { SlotOwners } from "./offload.js";
import { KERNEL_MAX_BINDINGS, type KernelPathChoice, openKernelPath } from "./select.js";

/** What one engine runs on. */
export type EngineKernelPath =
  | ({
      readonly mode: KernelAttachMode;
      /** This engine's handle over the maps. */
      readonly kernel: KernelPath;
      readonly buckets: KernelBuckets;
      readonly owners: SlotOwners | undefined;
      /**
       * The program's global counters into `out` (KERNEL_PATH_STATS order), for the engine
       * that opened the path; undefined in a worker, whose supervisor reads them (they are
       * the process's, not an engine's).
       */
      readonly readProgramCounters: ((out: Float64Array) => void) | undefined;
      /** Closes this engine's handle (the opener's detaches the program). */
      close(): void;
    } & KernelPathPlacement)
  | { readonly mode: "off"; readonly fallbackReason: string | undefined };

/** The engine's kernel path: opened here (one engine) or the supervisor's maps (a worker). */
export function engineKernelPath(config: RelayConfig, worker?: WorkerContext): EngineKernelPath {
  if (worker === undefined) {
    const choice = openKernelPath(config);
    if (choice.mode === "off") return choice;
    const kernel = choice.path;
    const users = new UserBuckets(userBucketTable(1), 1, 0, kernel);
    return {
      ...choice,
      kernel,
      buckets: new KernelBuckets(kernel, { index: 0, count: 1 }, users),
      owners: undefined,
      readProgramCounters: (out) => kernel.readStats(out),
      close: () => kernel.close(),
    };
  }
  const share = worker.kernelPath ?? { mode: "off", fallbackReason: undefined };
  if (share.mode === "off") return share;
  const kernel = KernelPath.attach(share.maps);
  const users = new UserBuckets(share.userBuckets, worker.count, worker.index, kernel);
  return {
    mode: share.mode,
    kernel,
    buckets: new KernelBuckets(kernel, worker, users),
    interfaces: share.interfaces,
    relayed: share.relayed,
    notes: share.notes,
    owners: { owners: new Uint16Array(share.owners), tag: worker.index + 1 },
    readProgramCounters: undefined,
    close: () => kernel.close(),
  };
}

/** The supervisor's side: the kernel path chosen and opened once, for every worker. */
export class SupervisorKernelPath {
  readonly share: KernelPathShare;
  private readonly owners: Uint16Array | undefined;
  private readonly users: UserBuckets | undefined;

  private constructor(
    private readonly choice: KernelPathChoice,
    workers: number,
  ) {
    if (choice.mode === "off") {
      this.share = choice;
      this.owners = undefined;
      this.users = undefined;
      return;
    }
    const owners = new SharedArrayBuffer(KERNEL_MAX_BINDINGS * Uint16Array.BYTES_PER_ELEMENT);
    const userBuckets = userBucketTable(workers);
    this.owners = new Uint16Array(owners);
    this.users = new UserBuckets(userBuckets, workers, workers, undefined);
    this.share = {
      mode: choice.mode,
      maps: choice.path.shared(),
      owners,
      userBuckets,
      interfaces: choice.interfaces,
      relayed: choice.relayed,
      notes: choice.notes,
    };
  }

  /** Throws (one line naming --kernel-path) when tc or xdp was asked for and cannot run. */
  static open(config: RelayConfig): SupervisorKernelPath {
    return new SupervisorKernelPath(openKernelPath(config), config.workers);
  }

  get mode(): KernelAttachMode | "off" {
    return this.choice.mode;
  }

  /** The program's global counters into `out` (KERNEL_PATH_STATS order); none when off. */
  readProgramCounters(out: Float64Array): void {
    if (this.choice.mode !== "off") this.choice.path.readStats(out);
  }

  /** Worker `index` is gone: take out the bindings it held (and its user buckets). */
  releaseWorker(index: number): number {
    if (this.choice.mode === "off" || this.owners === undefined) return 0;
    this.users?.releaseEngine(index);
    const tag = index + 1;
    let released = 0;
    for (const slot of this.choice.path.liveSlots()) {
      if (this.owners[slot] !== tag) continue;
      this.owners[slot] = 0;
      this.choice.path.unbind(slot);
      released++;
    }
    return released;
  }

  /** Detaches the program (after the workers closed: their bindings are gone by then). */
  close(): void {
    if (this.choice.mode !== "off") this.choice.path.close();
  }
}
