// THE LIVE CONFIGURATION: the configuration every worker runs with and its generation (1 at
// start, one more per reload: reload.ts). A worker starts with the current one (workerData),
// every reload goes to every worker there is, starting ones included, and a worker that
// reports ready with an older generation than the current one is sent the current one at
// once; a worker applies only generations newer than its own (engine/driver.ts,
// applyReloadable). So a worker restarted after a crash, or one starting while a SIGHUP
// arrives, never runs with a revocation list, secrets or certificate older than the others'.

import type { RelayConfig, SocketAddress } from "../config/types.js";
import type { RelayAddresses, ReloadOutcome } from "../types.js";
import type { SupervisorMessage } from "./messages.js";

export class LiveConfiguration {
  constructor(
    /**
     * What workers after the first start with: listen ports as bound, and the live settings
     * of the newest reload.
     */
    private current: RelayConfig,
    /** The generation of `current`'s live settings. */
    private currentGeneration: number,
  ) {}

  get config(): RelayConfig {
    return this.current;
  }

  get generation(): number {
    return this.currentGeneration;
  }

  /** Port 0 in --listen/--tls-listen becomes the port the first worker bound (same order). */
  joinBoundPorts(bound: RelayAddresses): void {
    this.current = {
      ...this.current,
      listen: joinPorts(this.current.listen, bound.udp),
      tlsListen: joinPorts(this.current.tlsListen, bound.tls),
    };
  }

  /** A reload's configuration, when newer than the current one (the bound ports stay). */
  advance(config: RelayConfig, generation: number): boolean {
    if (generation <= this.currentGeneration) return false;
    this.currentGeneration = generation;
    this.current = { ...config, listen: this.current.listen, tlsListen: this.current.tlsListen };
    return true;
  }

  /** The current configuration as a reload for a worker; `id` 0: nobody waits for the answer. */
  reload(id: number): SupervisorMessage {
    return {
      t: "ask",
      id,
      what: "reload",
      config: this.current,
      generation: this.currentGeneration,
    };
  }
}

/** The workers' reload outcomes as one (problems said once). */
export function sumReloadOutcomes(answers: readonly unknown[]): ReloadOutcome {
  const problems = new Set<string>();
  let allocationsEnded = 0;
  for (const a of answers as (ReloadOutcome | undefined)[]) {
    allocationsEnded += a?.allocationsEnded ?? 0;
    for (const p of a?.problems ?? []) problems.add(p);
  }
  return { allocationsEnded, problems: [...problems] };
}

/** Listen addresses with the ports the first worker actually bound (same order). */
function joinPorts(
  configured: readonly SocketAddress[],
  bound: readonly SocketAddress[],
): SocketAddress[] {
  return configured.map((a, i) => (a.port === 0 && bound[i] ? { ...a, port: bound[i]!.port } : a));
}
