// The turnpike-tunnel process: parse the configuration, then either `list` or run the supervisor
// until a signal. Process globals come in through CliIo so the lifecycle is testable.
//
//   SIGTERM / SIGINT   release every allocation (Refresh lifetime 0), close the admin API,
//                      flush metrics, exit 0; a second signal exits at once (1)

import { readFileSync } from "node:fs";
import { parseRestUsername, pinOfUsername, userOfUsername } from "@turnpike/relay-core/client";
import {
  asOutput,
  CryptoRandom,
  createLogger,
  EXIT_CONFIG,
  type Logger,
  parseOrReport,
  releaseOptimizingCompiler,
  withTimeout,
} from "@turnpike/runtime-kit";
import { type AdminServer, startAdminServer } from "./admin.js";
import { PROGRAM_NAME, parseTunnelArgs, type TunnelConfig } from "./config/index.js";
import { createCredentialSource } from "./credentials.js";
import { fetchList, renderTable } from "./list.js";
import { startMetrics } from "./metrics.js";
import { DnsResolver, StaticResolver } from "./resolver.js";
import type { ListEntry } from "./supervisor.js";
import { TunnelSupervisor } from "./supervisor.js";

export interface CliIo {
  readonly argv: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  stdout(text: string): void;
  stderr(line: string): void;
  readonly events: {
    on(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
    off(event: "SIGTERM" | "SIGINT", listener: () => void): unknown;
  };
  exit(code: number): void;
}

export { EXIT_CONFIG };

export async function runCli(io: CliIo): Promise<number> {
  const parsed = parseOrReport(PROGRAM_NAME, () => parseTunnelArgs(io.argv, io.env), io.stderr);
  if (parsed === undefined) return EXIT_CONFIG;
  switch (parsed.command) {
    case "help":
    case "version":
      io.stdout(asOutput(parsed.text));
      return 0;
    case "list":
      try {
        const rows = await fetchList(parsed.admin, parsed.adminToken);
        io.stdout(
          parsed.json ? `${JSON.stringify(rows, null, 2)}\n` : renderTable(rows as ListEntry[]),
        );
        return 0;
      } catch (err) {
        io.stderr(`${PROGRAM_NAME} list: ${(err as Error).message}`);
        return 1;
      }
    case "run":
      return run(parsed, io);
  }
}

/**
 * Tests only (--test-clock): the access-window clock reads an ISO 8601 instant from `path` on
 * every look; an unreadable or invalid file keeps the last good instant (the system clock
 * before the first).
 */
function fileClock(path: string, logger: Logger): () => Date {
  let last: Date | undefined;
  let warned = false;
  return () => {
    let text = "";
    try {
      text = readFileSync(path, "utf8").trim();
    } catch {
      // keep the last good instant
    }
    const d = new Date(text);
    if (text !== "" && !Number.isNaN(d.getTime())) {
      last = d;
      warned = false;
    } else if (!warned) {
      warned = true;
      logger.warn("--test-clock file holds no ISO 8601 instant", { path });
    }
    return last ?? new Date();
  };
}

async function run(config: TunnelConfig, io: CliIo): Promise<number> {
  const logger = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    write: io.stderr,
  });
  for (const w of config.warnings) logger.warn(w);
  if (config.credentials.kind === "key") {
    // Who the platform made this tunnel, and until when (the key cannot renew itself).
    const rest = parseRestUsername(config.credentials.username);
    const pin = pinOfUsername(config.credentials.username);
    logger.info("credentials from the tunnel key", {
      user: userOfUsername(config.credentials.username),
      pinnedPort: pin?.port,
      expires: rest === undefined ? undefined : new Date(rest.expiry * 1000).toISOString(),
    });
  }
  const resolver =
    config.resolve.size > 0
      ? new StaticResolver(config.resolve.entries(), new DnsResolver())
      : new DnsResolver();
  const supervisor = new TunnelSupervisor({
    relays: config.relays,
    credentials: createCredentialSource(config.credentials),
    resolver,
    logger,
    random: new CryptoRandom(),
    dnsInterval: config.dnsInterval,
    keepalive: config.keepalive,
    backoffBase: config.backoffBase,
    backoffMax: config.backoffMax,
    lifetime: config.lifetime,
    software: config.software,
    tls: config.tls,
    udpFlowIdleMs: config.udpFlowIdle * 1000,
    allowMetadataTargets: config.allowMetadataTargets,
    tcpSplice: config.tcpSplice,
    ...(config.testClock !== undefined
      ? { date: fileClock(config.testClock, logger), windowCheckMs: 200 }
      : {}),
  });
  for (const s of config.services) {
    const svc = supervisor.addService(s);
    logger.info("service exposed", {
      id: svc.id,
      name: s.name,
      target: `${s.protocol}://${s.target.host}:${s.target.port}`,
    });
  }
  const metrics = await startMetrics(supervisor, io.env, logger);
  let admin: AdminServer | undefined;
  if (config.adminListen !== null) {
    const listen = config.adminListen;
    const at = "path" in listen ? `unix:${listen.path}` : `${listen.host}:${listen.port}`;
    try {
      admin = await startAdminServer({
        listen,
        token: config.adminToken,
        supervisor,
        maxPermissions: config.maxPermissions,
        allowMetadataTargets: config.allowMetadataTargets,
        logger,
      });
      const a = admin.address;
      logger.info("admin API listening", {
        address: "path" in a ? `unix:${a.path}` : `${a.host}:${a.port}`,
        auth: config.adminToken !== undefined ? "bearer token" : "socket owner only (mode 0600)",
      });
    } catch (err) {
      logger.error(`--admin-listen ${at}: the admin API could not listen`, {
        err: (err as Error).message,
      });
      return 1;
    }
  }
  await supervisor.start();
  logger.info("started", {
    relays: config.relays.map((r) => r.text),
    services: config.services.length,
  });
  // Every module is loaded: TurboFan, held by the launcher, compiles the pipes from now on
  // (runtime-kit startup-tiering.ts).
  releaseOptimizingCompiler();

  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = () => {
      if (stopping) {
        io.exit(1);
        return;
      }
      stopping = true;
      logger.info("stopping: releasing allocations");
      void (async () => {
        await supervisor.stop();
        await admin?.close();
        // A dead collector must not hold the exit.
        await withTimeout(metrics.shutdown(), 5000);
        io.events.off("SIGTERM", onSignal);
        io.events.off("SIGINT", onSignal);
        resolve(0);
      })();
    };
    io.events.on("SIGTERM", onSignal);
    io.events.on("SIGINT", onSignal);
  });
}
