// --max-connections and --max-connections-per-ip: every accepted TCP/TLS client connection
// takes a slot until it closes, and counts against its source (an IPv4 address or an IPv6 /64)
// until it authenticates (an allocation or a ConnectionBind), so one source cannot take every
// slot with connections that say nothing. One engine keeps the counts itself; workers share
// them (shared-limits.ts) so the caps hold for the process.

import type { SharedLimits } from "./shared-limits.js";

export type AdmitVerdict = "ok" | "total" | "per-ip";

export interface ConnectionLedger {
  admit(source: string): AdmitVerdict;
  /** The connection closed; `counted`: it still counted against its source. */
  release(source: string, counted: boolean): void;
  /** -1: it authenticated; +1: its allocation ended and it counts again (never refused). */
  recount(source: string, delta: 1 | -1): void;
}

export class LocalConnectionLedger implements ConnectionLedger {
  private open = 0;
  private readonly bySource = new Map<string, number>();

  constructor(
    private readonly maxConnections: number,
    /** 0 = no per-source cap. */
    private readonly maxPerSource: number,
  ) {}

  admit(source: string): AdmitVerdict {
    if (this.open >= this.maxConnections) return "total";
    const fromSource = this.bySource.get(source) ?? 0;
    if (this.maxPerSource > 0 && fromSource >= this.maxPerSource) return "per-ip";
    this.open++;
    this.bySource.set(source, fromSource + 1);
    return "ok";
  }

  release(source: string, counted: boolean): void {
    this.open--;
    if (counted) this.recount(source, -1);
  }

  recount(source: string, delta: 1 | -1): void {
    const n = (this.bySource.get(source) ?? 0) + delta;
    if (n > 0) this.bySource.set(source, n);
    else this.bySource.delete(source);
  }
}

export class SharedConnectionLedger implements ConnectionLedger {
  constructor(private readonly limits: SharedLimits) {}

  admit(source: string): AdmitVerdict {
    return this.limits.admitConnection(source);
  }

  release(source: string, counted: boolean): void {
    this.limits.releaseConnection(source, counted);
  }

  recount(source: string, delta: 1 | -1): void {
    this.limits.recountSource(source, delta);
  }
}
