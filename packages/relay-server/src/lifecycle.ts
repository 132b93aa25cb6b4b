// The relay process from its first signal handler to its exit: what each signal does, and the
// shutdown that closes the relay, health and metrics within a bounded time.
//
//   SIGTERM          drain: refuse new allocations, wait up to --drain-timeout for live ones,
//                    close every socket, flush metrics, exit 0
//   SIGINT           close at once, flush metrics, exit 0 (also while draining: the drain's
//                    wait ends and the close follows)
//   SIGHUP           reload (reload.ts): read the configuration and the files it names again,
//                    apply what can change live on every worker (secrets, revocation list,
//                    TLS pair, log level, limits), name what needs a restart; a bad
//                    configuration keeps the running one
//   second signal    a second SIGTERM while draining: exit now (1); anything while closing:
//                    ignored (closing is already the immediate path, bounded by
//                    SHUTDOWN_GRACE_MS). A Ctrl-C in a terminal reaches the relay twice when a
//                    launcher forwards it too (`pnpm start` forwards SIGINT, `pnpm exec` sends
//                    SIGTERM, in either order), and must not turn a clean close into exit 1.
//   uncaught error   log it, exit 1: never continue in an unknown state
//
// A signal that arrives while the relay starts is acted on once it runs (run()).

import { type Logger, withTimeout } from "@turnpike/runtime-kit";
import type { RelayConfig } from "./config/types.js";
import type { HealthServer } from "./health.js";
import type { RelayMetrics } from "./metrics.js";
import type { ConfigReloader } from "./reload.js";
import type { RunningRelay } from "./types.js";

export type ProcessEvent =
  | "SIGTERM"
  | "SIGINT"
  | "SIGHUP"
  | "uncaughtException"
  | "unhandledRejection";

/** The process-global parts the lifecycle needs (`process` in production). */
export interface ProcessHooks {
  readonly events: {
    on(event: ProcessEvent, listener: (arg?: unknown) => void): unknown;
    off(event: ProcessEvent, listener: (arg?: unknown) => void): unknown;
  };
  /** Immediate exit (second signal, uncaught exception, hung shutdown). */
  exit(code: number): void;
}

/** After cleanup is asked for, how long before we give up and exit anyway. */
const SHUTDOWN_GRACE_MS = 10_000;
/** Metrics flush at exit gets at most this long (a dead collector must not hold the exit). */
const METRICS_SHUTDOWN_MS = 5_000;

export class RelayLifecycle {
  /** Set by the first SIGTERM (drain) or SIGINT (close). */
  stopping: "drain" | "close" | undefined;
  /** What the shutdown closes, filled in as the start makes each. */
  readonly parts: { relay?: RunningRelay; health?: HealthServer; metrics?: RelayMetrics } = {};
  /** Ends the drain's wait early (a SIGINT while draining). */
  #abortDrain: () => void = () => {};
  #finish: (code: number) => void = () => {};
  readonly #finished = new Promise<number>((resolve) => {
    this.#finish = resolve;
  });
  readonly #listeners: [ProcessEvent, (arg?: unknown) => void][];

  constructor(
    private readonly config: RelayConfig,
    private readonly hooks: ProcessHooks,
    private readonly logger: Logger,
    reloader: ConfigReloader,
  ) {
    const fatal = (what: string) => (err?: unknown) => {
      logger.error(what, { err: err instanceof Error ? err : String(err) });
      hooks.exit(1);
    };
    this.#listeners = [
      ["uncaughtException", fatal("uncaught exception")],
      ["unhandledRejection", fatal("unhandled promise rejection")],
      ["SIGTERM", () => this.#stop("drain", "SIGTERM")],
      ["SIGINT", () => this.#stop("close", "SIGINT")],
      // Reloads are applied one at a time (reload.ts).
      [
        "SIGHUP",
        () => {
          if (this.stopping !== undefined) {
            logger.info("SIGHUP ignored: the relay is stopping");
            return;
          }
          void reloader.reload();
        },
      ],
    ];
    for (const [event, listener] of this.#listeners) hooks.events.on(event, listener);
  }

  /** The relay runs: resolves with the exit code once a signal has shut it down. */
  async run(): Promise<number> {
    if (this.stopping !== undefined) {
      // A signal arrived during startup.
      this.#cleanup(this.stopping).then(
        () => this.#finish(0),
        () => this.#finish(1),
      );
    }
    const code = await this.#finished;
    this.detach();
    return code;
  }

  /** The start failed: close what it made, and let the process go. */
  async closeAfterFailedStart(): Promise<void> {
    await this.parts.relay?.close().catch(() => {});
    await this.parts.health?.close();
    if (this.parts.metrics !== undefined) {
      await withTimeout(this.parts.metrics.shutdown(), METRICS_SHUTDOWN_MS);
    }
    this.detach();
  }

  /** No more signal handlers of ours on the process. */
  detach(): void {
    for (const [event, listener] of this.#listeners) this.hooks.events.off(event, listener);
  }

  #stop(mode: "drain" | "close", signal: string): void {
    const logger = this.logger;
    if (this.stopping === "close") {
      logger.info("already closing; signal ignored", { signal });
      return;
    }
    if (this.stopping === "drain" && mode === "close") {
      // SIGINT is "close at once, cleanly", draining or not: a terminal's Ctrl-C reaches the
      // relay as SIGTERM too when a launcher forwards it (pnpm exec), in either order.
      logger.info("SIGINT received while draining: closing now", { signal });
      this.stopping = "close";
      this.#abortDrain();
      return;
    }
    if (this.stopping !== undefined) {
      logger.warn("second signal: exiting now", { signal });
      this.hooks.exit(1);
      return;
    }
    this.stopping = mode;
    logger.info(mode === "drain" ? "SIGTERM received: draining" : "SIGINT received: closing", {
      signal,
      drainTimeoutSeconds: mode === "drain" ? this.config.drainTimeout : undefined,
    });
    // Startup still in progress: run() sees `stopping` and cleans up itself.
    if (this.parts.relay === undefined) return;
    this.#cleanup(mode).then(
      () => this.#finish(0),
      (err) => {
        logger.error("shutdown failed", { err });
        this.#finish(1);
      },
    );
  }

  async #cleanup(mode: "drain" | "close"): Promise<void> {
    const { config, logger, parts } = this;
    // If cleanup itself hangs (a socket that never closes), exit anyway.
    const guard = setTimeout(
      () => {
        logger.error("shutdown did not finish in time; exiting", {
          graceSeconds: (config.drainTimeout * 1000 + SHUTDOWN_GRACE_MS) / 1000,
        });
        this.hooks.exit(1);
      },
      (mode === "drain" ? config.drainTimeout * 1000 : 0) + SHUTDOWN_GRACE_MS,
    );
    guard.unref();
    try {
      if (parts.relay !== undefined) {
        if (mode === "drain") {
          // A SIGINT during the drain stops waiting: close at once (see #stop()).
          await Promise.race([
            parts.relay.drain(config.drainTimeout * 1000),
            new Promise<void>((resolve) => {
              this.#abortDrain = resolve;
            }),
          ]);
        }
        await parts.relay.close();
      }
      await parts.health?.close();
      if (parts.metrics !== undefined) {
        await withTimeout(parts.metrics.shutdown(), METRICS_SHUTDOWN_MS);
      }
      logger.info("stopped");
    } finally {
      clearTimeout(guard);
    }
  }
}
