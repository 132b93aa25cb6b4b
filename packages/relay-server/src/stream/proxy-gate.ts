// --proxy-protocol: TCP and TLS connections from trusted load balancers start with a PROXY
// protocol header (proxy-header.ts) naming the client; the relay takes the client's address
// from it, so auth, quotas, per-source caps, logs and XOR-MAPPED-ADDRESS see the client, not
// the balancer. A connection from a trusted address without a valid header within a short
// deadline is refused (counted as the drop "proxy-header", logged at debug, rate-limited).
// Connections from any other address are never parsed for a header: a header from them is
// just bad TURN input (the framer refuses it), so nobody can claim an address by sending one.
//
// For TLS the header comes before the ClientHello: it is read here on the raw socket, and what
// follows it is put back (socket.unshift) for the TLS socket to read (tls-handshakes.ts).
//
// Worker steering: every connection from one balancer comes from the balancer's address, so
// the source-address steering of TCP connections (udp-batch's tcpListen) puts them all on one
// worker; several balancer addresses spread them.

import type net from "node:net";
import { type Cidr, cidrContains, parseCidr, parseIp } from "@turnpike/relay-core";
import type { Logger, RateLimitedLogger } from "@turnpike/runtime-kit";
import type { RelayTelemetry } from "../stats.js";
import { type Admission, type Admissions, stripMapped } from "./admission.js";
import { parseProxyHeader } from "./proxy-header.js";

/**
 * How long a trusted balancer has to send the whole header after the TCP accept: it sends it
 * at once (it is in its first segment), so a few seconds only cover a congested path.
 */
export const PROXY_HEADER_MS = 3_000;

export class ProxyGate {
  private readonly trusted: readonly Cidr[];
  private readonly refusals: RateLimitedLogger;
  /** Connections whose header is awaited, with their deadline (destroyed on close()). */
  private readonly pending = new Map<net.Socket, NodeJS.Timeout>();

  constructor(
    /** --proxy-protocol: CIDR text, checked at configuration time (config/values.ts). */
    trusted: readonly string[],
    private readonly admissions: Admissions,
    private readonly telemetry: RelayTelemetry,
    log: Logger,
    /** --tcp-idle-timeout, in ms: the header deadline is never longer. */
    private readonly idleTimeoutMs: number,
  ) {
    this.trusted = trusted.map((t) => parseCidr(t)).filter((c): c is Cidr => c !== undefined);
    this.refusals = log.rateLimited();
  }

  /** --proxy-protocol names at least one balancer. */
  get enabled(): boolean {
    return this.trusted.length > 0;
  }

  /** True when connections from `address` must start with a PROXY header. */
  trusts(address: string | undefined): boolean {
    if (this.trusted.length === 0 || address === undefined) return false;
    const ip = parseIp(stripMapped(address));
    return ip !== undefined && this.trusted.some((c) => cidrContains(c, ip));
  }

  /**
   * A connection from a trusted balancer (trusts() said so): admitted without a source, then
   * `ready` once its header named its client (the rest of its bytes put back, the socket
   * paused), unless it is refused and destroyed.
   */
  accept(socket: net.Socket, ready: (admission: Admission) => void): void {
    const admission = this.admissions.admitUnidentified(socket);
    if (admission === undefined) return;
    let buffered: Buffer = Buffer.alloc(0);
    const timer = setTimeout(
      () => this.refuse(socket, "no PROXY header in time"),
      Math.min(this.idleTimeoutMs, PROXY_HEADER_MS),
    );
    this.pending.set(socket, timer);
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      const header = parseProxyHeader(buffered);
      if (header.kind === "incomplete") return; // bounded: the parser refuses a longer header
      socket.off("data", onData);
      socket.pause();
      if (header.kind === "invalid") {
        this.refuse(socket, header.reason);
        return;
      }
      this.settle(socket);
      const rest = buffered.subarray(header.length);
      if (rest.length > 0) socket.unshift(rest);
      if (header.kind === "proxy") {
        if (!this.admissions.identify(admission, socket, header.address, header.port)) return;
      } else if (!this.admissions.identify(admission, socket, admission.address, admission.port)) {
        return; // LOCAL: the balancer's own connection (a health check), counted as its own
      }
      ready(admission);
    };
    socket.on("data", onData);
    socket.on("error", () => {}); // its close follows; the listeners log nothing before a header
    socket.once("close", () => this.settle(socket));
  }

  private settle(socket: net.Socket): void {
    clearTimeout(this.pending.get(socket));
    this.pending.delete(socket);
  }

  private refuse(socket: net.Socket, reason: string): void {
    this.settle(socket);
    this.telemetry.drop("proxy-header");
    this.refusals.debug("proxy-header", "connection refused: no valid PROXY header", {
      remote: `${socket.remoteAddress}:${socket.remotePort}`,
      reason,
    });
    socket.destroy();
  }

  /** The engine closes: connections still waiting for their header go. */
  close(): void {
    for (const [socket, timer] of this.pending) {
      clearTimeout(timer);
      socket.destroy();
    }
    this.pending.clear();
  }
}
