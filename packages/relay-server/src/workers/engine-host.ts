// One relay engine as the supervisor (pool.ts) sees it, whatever thread it runs on: the
// ordinary engine (engine/driver.ts) with its own relay-core, SO_REUSEPORT listeners, a slice
// of the relay ports, and the limits, secret and log stream it shares with the others, started
// from its WorkerInit and answering messages.ts over `port`. A worker thread runs it on its
// parentPort (worker.ts); engine 0 runs it on the main thread, on one end of a MessageChannel
// whose other end is its slot's (spawn.ts): the same protocol, as asynchronous, for every engine.

import type { MessagePort } from "node:worker_threads";
import { createLogger } from "@turnpike/runtime-kit";
import { startRelay } from "../engine/driver.js";
import { openSharedState } from "../shared/shared-state.js";
import { createRelayStats, createRelayTelemetry } from "../stats.js";
import type { SupervisorMessage, WorkerInit, WorkerMessage } from "./messages.js";
import { snapshotOf } from "./stats-sync.js";

/**
 * Start the engine `init` describes; resolves once it reported ready. Its finished log lines go
 * to `writeLogLine`: by default as `log` messages to the supervisor, which writes them out.
 */
export async function runEngine(
  init: WorkerInit,
  port: MessagePort,
  writeLogLine?: (line: string) => void,
): Promise<void> {
  const post = (m: WorkerMessage) => port.postMessage(m);
  const logger = createLogger({
    level: init.config.logLevel,
    format: init.config.logFormat,
    write: writeLogLine ?? ((line) => post({ t: "log", line })),
    fields: { worker: init.index },
  });
  const stats = createRelayStats();
  const telemetry = createRelayTelemetry(stats);
  const routeHandlers: ((from: number, message: unknown) => void)[] = [];

  const relay = await startRelay(init.config, {
    logger,
    metrics: { stats, telemetry },
    ownPorts: init.ownPorts,
    configGeneration: init.generation,
    worker: {
      portSlice: init.portSlice,
      index: init.index,
      count: init.count,
      shared: openSharedState(init.shared, init.index),
      secret: init.secret,
      route: (to, message) => post({ t: "route", to, message }),
      listenFds: init.listenFds,
      ...(init.kernelPath && { kernelPath: init.kernelPath }),
      onRoute: (handler) => routeHandlers.push(handler),
    },
  });

  const sendStats = (gen = 0) => post({ t: "stats", snapshot: snapshotOf(stats), gen });
  const statsTimer = setInterval(() => sendStats(), init.statsIntervalMs);
  statsTimer.unref();
  sendStats();
  post({
    t: "ready",
    addresses: relay.addresses(),
    udpIo: relay.udpIo,
    kernelPath: relay.kernelPath,
    generation: init.generation,
  });

  port.on("message", (m: SupervisorMessage) => {
    switch (m.t) {
      case "drain":
        relay.drain(m.timeoutMs).then(() => {
          sendStats();
          post({ t: "drained" });
        });
        return;
      case "close":
        clearInterval(statsTimer);
        relay.close().then(() => {
          sendStats();
          post({ t: "closed" });
          // What was posted is still delivered; then neither end keeps the thread alive.
          port.close();
        });
        return;
      case "stats-now":
        sendStats(m.gen);
        return;
      case "crash":
        // The --test-crash-worker hook: a real uncaught exception in this thread, so the
        // supervisor's crash handling is tested for what it is (sent to worker threads only:
        // on the main thread it would end the process).
        setImmediate(() => {
          throw new Error("crash requested (--test-crash-worker, SIGUSR2)");
        });
        return;
      case "ask":
        Promise.resolve(
          m.what === "allocations"
            ? relay.allocations()
            : m.what === "end"
              ? relay.endAllocations(m.which)
              : relay.applyReloadable(m.config, m.generation),
        ).then((value) => {
          if (m.id !== 0) post({ t: "answer", id: m.id, value });
        });
        return;
      case "route":
        for (const h of routeHandlers) h(m.from, m.message);
        return;
    }
  });
}
