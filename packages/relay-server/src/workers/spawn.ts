// One engine's life as the supervisor sees it: its slot (which keeps its place in the port
// slices and listening sockets across restarts), starting it and waiting for it to be ready,
// noticing that it ended, how long to wait before the next start, and ending it at close.
// Engine 0 runs on the main thread (engine-host.ts on one end of a MessageChannel, the slot on
// the other): the process's own isolate serves, so N engines cost N-1 worker threads, each a
// V8 isolate of its own. It is not restarted: an exception in it is the process's, as with
// --workers 1. Engines 1..N-1 are worker threads (worker.ts), restarted when they die.

import { MessageChannel, type MessagePort, Worker } from "node:worker_threads";
import { runEngine } from "./engine-host.js";
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

/** Engine number `index`: where it runs now, if anywhere. */
export class WorkerSlot {
  /**
   * The worker thread that holds the place now (none while it restarts), or for engine 0 the
   * main thread's end of the MessageChannel to it.
   */
  engine: Worker | MessagePort | undefined;
  ready = false;
  restarts = 0;
  /** Who waits for this engine's `drained` or `closed` (resolved too when it ends). */
  readonly waiters = new Map<"drained" | "closed", () => void>();
  /** The last stats refresh this engine answered. */
  statsGen = 0;

  constructor(readonly index: number) {}

  /** Started and not ended (it may not be ready yet). */
  get running(): boolean {
    return this.engine !== undefined;
  }

  /** Up and answering: a message sent now is handled. */
  get serving(): boolean {
    return this.engine !== undefined && this.ready;
  }

  post(message: SupervisorMessage): void {
    this.engine?.postMessage(message);
  }

  /** The wait before the next restart; each call counts one more. */
  nextRestartDelayMs(): number {
    return RESTART_DELAYS_MS[Math.min(this.restarts++, RESTART_DELAYS_MS.length - 1)]!;
  }
}

/** What the supervisor does with what an engine reports. */
export interface WorkerEvents {
  /** It is ready (before the start's promise resolves). */
  ready(slot: WorkerSlot, ready: WorkerReady): void;
  /** Any other message. */
  message(slot: WorkerSlot, message: Exclude<WorkerMessage, WorkerReady>): void;
  /** A worker thread failed (engine 0's failures are the process's). */
  error(slot: WorkerSlot, err: unknown): void;
  /** A worker thread ended (the slot is empty and its waiters were released). */
  exit(slot: WorkerSlot, code: number): void;
}

/**
 * Start the engine of `slot`: engine 0 on this thread (its log lines go to `writeLogLine`
 * directly), the others in a worker thread. Resolves when it reports ready; rejects when it
 * fails or ends first, or does not report within READY_TIMEOUT_MS.
 */
export function startEngine(
  slot: WorkerSlot,
  init: WorkerInit,
  events: WorkerEvents,
  writeLogLine: (line: string) => void,
): Promise<WorkerReady> {
  return slot.index === 0
    ? startInThisThread(slot, init, events, writeLogLine)
    : spawnWorker(slot, init, events);
}

async function startInThisThread(
  slot: WorkerSlot,
  init: WorkerInit,
  events: WorkerEvents,
  writeLogLine: (line: string) => void,
): Promise<WorkerReady> {
  const { port1, port2 } = new MessageChannel();
  slot.engine = port1;
  slot.ready = false;
  const ready = whenReady(slot, port1, events);
  try {
    // A clone, as a worker's workerData is (SharedArrayBuffers stay shared): the engine holds
    // nothing of the supervisor's (its live configuration, its secret) but a copy.
    await runEngine(structuredClone(init), port2, writeLogLine);
  } catch (err) {
    ready.cancel();
    port1.close();
    slot.engine = undefined;
    throw err;
  }
  return ready.promise;
}

function spawnWorker(
  slot: WorkerSlot,
  init: WorkerInit,
  events: WorkerEvents,
): Promise<WorkerReady> {
  const worker = new Worker(new URL("./worker.js", import.meta.url), {
    workerData: init,
    ...(workerResourceLimits && { resourceLimits: workerResourceLimits }),
  });
  slot.engine = worker;
  slot.ready = false;
  const ready = whenReady(slot, worker, events);
  const ended = new Promise<never>((_, reject) => {
    worker.on("error", (err) => events.error(slot, err));
    worker.on("exit", (code) => {
      ready.cancel();
      const wasReady = slot.ready;
      slot.ready = false;
      slot.engine = undefined;
      for (const w of slot.waiters.values()) w();
      events.exit(slot, code);
      if (!wasReady) reject(new Error(`worker ${slot.index} exited with ${code} while starting`));
    });
  });
  return Promise.race([ready.promise, ended]);
}

/** The engine's messages from now on; `promise` resolves with its `ready`. */
function whenReady(
  slot: WorkerSlot,
  from: Worker | MessagePort,
  events: WorkerEvents,
): { promise: Promise<WorkerReady>; cancel(): void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<WorkerReady>((resolve, reject) => {
    timer = setTimeout(
      () => reject(new Error(`worker ${slot.index} not ready within ${READY_TIMEOUT_MS} ms`)),
      READY_TIMEOUT_MS,
    );
    from.on("message", (m: WorkerMessage) => {
      if (m.t !== "ready") return events.message(slot, m);
      clearTimeout(timer);
      slot.ready = true;
      events.ready(slot, m);
      resolve(m);
    });
  });
  // Not unhandled while engine 0 still starts (nobody awaits this yet); the start's caller
  // sees the rejection all the same.
  promise.catch(() => {});
  return { promise, cancel: () => clearTimeout(timer) };
}

/**
 * After its `closed` (or the close deadline): a worker thread is waited for, and terminated if
 * it does not end; engine 0's port is released (the engine closed its own end).
 */
export async function endEngine(slot: WorkerSlot): Promise<void> {
  const engine = slot.engine;
  if (engine === undefined) return;
  if (!(engine instanceof Worker)) {
    engine.close();
    slot.engine = undefined;
    slot.ready = false;
    return;
  }
  const exited = new Promise<void>((r) => engine.once("exit", () => r()));
  await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
  if (slot.engine !== undefined) await engine.terminate();
}
