// The turnpike-relay process: parse the configuration, then either print credentials/help or
// run the relay until a signal. Everything process-global (argv, env, stdout, signals, exit)
// comes in through CliIo so the lifecycle can be tested in-process; cli.ts wires in `process`.
//
// Lifecycle:
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

import { pinnedCredentialSecret } from "@turnpike/relay-core";
import {
  asOutput,
  ConfigError,
  createLogger,
  EXIT_CONFIG,
  type Logger,
  type PortWarning,
  parseOrReport,
  withTimeout,
} from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import { parseRelayArgs } from "./config/parse.js";
import type { RelayConfig } from "./config/types.js";
import { formatSocketAddress, revocationList } from "./config/values.js";
import { mintCredentials } from "./credentials.js";
import { deleteAllocations, fetchAllocations, renderAllocationsTable } from "./discovery.js";
import { type HealthServer, startHealthServer } from "./health.js";
import { type RelayMetrics, startMetrics } from "./metrics.js";
import { preflight } from "./preflight.js";
import { ConfigReloader } from "./reload.js";
import type { RunningRelay, StartRelay } from "./types.js";
import { RELAY_VERSION } from "./version.js";

type ProcessEvent = "SIGTERM" | "SIGINT" | "SIGHUP" | "uncaughtException" | "unhandledRejection";

export interface CliIo {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  /** Writes to stdout (the caller adds nothing: text includes its newline). */
  stdout(text: string): void;
  /** Writes one line to stderr (without newline). */
  stderr(line: string): void;
  /** Where log lines go; default the same as stderr. */
  logLine?: (line: string) => void;
  readonly startRelay: StartRelay;
  /** `process` in production. */
  readonly events: {
    on(event: ProcessEvent, listener: (arg?: unknown) => void): unknown;
    off(event: ProcessEvent, listener: (arg?: unknown) => void): unknown;
  };
  /** Immediate exit (second signal, uncaught exception, hung shutdown). */
  exit(code: number): void;
  /** Wall-clock unix seconds, for credential expiry. */
  nowSeconds?: () => number;
  /**
   * The host's word on the configuration before anything starts (preflight.ts): throws a
   * ConfigError, or returns warnings to log. Default: the real checks.
   */
  readonly preflight?: (config: RelayConfig) => Promise<readonly PortWarning[]>;
  /** Called once the relay runs (tests use it to reach the health address). */
  onRunning?: (running: RunningProcess) => void;
}

export interface RunningProcess {
  readonly relay: RunningRelay;
  readonly health: HealthServer | undefined;
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
}

/** Exit code for bad configuration (EX_USAGE-ish: distinct from runtime failure 1). */
export { EXIT_CONFIG };

/** After cleanup is asked for, how long before we give up and exit anyway. */
const SHUTDOWN_GRACE_MS = 10_000;
/** Metrics flush at exit gets at most this long (a dead collector must not hold the exit). */
const METRICS_SHUTDOWN_MS = 5_000;

/** Runs the CLI; resolves with the process exit code once everything is closed. */
export async function runCli(io: CliIo): Promise<number> {
  const parsed = parseOrReport(PROGRAM_NAME, () => parseRelayArgs(io.argv, io.env), io.stderr);
  if (parsed === undefined) return EXIT_CONFIG;
  switch (parsed.command) {
    case "help":
    case "version":
      io.stdout(asOutput(parsed.text));
      return 0;
    case "credentials": {
      if (parsed.pinnedSecret) {
        io.stdout(`${pinnedCredentialSecret(parsed.token)}\n`);
        return 0;
      }
      const nowSeconds = io.nowSeconds?.() ?? Math.floor(Date.now() / 1000);
      const creds = mintCredentials(parsed.token, {
        user: parsed.user,
        port: parsed.port,
        ttl: parsed.ttl,
        uris: parsed.uris,
        nowSeconds,
      });
      for (const note of parsed.notes) io.stderr(`${PROGRAM_NAME} credentials: ${note}`);
      io.stdout(`${JSON.stringify(creds)}\n`);
      return 0;
    }
    case "allocations":
      try {
        if (parsed.end !== undefined) {
          const ended = await deleteAllocations(parsed.url, parsed.adminToken, parsed.end);
          io.stdout(
            parsed.json
              ? `${JSON.stringify({ ended })}\n`
              : `ended ${ended} allocation${ended === 1 ? "" : "s"}\n`,
          );
          return 0;
        }
        const rows = await fetchAllocations(parsed.url, parsed.adminToken, parsed.user);
        io.stdout(
          parsed.json
            ? `${JSON.stringify({ allocations: rows }, null, 2)}\n`
            : renderAllocationsTable(rows),
        );
        return 0;
      } catch (err) {
        io.stderr(`${PROGRAM_NAME} allocations: ${(err as Error).message}`);
        return 1;
      }
    case "relay":
      return runRelay(parsed, io);
  }
}

async function runRelay(config: RelayConfig, io: CliIo): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    write: io.logLine ?? io.stderr,
  });

  let relay: RunningRelay | undefined;
  let health: HealthServer | undefined;
  let metrics: RelayMetrics | undefined;
  let stopping: "drain" | "close" | undefined;
  /** Ends the drain's wait early (a SIGINT while draining). */
  let abortDrain: () => void = () => {};
  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });

  const fatal = (what: string) => (err?: unknown) => {
    logger.error(what, { err: err instanceof Error ? err : String(err) });
    io.exit(1);
  };
  const onUncaught = fatal("uncaught exception");
  const onUnhandled = fatal("unhandled promise rejection");
  io.events.on("uncaughtException", onUncaught);
  io.events.on("unhandledRejection", onUnhandled);

  const cleanup = async (mode: "drain" | "close"): Promise<void> => {
    // If cleanup itself hangs (a socket that never closes), exit anyway.
    const guard = setTimeout(
      () => {
        logger.error("shutdown did not finish in time; exiting", {
          graceSeconds: (config.drainTimeout * 1000 + SHUTDOWN_GRACE_MS) / 1000,
        });
        io.exit(1);
      },
      (mode === "drain" ? config.drainTimeout * 1000 : 0) + SHUTDOWN_GRACE_MS,
    );
    guard.unref();
    try {
      if (relay !== undefined) {
        if (mode === "drain") {
          // A SIGINT during the drain stops waiting: close at once (see stop()).
          await Promise.race([
            relay.drain(config.drainTimeout * 1000),
            new Promise<void>((resolve) => {
              abortDrain = resolve;
            }),
          ]);
        }
        await relay.close();
      }
      await health?.close();
      if (metrics !== undefined) await withTimeout(metrics.shutdown(), METRICS_SHUTDOWN_MS);
      logger.info("stopped");
    } finally {
      clearTimeout(guard);
    }
  };

  const stop = (mode: "drain" | "close", signal: string): void => {
    if (stopping === "close") {
      logger.info("already closing; signal ignored", { signal });
      return;
    }
    if (stopping === "drain" && mode === "close") {
      // SIGINT is "close at once, cleanly", draining or not: a terminal's Ctrl-C reaches the
      // relay as SIGTERM too when a launcher forwards it (pnpm exec), in either order.
      logger.info("SIGINT received while draining: closing now", { signal });
      stopping = "close";
      abortDrain();
      return;
    }
    if (stopping !== undefined) {
      logger.warn("second signal: exiting now", { signal });
      io.exit(1);
      return;
    }
    stopping = mode;
    logger.info(mode === "drain" ? "SIGTERM received: draining" : "SIGINT received: closing", {
      signal,
      drainTimeoutSeconds: mode === "drain" ? config.drainTimeout : undefined,
    });
    // Startup still in progress: the startup path sees `stopping` and cleans up itself.
    if (relay === undefined) return;
    cleanup(mode).then(
      () => finish(0),
      (err) => {
        logger.error("shutdown failed", { err });
        finish(1);
      },
    );
  };
  const onTerm = () => stop("drain", "SIGTERM");
  const onInt = () => stop("close", "SIGINT");
  // SIGHUP: the configuration again (reload.ts); reloads are applied one at a time.
  const reloader = new ConfigReloader(
    config,
    (options) => parseRelayArgs(io.argv, io.env, options),
    logger,
  );
  const onHup = () => {
    if (stopping !== undefined) {
      logger.info("SIGHUP ignored: the relay is stopping");
      return;
    }
    void reloader.reload();
  };
  io.events.on("SIGTERM", onTerm);
  io.events.on("SIGINT", onInt);
  io.events.on("SIGHUP", onHup);

  const detach = (): void => {
    io.events.off("SIGTERM", onTerm);
    io.events.off("SIGINT", onInt);
    io.events.off("SIGHUP", onHup);
    io.events.off("uncaughtException", onUncaught);
    io.events.off("unhandledRejection", onUnhandled);
  };

  for (const warning of [...config.warnings, ...config.revokeFileWarnings]) logger.warn(warning);
  // The host's word on the configuration: listen addresses free, relay addresses its own, relay
  // ports outside the kernel's ephemeral ones. A conflict stops the start like a bad option.
  try {
    for (const w of await (io.preflight ?? preflight)(config)) logger.warn(w.msg, w.fields);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr(`${PROGRAM_NAME}: ${err.message}`);
    detach();
    return EXIT_CONFIG;
  }
  logger.info("starting", {
    version: RELAY_VERSION,
    listen: config.listen.map(formatSocketAddress).join(","),
    tlsListen: config.tlsListen.map(formatSocketAddress).join(",") || undefined,
    relayIp4: config.relayIp4,
    relayIp6: config.relayIp6,
    ports: `${config.minPort}-${config.maxPort}`,
    pinnedPorts:
      config.pinnedPorts === undefined
        ? undefined
        : `${config.pinnedPorts.min}-${config.pinnedPorts.max}`,
    realm: config.realm,
  });

  try {
    metrics = await startMetrics({
      env: io.env,
      prometheusListen: config.prometheusListen,
      logger,
    });
    if (metrics.otlpEndpoint !== undefined) {
      logger.info("exporting metrics over OTLP gRPC", { endpoint: metrics.otlpEndpoint });
    }
    const prom = metrics.prometheusAddress();
    if (prom !== undefined) {
      logger.info("serving Prometheus metrics", {
        url: `http://${formatSocketAddress(prom)}/metrics`,
      });
    }
    if (config.healthListen !== null) {
      health = await startHealthServer(
        config.healthListen,
        () => ({
          ready: relay?.ready ?? false,
          draining: stopping === "drain" || (relay?.draining ?? false),
          udpIo: relay?.udpIo,
          kernelPath: relay?.kernelPath,
          workers: relay === undefined ? undefined : (relay.workers ?? 1),
          degraded: relay?.degraded,
          configGeneration: reloader.generation,
          lastReload: reloader.lastReload,
        }),
        {
          maxConnections: config.healthMaxConnections,
          discovery: {
            token: config.adminToken,
            allocations: () => relay?.allocations() ?? [],
            end: (which) => relay?.endAllocations(which) ?? 0,
          },
        },
      );
      logger.info("health endpoints", {
        url: `http://${formatSocketAddress(health.address())}`,
        discovery: config.adminToken !== undefined ? "/v1/allocations" : undefined,
      });
    }
    const ownPorts = [health?.address().port, prom?.port].filter((p) => p !== undefined);
    if (config.workersNote !== undefined) logger.info(config.workersNote);
    const generation = reloader.generation;
    relay = await io.startRelay(reloader.config, {
      logger,
      metrics,
      ownPorts,
      writeLogLine: io.logLine ?? io.stderr,
      configGeneration: generation,
    });
    // A SIGHUP during start-up: the relay gets that configuration now.
    await reloader.attach(relay, generation);
    const revoked = revocationList(reloader.config).length;
    if (revoked > 0) logger.info("revocation list", { revocationEntries: revoked });
  } catch (err) {
    // A listener that lost its address to another program since the preflight: one line, as
    // for a bad option; anything else is a failure to start.
    if (err instanceof ConfigError) io.stderr(`${PROGRAM_NAME}: ${err.message}`);
    else logger.error("failed to start", { err: err instanceof Error ? err : String(err) });
    await relay?.close().catch(() => {});
    await health?.close();
    if (metrics !== undefined) await withTimeout(metrics.shutdown(), METRICS_SHUTDOWN_MS);
    detach();
    return err instanceof ConfigError ? EXIT_CONFIG : 1;
  }

  const a = relay.addresses();
  logger.info("listening", {
    udp: a.udp.map(formatSocketAddress).join(","),
    tcp: a.tcp.map(formatSocketAddress).join(","),
    tls: a.tls.map(formatSocketAddress).join(",") || undefined,
  });
  // The driver logs `ready` itself once every listener is bound (CLI contract).
  if (!relay.ready) logger.warn("relay started but reports not ready");
  io.onRunning?.({ relay, health, metrics, logger });

  if (stopping !== undefined) {
    // A signal arrived during startup.
    cleanup(stopping).then(
      () => finish(0),
      () => finish(1),
    );
  }
  const code = await finished;
  detach();
  return code;
}
