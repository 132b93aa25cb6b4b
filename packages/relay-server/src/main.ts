// The turnpike-relay process: parse the configuration, then either print credentials/help, ask
// a running relay for its allocations, or run the relay until a signal. Everything
// process-global (argv, env, stdout, signals, exit) comes in through CliIo so the lifecycle
// can be tested in-process; cli.ts wires in `process`. runRelay is the start sequence:
// logger, signal handlers (lifecycle.ts: what each signal does), the host's checks, metrics,
// health, the relay, then wait for the shutdown.

import {
  asOutput,
  ConfigError,
  createLogger,
  EXIT_CONFIG,
  type Logger,
  type PortWarning,
  parseOrReport,
  releaseOptimizingCompiler,
} from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import { parseRelayArgs } from "./config/parse.js";
import type { RelayConfig } from "./config/types.js";
import { formatSocketAddress, revocationList } from "./config/values.js";
import { runCredentialsCommand } from "./credentials.js";
import { runAllocationsCommand } from "./discovery-client.js";
import { type HealthServer, startHealthServer } from "./health.js";
import { type ProcessHooks, RelayLifecycle } from "./lifecycle.js";
import { type RelayMetrics, startMetrics } from "./metrics.js";
import { preflight } from "./preflight.js";
import { ConfigReloader } from "./reload.js";
import type { RunningRelay, StartRelay } from "./types.js";
import { RELAY_VERSION } from "./version.js";

export interface CliIo extends ProcessHooks {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  /** Writes to stdout (the caller adds nothing: text includes its newline). */
  stdout(text: string): void;
  /** Writes one line to stderr (without newline). */
  stderr(line: string): void;
  /** Where log lines go; default the same as stderr. */
  logLine?: (line: string) => void;
  readonly startRelay: StartRelay;
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

/** Runs the CLI; resolves with the process exit code once everything is closed. */
export async function runCli(io: CliIo): Promise<number> {
  const parsed = parseOrReport(PROGRAM_NAME, () => parseRelayArgs(io.argv, io.env), io.stderr);
  if (parsed === undefined) return EXIT_CONFIG;
  switch (parsed.command) {
    case "help":
    case "version":
      io.stdout(asOutput(parsed.text));
      return 0;
    case "credentials":
      return runCredentialsCommand(
        parsed,
        io.nowSeconds?.() ?? Math.floor(Date.now() / 1000),
        io.stdout,
        io.stderr,
      );
    case "allocations":
      return runAllocationsCommand(parsed, io.stdout, io.stderr);
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
  // SIGHUP: the configuration again (reload.ts).
  const reloader = new ConfigReloader(
    config,
    (options) => parseRelayArgs(io.argv, io.env, options),
    logger,
  );
  const life = new RelayLifecycle(config, io, logger, reloader);
  const parts = life.parts;

  for (const warning of [...config.warnings, ...config.revokeFileWarnings]) logger.warn(warning);
  // The host's word on the configuration: listen addresses free, relay addresses its own, relay
  // ports outside the kernel's ephemeral ones. A conflict stops the start like a bad option.
  try {
    for (const w of await (io.preflight ?? preflight)(config)) logger.warn(w.msg, w.fields);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    io.stderr(`${PROGRAM_NAME}: ${err.message}`);
    life.detach();
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

  let metrics: RelayMetrics;
  let relay: RunningRelay;
  try {
    metrics = await startMetrics({
      env: io.env,
      prometheusListen: config.prometheusListen,
      logger,
    });
    parts.metrics = metrics;
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
      parts.health = await startHealthServer(
        config.healthListen,
        () => ({
          ready: parts.relay?.ready ?? false,
          draining: life.stopping === "drain" || (parts.relay?.draining ?? false),
          udpIo: parts.relay?.udpIo,
          kernelPath: parts.relay?.kernelPath,
          workers: parts.relay === undefined ? undefined : (parts.relay.workers ?? 1),
          degraded: parts.relay?.degraded,
          configGeneration: reloader.generation,
          lastReload: reloader.lastReload,
        }),
        {
          maxConnections: config.healthMaxConnections,
          discovery: {
            token: config.adminToken,
            allocations: () => parts.relay?.allocations() ?? [],
            end: (which) => parts.relay?.endAllocations(which) ?? 0,
          },
        },
      );
      logger.info("health endpoints", {
        url: `http://${formatSocketAddress(parts.health.address())}`,
        discovery: config.adminToken !== undefined ? "/v1/allocations" : undefined,
      });
    }
    const ownPorts = [parts.health?.address().port, prom?.port].filter((p) => p !== undefined);
    if (config.workersNote !== undefined) logger.info(config.workersNote);
    const generation = reloader.generation;
    relay = await io.startRelay(reloader.config, {
      logger,
      metrics,
      ownPorts,
      writeLogLine: io.logLine ?? io.stderr,
      configGeneration: generation,
    });
    parts.relay = relay;
    // A SIGHUP during start-up: the relay gets that configuration now.
    await reloader.attach(relay, generation);
    const revoked = revocationList(reloader.config).length;
    if (revoked > 0) logger.info("revocation list", { revocationEntries: revoked });
  } catch (err) {
    // A listener that lost its address to another program since the preflight: one line, as
    // for a bad option; anything else is a failure to start.
    if (err instanceof ConfigError) io.stderr(`${PROGRAM_NAME}: ${err.message}`);
    else logger.error("failed to start", { err: err instanceof Error ? err : String(err) });
    await life.closeAfterFailedStart();
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
  // Every module is loaded: TurboFan, held by the launcher, compiles the data path from now on
  // (runtime-kit startup-tiering.ts).
  releaseOptimizingCompiler();
  io.onRunning?.({ relay, health: parts.health, metrics, logger });
  return life.run();
}
