// A relay engine in a worker thread (engines 1..N-1 of --workers N; its supervisor: pool.ts):
// engine-host.ts's engine, started with the workerData the supervisor gave it, answering on the
// thread's parentPort. An uncaught exception ends this thread only; the supervisor restarts it.

import { parentPort, workerData } from "node:worker_threads";
import { runEngine } from "./engine-host.js";
import type { WorkerInit } from "./messages.js";

await runEngine(workerData as WorkerInit, parentPort!);
