// One worker thread's life as the supervisor sees it: its slot (which keeps its place in the
// port slices and listening sockets across restarts), starting it and waiting for it to be
// ready, noticing that it ended, and how long to wait before the next start.

import { Worker } from "node:worker_threads";
import type { SupervisorMessage, WorkerInit, WorkerMessage, WorkerReady } from "./messages.js";

const READY_TIMEOUT_MS = 15_000;
/** Waits before restarting a worker that died, longer the more often it did. */
const RESTART_DELAYS_MS = [200, 500, 1000, 2000, 5000];
/**
 * Each worker is a V8 isolate with a heap of its own. Its young generation follows the
 * process's --max-semi-space-size (V8 flags are process-wide), which the launcher sets
 * (bin/turnpike-relay.js's #! line); started without it (`node dist/cli.js`), a worker gets the
 * same small young generation here: 3 MB is V8's young generation for a 1 MB semi-space.
 * Measured in bench/README.md, "Footprint". The old generation is left unbounded: it holds the
 * allocations (--max-allocations bounds those), and a cap would turn a busy hour into a worker
 * that dies out of memory.
 */
const WORKER_YOUNG_GENERATION_MB = 3;
const workerResourceLimits = [
  ...process.execArgv,
  ...(process.env.NODE_OPTIONS ?? "").split(/\s+/),
].some((flag) => /^--max[-_]semi[-_]space[-_]size\b/.test(flag))
  ? undefined
  : { maxYoungGenerationSizeMb: WORKER_YOUNG_GENERATION_MB };

/** Worker number `index`: the thread that holds the place now, if any. */
export class WorkerSlot {
  worker: Worker | undefined;
  ready = false;
  restarts = 0;
  /** Who waits for this worker's `drained` or `closed` (resolved too when it ends). */
  readonly waiters = new Map<"drained" | "closed", () => void>();
  /** The last stats refresh this worker answered. */
  statsGen = 0;

  constructor(readonly index: number) {}

  /** Up and answering: a message sent now is handled. */
  get serving(): boolean {
    return this.worker !== undefined && this.ready;
  }

  post(message: SupervisorMessage): void {
    this.worker?.postMessage(message);
  }

  /** The wait before the next restart; each call counts one more. */
  nextRestartDelayMs(): number {
    return RESTART_DELAYS_MS[Math.min(this.restarts++, RESTART_DELAYS_MS.length - 1)]!;
  }
}

/** What the supervisor does with what a worker thread reports. */
export interface WorkerEvents {
  /** It is ready (before the start's promise resolves). */
  ready(slot: WorkerSlot, ready: WorkerReady): void;
  /** Any other message. */
  message(slot: WorkerSlot, message: Exclude<WorkerMessage, WorkerReady>): void;
  error(slot: WorkerSlot, err: unknown): void;
  /** It ended (the slot is empty and its waiters were released). */
  exit(slot: WorkerSlot, code: number): void;
}

/**
 * Start a worker thread in `slot`; resolves when it reports ready, rejects when it ends or
 * does not report within READY_TIMEOUT_MS.
 */
export function spawnWorker(
  slot: WorkerSlot,
  init: WorkerInit,
  events: WorkerEvents,
): Promise<WorkerReady> {
  const worker = new Worker(new URL("./worker.js", import.meta.url), {
    workerData: init,
    ...(workerResourceLimits && { resourceLimits: workerResourceLimits }),
  });
  slot.worker = worker;
  slot.ready = false;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`worker ${slot.index} not ready within ${READY_TIMEOUT_MS} ms`)),
      READY_TIMEOUT_MS,
    );
    worker.on("message", (m: WorkerMessage) => {
      if (m.t !== "ready") return events.message(slot, m);
      clearTimeout(timer);
      slot.ready = true;
      events.ready(slot, m);
      resolve(m);
    });
    worker.on("error", (err) => events.error(slot, err));
    worker.on("exit", (code) => {
      clearTimeout(timer);
      const wasReady = slot.ready;
      slot.ready = false;
      slot.worker = undefined;
      for (const w of slot.waiters.values()) w();
      events.exit(slot, code);
      if (!wasReady) reject(new Error(`worker ${slot.index} exited with ${code} while starting`));
    });
  });
}
