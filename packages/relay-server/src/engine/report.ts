// What the engine tells people and dashboards: STUN responses, allocations created and ended
// (telemetry and log lines), the gauges copied from relay-core when metrics are collected,
// and the live allocations for the discovery API. Counting only: metrics.ts exports it.

import {
  AUTH_FAILURE_REASONS,
  DROP_REASONS,
  methodName,
  type TurnServer,
  type TurnServerOutput,
} from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import { formatSocketAddress } from "../config/values.js";
import { type AllocationRow, allocationRowId } from "../discovery.js";
import type { KernelOffload, KernelTotals } from "../kernel/offload.js";
import type { RelayStats, RelayTelemetry } from "../stats.js";
import type { UdpPath } from "../udp/udp-path.js";
import { RefusalLog } from "./refusal-log.js";

type Output<T extends TurnServerOutput["type"]> = Extract<TurnServerOutput, { type: T }>;

export class Report {
  private readonly refusals: RefusalLog;

  constructor(
    private readonly core: TurnServer,
    private readonly udp: UdpPath,
    private readonly stats: RelayStats,
    private readonly telemetry: RelayTelemetry,
    private readonly log: Logger,
    /** Open TCP/TLS client connections (stream/clients.ts). */
    private readonly connections: () => number,
    /** This engine's worker index (0 for a single engine): it qualifies allocation ids. */
    private readonly worker: number,
    /** The kernel data path's bindings, when it runs (kernel/offload.ts). */
    private readonly offload?: KernelOffload,
  ) {
    this.refusals = new RefusalLog(log);
  }

  /** A transmit output: what the message was, for stun.responses; a refusal, for the log. */
  response(o: Output<"transmit">): void {
    this.telemetry.response(
      methodName(o.method),
      o.errorCode === 0 ? "success" : "error",
      o.errorCode,
    );
    if (o.refusal !== undefined) this.refusals.refused(o.client, o.method, o.errorCode, o.refusal);
  }

  allocationCreated(o: Output<"allocation-created">): void {
    this.telemetry.allocationCreated(o.client.transport, o.relayed[0]?.family ?? 4);
    if (this.log.enabled("debug")) {
      this.log.debug("allocation created", {
        allocation: o.allocation,
        client: `${o.client.transport}:${o.client.address}:${o.client.port}`,
        username: o.username,
        relayed: o.relayed.map((r) => `${r.address}:${r.port}`),
        lifetime: o.lifetimeSeconds,
      });
    }
  }

  allocationEnded(o: Output<"allocation-ended">): void {
    // What its channels relayed in the kernel: relay-core ended their bindings just before.
    const kernel = kernelFields(this.offload?.takeTotals(o.allocation));
    this.telemetry.allocationEnded(
      o.client.transport,
      o.families[0] ?? 4,
      o.reason === "expired" ? "expired" : "deleted",
      o.lifetimeSeconds,
    );
    if (o.reason === "taken-over") {
      // A pinned port moved to a newer allocation of the same user: a tunnel restarted, or
      // two tunnels share one credential (then this repeats: worth a warning).
      this.log.warn("pinned port taken over by a newer allocation of the same user", {
        allocation: o.allocation,
        staleClient: `${o.client.transport}:${o.client.address}:${o.client.port}`,
        ...kernel,
      });
    } else if (o.reason === "revoked") {
      this.log.info("allocation of a revoked user ended", { allocation: o.allocation, ...kernel });
    } else if (o.reason === "operator") {
      this.log.info("allocation ended by the operator", {
        allocation: o.allocation,
        client: `${o.client.transport}:${o.client.address}:${o.client.port}`,
        ...kernel,
      });
    } else if (this.log.enabled("debug")) {
      this.log.debug("allocation ended", { allocation: o.allocation, reason: o.reason, ...kernel });
    }
  }

  /** Gauges and relay-core's counters, copied only when metrics are collected. */
  syncGauges(): void {
    this.udp.collect();
    const s = this.core.stats;
    this.stats.permissionsActive = s.permissionsActive;
    this.stats.channelsActive = s.channelsActive;
    this.stats.connectionsActive = this.connections();
    this.stats.reservationsActive = s.reservationsActive;
    this.stats.legacyPinnedAccepted = s.legacyPinnedAccepted;
    this.stats.bandwidthPauses = s.bandwidthPauses;
    // The kernel path's bandwidth drops (its token buckets enforce the same limits) join
    // relay-core's own: one reason, whichever path dropped.
    const kernelLimited = this.offload?.collect() ?? 0;
    for (const reason of DROP_REASONS) {
      const n = s.drops[reason] + (reason === "bandwidth-limit" ? kernelLimited : 0);
      if (n > 0) this.stats.drops.set(reason, n);
    }
    for (const reason of AUTH_FAILURE_REASONS) {
      if (s.authFailures[reason] > 0) this.stats.authFailures.set(reason, s.authFailures[reason]);
    }
  }

  /** The live allocations as the discovery API shows them. */
  allocations(): AllocationRow[] {
    const now = performance.now();
    // Monotonic instants to wall-clock ones, for people and platforms.
    const wall = (t: number) => new Date(Date.now() + (t - now)).toISOString();
    return this.core.allocations(now).map((a) => {
      const relayed = a.relayed.map((r) => formatSocketAddress({ ip: r.address, port: r.port }));
      return {
        id: allocationRowId(this.worker, a.id),
        user: a.user,
        pinnedPort: a.pinnedPort ?? null,
        transport: a.transport,
        relayedAddress: relayed[0] ?? null,
        relayedAddresses: relayed,
        clientTransport: a.client.transport,
        clientAddress: formatSocketAddress({ ip: a.client.address, port: a.client.port }),
        peers: a.peers,
        createdAt: wall(a.createdAt),
        expiresAt: wall(a.expiresAt),
      };
    });
  }
}

/** An allocation's kernel-relayed totals as log fields (none when nothing was bound). */
function kernelFields(t: KernelTotals | undefined): Record<string, number> {
  if (t === undefined) return {};
  return {
    kernelToPeerPackets: t.toPeerPackets,
    kernelToPeerBytes: t.toPeerBytes,
    kernelToClientPackets: t.toClientPackets,
    kernelToClientBytes: t.toClientBytes,
    ...(t.limitedPackets > 0 ? { kernelLimitedPackets: t.limitedPackets } : {}),
  };
}
