// --max-connections and --max-connections-per-ip: every accepted TCP/TLS client connection
// takes a slot until it closes, and counts against its source (an IPv4 address or an IPv6 /64)
// until it authenticates (an allocation or a ConnectionBind), so one source cannot take every
// slot with connections that say nothing. The counts and caps are the process-wide limits
// (shared-limits.ts): workers share them, so the caps hold for the process, and a reload
// changes the caps for every engine at once.

import type { SharedLimits } from "./shared-limits.js";

export type AdmitVerdict = "ok" | "total" | "per-ip";

export interface ConnectionLedger {
  admit(source: string): AdmitVerdict;
  /** A --proxy-protocol connection before its header: a slot, not counted against a source. */
  admitUnidentified(): AdmitVerdict;
  /** Its header named the client: counted against that source, unless at the source's cap. */
  admitSource(source: string): AdmitVerdict;
  /** The connection closed; `counted`: it still counted against its source. */
  release(source: string, counted: boolean): void;
  /** -1: it authenticated; +1: its allocation ended and it counts again (never refused). */
  recount(source: string, delta: 1 | -1): void;
}

export class SharedConnectionLedger implements ConnectionLedger {
  constructor(private readonly limits: SharedLimits) {}

  admit(source: string): AdmitVerdict {
    return this.limits.admitConnection(source);
  }

  admitUnidentified(): AdmitVerdict {
    return this.limits.admitUnidentified();
  }

  admitSource(source: string): AdmitVerdict {
    return this.limits.admitSource(source);
  }

  release(source: string, counted: boolean): void {
    this.limits.releaseConnection(source, counted);
  }

  recount(source: string, delta: 1 | -1): void {
    this.limits.recountSource(source, delta);
  }
}
