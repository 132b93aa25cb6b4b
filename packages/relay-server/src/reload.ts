// SIGHUP (and `systemctl reload`): read the configuration again and apply what can change live.
//
//   1. read      the same command line and environment (a process cannot re-read its own
//                environment: an EnvironmentFile= or a Kubernetes env var changes only with a
//                restart), and the files they name anew: --config, --token-file, --revoke-file,
//                --tls-cert/--tls-key. Any error: keep the running configuration entirely, one
//                ERROR line naming the option and why.
//   2. plan      config/reload.ts: the live settings of the new configuration, the restart-only
//                options that changed (one WARN line naming them)
//   3. apply     a new generation; the log level here, then every engine (RunningRelay
//                applyReloadable: the workers' supervisor holds the newest generation for
//                workers that start later)
//   4. report    one INFO line: what changed (option names, never a value), the generation
//
// Reloads run one at a time, in order of arrival. One that arrives while the relay starts is
// applied once it runs (attach).

import { ConfigError, type Logger } from "@turnpike/runtime-kit";
import { planReload } from "./config/reload.js";
import type { ParsedCommand, ParseOptions, RelayConfig } from "./config/types.js";
import { revocationList } from "./config/values.js";
import type { RunningRelay } from "./types.js";

export class ConfigReloader {
  /** The generation of `config`: 1 at start, one more per reload applied. */
  generation = 1;
  /** How the last reload ended (undefined before the first). */
  lastReload: "applied" | "refused" | undefined;
  private running: RelayConfig;
  private relay: RunningRelay | undefined;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    start: RelayConfig,
    /** Parses the process's command line and environment again (parseRelayArgs). */
    private readonly read: (options: ParseOptions) => ParsedCommand,
    private readonly log: Logger,
  ) {
    this.running = start;
  }

  /** The configuration in force: the start one with the live settings of the last reload. */
  get config(): RelayConfig {
    return this.running;
  }

  /** The relay runs with `config` of `generation`: it gets what arrived since. */
  attach(relay: RunningRelay, generation: number): Promise<void> {
    this.relay = relay;
    if (generation < this.generation) {
      this.queue = this.queue.then(() => this.apply().then(() => undefined));
    }
    return this.queue;
  }

  /** A SIGHUP: resolves once this reload (and every one before it) is done. */
  reload(): Promise<void> {
    this.queue = this.queue
      .then(() => this.reloadNow())
      .catch((err: unknown) => {
        // Never an unhandled rejection (the process would exit): say it, keep serving.
        this.log.error("reload failed", { err: err instanceof Error ? err : String(err) });
      });
    return this.queue;
  }

  private async reloadNow(): Promise<void> {
    let next: RelayConfig;
    try {
      const running = this.running;
      // A secret generated at start stays: credentials minted with it keep working.
      const parsed = this.read(
        running.tokenGenerated ? { randomToken: () => running.tokens[0]! } : {},
      );
      if (parsed.command !== "relay") throw new ConfigError(`not a relay configuration`);
      next = parsed;
    } catch (err) {
      this.lastReload = "refused";
      this.log.error("reload: kept the previous configuration", {
        error: err instanceof Error ? err.message : String(err),
      });
      return;
    }
    for (const warning of next.revokeFileWarnings) this.log.warn(warning);
    const plan = planReload(this.running, next);
    if (plan.restartOnly.length > 0) {
      this.log.warn(`reload: these need a restart: ${plan.restartOnly.join(", ")}`);
    }
    this.running = plan.config;
    this.generation++;
    this.log.setLevel(this.running.logLevel);
    const allocationsEnded = await this.apply();
    this.lastReload = "applied";
    this.log.info("reload: applied", {
      generation: this.generation,
      changed: plan.changed.length > 0 ? plan.changed : "nothing",
      revocationEntries: revocationList(this.running).length,
      allocationsEnded,
    });
  }

  /** The newest generation to the relay, if it runs; how many allocations it ended. */
  private async apply(): Promise<number | undefined> {
    if (this.relay === undefined) return undefined;
    const outcome = await this.relay.applyReloadable(this.running, this.generation);
    for (const problem of outcome.problems) this.log.error(problem);
    return outcome.allocationsEnded;
  }
}
