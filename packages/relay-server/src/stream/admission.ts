// Who may hold a TCP/TLS connection: --max-connections counts every accepted connection (TLS
// handshakes included) until it closes, --max-connections-per-ip the ones of one source that
// have not authenticated yet (no allocation, no ConnectionBind), so one source cannot take
// every slot with connections that say nothing, or a byte a second. The counts are this
// engine's, or every worker's together (shared/connection-ledger.ts).

import type net from "node:net";
import { parseIp } from "@turnpike/relay-core";
import type { AdmitVerdict, ConnectionLedger } from "../shared/connection-ledger.js";
import type { RelayTelemetry } from "../stats.js";

/** An accepted TCP connection (for TLS: from the TCP accept on, through the handshake). */
export interface Admission {
  /**
   * The client's address and port as the relay sees them: the socket's peer, or the one its
   * PROXY header names (proxy-gate.ts). Auth, quotas, logs and XOR-MAPPED-ADDRESS use these.
   */
  address: string;
  port: number;
  /**
   * Its source for --max-connections-per-ip: the IPv4 address, or the IPv6 /64 ("" for a
   * --proxy-protocol connection whose header has not named its client yet).
   */
  source: string;
  /** Counted against its source: true until it authenticates (allocation or ConnectionBind). */
  counted: boolean;
  /**
   * Handed over by another worker, which holds the socket and counts it against its source:
   * changes of `counted` are reported to it (shared/hand-over.ts).
   */
  readonly report?: (counted: boolean) => void;
}

export class Admissions {
  private closed = false;

  constructor(
    private readonly ledger: ConnectionLedger,
    private readonly telemetry: RelayTelemetry,
  ) {}

  /**
   * A TCP connection was accepted (for TURNS before any TLS byte). Refused (destroyed, counted
   * as a drop) beyond the caps or once the engine closes; else counted until it closes, per
   * source until it authenticates.
   */
  admit(socket: net.Socket): Admission | undefined {
    const address = stripMapped(socket.remoteAddress ?? "");
    const source = sourceOf(address);
    const verdict = this.closed ? "total" : this.ledger.admit(source);
    if (!this.accepted(verdict, socket)) return undefined;
    return this.track(socket, { address, port: socket.remotePort ?? 0, source, counted: true });
  }

  /**
   * A connection from a trusted load balancer (--proxy-protocol), accepted before its PROXY
   * header: it takes a slot of --max-connections but does not count against the balancer's
   * address, which carries every client's connections. `identify` counts it once the header
   * names its client.
   */
  admitUnidentified(socket: net.Socket): Admission | undefined {
    const verdict = this.closed ? "total" : this.ledger.admitUnidentified();
    if (!this.accepted(verdict, socket)) return undefined;
    const address = stripMapped(socket.remoteAddress ?? "");
    return this.track(socket, {
      address,
      port: socket.remotePort ?? 0,
      source: "",
      counted: false,
    });
  }

  /**
   * The PROXY header named the client of an admitUnidentified connection: from now on it is
   * that client's, counted against its source (refused, destroyed, beyond the source's cap).
   */
  identify(admission: Admission, socket: net.Socket, address: string, port: number): boolean {
    const source = sourceOf(stripMapped(address));
    const verdict = this.closed ? "total" : this.ledger.admitSource(source);
    if (!this.accepted(verdict, socket)) return false;
    admission.address = stripMapped(address);
    admission.port = port;
    admission.source = source;
    admission.counted = true;
    return true;
  }

  /** Counted as a drop and destroyed unless "ok". */
  private accepted(verdict: AdmitVerdict, socket: net.Socket): boolean {
    if (verdict === "ok") return true;
    this.telemetry.drop(
      verdict === "per-ip" ? "client-connection-per-ip-limit" : "client-connection-limit",
    );
    socket.destroy();
    return false;
  }

  /** Counted until the socket closes (its source only while `counted`). */
  private track(socket: net.Socket, admission: Admission): Admission {
    socket.once("close", () => {
      this.ledger.release(admission.source, admission.counted);
      admission.counted = false;
    });
    return admission;
  }

  /**
   * A connection another worker holds and counts (it has not authenticated yet): here it is a
   * connection like any other, whose changes of `counted` go to `report`.
   */
  remote(address: string, port: number, report: (counted: boolean) => void): Admission {
    return { address, port, source: sourceOf(address), counted: true, report };
  }

  /** The connection authenticated: it no longer counts against its source. */
  uncount(admission: Admission): void {
    if (!admission.counted) return;
    admission.counted = false;
    if (admission.report) admission.report(false);
    else this.ledger.recount(admission.source, -1);
  }

  /** Its allocation ended: unauthenticated again (it is not closed for being over the cap). */
  recount(admission: Admission): void {
    if (admission.counted) return;
    admission.counted = true;
    if (admission.report) admission.report(true);
    else this.ledger.recount(admission.source, 1);
  }

  /** The engine closes: every connection from now on is refused. */
  close(): void {
    this.closed = true;
  }
}

/**
 * The source a connection counts against: an IPv4 address, or the /64 of an IPv6 one (a single
 * subscriber usually holds a whole /64, RFC 6177).
 */
function sourceOf(address: string): string {
  const ip = address.includes(":") ? parseIp(address) : undefined;
  if (ip === undefined) return address;
  return `${Buffer.from(ip.bytes.subarray(0, 8)).toString("hex")}::/64`;
}

/** A dual-stack TCP listener reports IPv4 clients as ::ffff:a.b.c.d. */
export function stripMapped(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}
