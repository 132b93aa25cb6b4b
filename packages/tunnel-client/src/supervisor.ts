// The tunnel supervisor: services x relays. For every exposed service and every address each
// relay URI resolves to, one Tunnel (one allocation). Every --dns-interval the names are resolved
// again and tunnels are added or stopped to match the answer; every few seconds the access
// windows are evaluated and tunnels released or re-opened. It does I/O (DNS, timers) and owns
// the tunnels; each tunnel's own decisions are lifecycle.ts.

import { randomBytes, randomInt } from "node:crypto";
import { formatTransportAddress, type RandomSource } from "@turnpike/relay-core/client";
import type { Logger } from "@turnpike/runtime-kit";
import type { ServiceSpec } from "./config/index.js";
import type { CredentialSource } from "./credentials.js";
import type { TunnelState } from "./lifecycle.js";
import { PinClaims } from "./pins.js";
import type { Resolver } from "./resolver.js";
import { type TlsTrust, Tunnel, type TunnelCounters } from "./tunnel.js";
import { formatTurnUri, type TurnUri } from "./uri.js";
import { WindowWatch } from "./windows.js";

export interface SupervisorOptions {
  readonly relays: readonly TurnUri[];
  readonly credentials: CredentialSource;
  readonly resolver: Resolver;
  readonly logger: Logger;
  readonly random: RandomSource;
  /** Seconds. */
  readonly dnsInterval: number;
  readonly keepalive: number;
  readonly backoffBase: number;
  readonly backoffMax: number;
  readonly lifetime: number;
  readonly software: string;
  /** How often access windows are checked, ms (default 5000). */
  readonly windowCheckMs?: number;
  /** Wall clock for windows (default `new Date()`). */
  readonly date?: () => Date;
  /** Jitter source for backoff (default a CSPRNG-backed uniform number). */
  readonly jitter?: () => number;
  /** How turns: relays are verified (default: bundled roots, verification on). */
  readonly tls?: TlsTrust;
  /** Idle UDP peer flows are closed after this many ms (default 120 s; tests shorten it). */
  readonly udpFlowIdleMs?: number;
  /** --allow-metadata-targets (targets.ts). */
  readonly allowMetadataTargets?: boolean;
  /** --tcp-splice (tunnel/spliced-pipe.ts; default auto). */
  readonly tcpSplice?: "auto" | "off";
}

/** One row of GET /list: one tunnel (service x relay address). */
export interface ListEntry {
  /** The service id (DELETE /expose/:id). Tunnels of one service share it. */
  readonly id: string;
  readonly name: string;
  readonly protocol: "tcp" | "udp";
  readonly target: string;
  /** The relay this tunnel uses, as a TURN URI with the resolved address. */
  readonly relay: string;
  /** The address the platform connects to, once ready. */
  readonly relayedAddress: string | null;
  /** The relay port the credentials pin (then relayedAddress keeps it across reconnects). */
  readonly pinnedPort: number | null;
  readonly allowedPeers: readonly string[];
  readonly state: TunnelState;
  readonly openConnections: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly reconnects: number;
  readonly lastError: string | null;
}

export interface Service {
  readonly id: string;
  readonly spec: ServiceSpec;
  /** key: `${uri index}|${ip}` */
  readonly tunnels: Map<string, Tunnel>;
  /** Whether its access windows let it be reached now. */
  readonly window: WindowWatch;
}

interface RelayAnswer {
  ips: string[];
  error: string | undefined;
  resolved: boolean;
}

export class TunnelSupervisor {
  readonly counters: TunnelCounters = {
    reconnects: 0,
    connectionsOpened: 0,
    connectionsFailed: 0,
    bytesIn: 0,
    bytesOut: 0,
  };
  private readonly byId = new Map<string, Service>();
  private readonly answers: RelayAnswer[];
  private dnsTimer: NodeJS.Timeout | undefined;
  private windowTimer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly jitter: () => number;
  private readonly date: () => Date;
  /** Which tunnel serves each pinned relay port: one at a time. */
  private readonly pins = new PinClaims();

  constructor(private readonly o: SupervisorOptions) {
    this.answers = o.relays.map(() => ({ ips: [], error: undefined, resolved: false }));
    this.jitter = o.jitter ?? (() => randomInt(0, 2 ** 32) / 2 ** 32);
    this.date = o.date ?? (() => new Date());
  }

  services(): Service[] {
    return [...this.byId.values()];
  }

  addService(spec: ServiceSpec): Service {
    let id: string;
    do id = randomBytes(6).toString("base64url");
    while (this.byId.has(id));
    const service: Service = {
      id,
      spec,
      tunnels: new Map(),
      window: new WindowWatch(spec.windows, this.date()),
    };
    this.byId.set(id, service);
    if (this.running) this.reconcile(service);
    return service;
  }

  async removeService(id: string): Promise<boolean> {
    const s = this.byId.get(id);
    if (s === undefined) return false;
    this.byId.delete(id);
    for (const t of s.tunnels.values()) t.stop();
    s.tunnels.clear();
    return true;
  }

  async start(): Promise<void> {
    this.running = true;
    await this.resolveAll();
    // stop() may have run while we awaited: no timers for a stopped supervisor.
    if (!this.running) return;
    const every = Math.max(100, this.o.dnsInterval * 1000);
    this.dnsTimer = setInterval(() => void this.resolveAll(), every);
    this.windowTimer = setInterval(() => this.checkWindows(), this.o.windowCheckMs ?? 5000);
  }

  /** Releases every allocation (best effort) and stops all timers. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.dnsTimer !== undefined) clearInterval(this.dnsTimer);
    if (this.windowTimer !== undefined) clearInterval(this.windowTimer);
    for (const s of this.byId.values()) {
      for (const t of s.tunnels.values()) t.stop();
    }
    // Give the Refresh(lifetime 0) datagrams a moment to leave before sockets close.
    await new Promise((r) => setTimeout(r, 50));
  }

  list(): ListEntry[] {
    const rows: ListEntry[] = [];
    for (const s of this.byId.values()) rows.push(...this.rowsOf(s));
    return rows;
  }

  /** The POST /expose answer: the service and its tunnels. */
  describe(id: string): Record<string, unknown> | undefined {
    const s = this.byId.get(id);
    if (s === undefined) return undefined;
    return {
      id,
      name: s.spec.name,
      protocol: s.spec.protocol,
      target: targetText(s.spec),
      allowedPeers: s.spec.allowPeers.entries,
      windows: s.spec.windows.map((w) => w.text),
      tunnels: this.rowsOf(s),
    };
  }

  private rowsOf(s: Service): ListEntry[] {
    const base = {
      id: s.id,
      name: s.spec.name,
      protocol: s.spec.protocol,
      target: targetText(s.spec),
      allowedPeers: s.spec.allowPeers.entries,
    };
    const rows: ListEntry[] = [];
    for (const t of s.tunnels.values()) {
      rows.push({
        ...base,
        relay: t.relayLabel,
        relayedAddress: t.relayedAddress ? formatTransportAddress(t.relayedAddress) : null,
        pinnedPort: t.pinnedPort ?? null,
        state: t.state,
        openConnections: t.openConnections,
        bytesIn: t.bytesIn,
        bytesOut: t.bytesOut,
        reconnects: t.reconnects,
        lastError: t.lastError ?? null,
      });
    }
    // A relay with no tunnel yet (name not resolved, or resolved to nothing) still shows up.
    this.o.relays.forEach((uri, i) => {
      const a = this.answers[i]!;
      if ([...s.tunnels.keys()].some((k) => k.startsWith(`${i}|`))) return;
      rows.push({
        ...base,
        relay: formatTurnUri(uri),
        relayedAddress: null,
        pinnedPort: null,
        state: s.window.open ? "resolving" : "closed-window",
        openConnections: 0,
        bytesIn: 0,
        bytesOut: 0,
        reconnects: 0,
        lastError: a.error ?? null,
      });
    });
    return rows;
  }

  private async resolveAll(): Promise<void> {
    await Promise.all(
      this.o.relays.map(async (uri, i) => {
        const a = this.answers[i]!;
        try {
          const ips = await this.o.resolver.resolve(uri.host);
          if (ips.join(",") !== a.ips.join(",")) {
            this.o.logger.info("relay addresses", { relay: uri.text, addresses: ips });
          }
          a.ips = ips;
          a.error = ips.length === 0 ? `${uri.host} resolved to no address` : undefined;
        } catch (err) {
          // Keep the last good answer: a DNS hiccup must not tear down working tunnels.
          a.error = `resolving ${uri.host}: ${(err as Error).message}`;
          this.o.logger.warn("relay name did not resolve", { relay: uri.text, err: a.error });
        }
        a.resolved = true;
      }),
    );
    if (!this.running) return;
    for (const s of this.byId.values()) this.reconcile(s);
  }

  private checkWindows(): void {
    const now = this.date();
    for (const s of this.byId.values()) {
      const change = s.window.update(now);
      if (change === undefined) continue;
      const open = change === "opened";
      this.o.logger.info(open ? "access window opened" : "access window closed", {
        service: s.spec.name,
      });
      for (const t of s.tunnels.values()) {
        if (open) t.reopen();
        else t.closeWindow();
      }
      if (open) this.reconcile(s);
    }
  }

  /** Make the service's tunnels match the current relay answers. */
  private reconcile(s: Service): void {
    const wanted = new Set<string>();
    this.o.relays.forEach((uri, i) => {
      for (const ip of this.answers[i]!.ips) {
        const key = `${i}|${ip}`;
        wanted.add(key);
        if (s.tunnels.has(key)) continue;
        const t = new Tunnel({
          serviceId: s.id,
          service: s.spec,
          uri,
          relayIp: ip,
          credentials: this.o.credentials,
          random: this.o.random,
          jitter: this.jitter,
          logger: this.o.logger,
          counters: this.counters,
          keepalive: this.o.keepalive,
          backoffBase: this.o.backoffBase,
          backoffMax: this.o.backoffMax,
          lifetime: this.o.lifetime,
          software: this.o.software,
          ...(this.o.tls !== undefined ? { tls: this.o.tls } : {}),
          ...(this.o.udpFlowIdleMs !== undefined ? { udpFlowIdleMs: this.o.udpFlowIdleMs } : {}),
          pins: this.pins,
          allowMetadataTargets: this.o.allowMetadataTargets === true,
          ...(this.o.tcpSplice !== undefined ? { tcpSplice: this.o.tcpSplice } : {}),
        });
        s.tunnels.set(key, t);
        if (s.window.open) t.start();
        else t.closeWindowIdle();
      }
    });
    for (const [key, t] of s.tunnels) {
      if (wanted.has(key)) continue;
      this.o.logger.info("relay address gone: stopping its tunnel", {
        service: s.spec.name,
        relay: t.relayLabel,
      });
      t.stop();
      s.tunnels.delete(key);
    }
  }
}

function targetText(spec: ServiceSpec): string {
  const h = spec.target.host.includes(":") ? `[${spec.target.host}]` : spec.target.host;
  return `${spec.protocol}://${h}:${spec.target.port}`;
}
