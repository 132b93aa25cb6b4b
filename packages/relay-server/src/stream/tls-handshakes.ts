// TLS handshakes under way (TURNS, RFC 8656 §3.1; the handshake of RFC 8446 §4): from the TCP
// accept until the handshake completes, a connection has said nothing the relay can check, yet
// holds an OpenSSL session with its record buffers and a TLS socket, tens of KB, and costs a
// signature. Measured before these bounds: 10,000 ClientHellos from 100 sources fitted inside
// --max-connections-per-ip and took the relay from 159 to 937 MiB RSS (e2e-tls-handshakes.test.ts
// has the numbers of its own rounds). So:
//
//   - at most --max-tls-handshakes are under way at once in the process (each engine its share)
//     and --max-tls-handshakes-per-ip from one source; a connection beyond either is closed at
//     the accept, before any TLS state exists, and counted as a drop (tls-handshake-limit,
//     tls-handshake-per-ip-limit) with a rate-limited DEBUG line;
//   - each gets --tls-handshake-timeout (at most --tcp-idle-timeout) from the accept, whatever
//     it sends meanwhile, so a handshake dribbled a byte at a time ends too;
//   - a client that leaves before the handshake completes (its FIN; a client that destroys its
//     socket right after its own side of the handshake sends only that) is destroyed at once:
//     connections here are half-open (an RFC 6062 data connection's FIN is forwarded, not
//     imposed), so nothing else would end it before the deadline;
//   - every TLS socket is built here on the one secure context of the listeners
//     (setSecureContext swaps it for handshakes from then on), and destroyed, never only
//     ended, so OpenSSL's session and buffers go with it.

import type net from "node:net";
import type tls from "node:tls";
import { type Logger, nodeTls, type RateLimitedLogger } from "@turnpike/runtime-kit";
import type { RelayTelemetry } from "../stats.js";
import type { Admission } from "./admission.js";

export interface TlsHandshakeLimits {
  /** Handshakes under way at once in this engine. */
  readonly total: number;
  /** The same from one source (Admission.source); 0 = no limit. */
  readonly perSource: number;
  /** From the TCP accept, ms. */
  readonly deadlineMs: number;
}

/** This engine's share of the process's limits (--max-tls-handshakes over the engines). */
export function engineHandshakeLimits(
  config: {
    readonly maxTlsHandshakes: number;
    readonly maxTlsHandshakesPerIp: number;
    readonly tlsHandshakeTimeout: number;
    readonly tcpIdleTimeout: number;
  },
  engines: number,
): TlsHandshakeLimits {
  return {
    total: Math.max(1, Math.floor(config.maxTlsHandshakes / Math.max(1, engines))),
    perSource: config.maxTlsHandshakesPerIp,
    deadlineMs: Math.min(config.tlsHandshakeTimeout, config.tcpIdleTimeout) * 1000,
  };
}

export type TlsRefusal = "tls-handshake-limit" | "tls-handshake-per-ip-limit";

interface Pending {
  readonly raw: net.Socket;
  readonly source: string;
  readonly timer: NodeJS.Timeout;
}

export class TlsHandshakes {
  private readonly pending = new Map<tls.TLSSocket, Pending>();
  private readonly bySource = new Map<string, number>();
  private readonly limited: RateLimitedLogger;
  private context: tls.SecureContext | undefined;

  constructor(
    private readonly limits: TlsHandshakeLimits,
    private readonly telemetry: RelayTelemetry,
    log: Logger,
  ) {
    this.limited = log.rateLimited();
  }

  /** Handshakes under way now. */
  get size(): number {
    return this.pending.size;
  }

  /**
   * The certificate chain and key for handshakes from now on (connections already open keep
   * theirs). Throws when the pair does not load; the handshakes keep the context they had.
   */
  setSecureContext(options: tls.SecureContextOptions): void {
    // node:tls is loaded by the first TLS listener, not at start (runtime-kit node-builtins.ts).
    this.context = nodeTls().createSecureContext(options);
  }

  /**
   * A TCP connection accepted (and admitted) on a TLS listener: refused beyond the bounds
   * (destroyed, counted, logged), else its handshake starts with a deadline; `secure` gets the
   * TLS socket once the handshake completed in time.
   */
  begin(raw: net.Socket, admission: Admission, secure: (socket: tls.TLSSocket) => void): void {
    const refusal = this.refusal(admission.source);
    if (refusal !== undefined) {
      this.telemetry.drop(refusal);
      this.limited.debug(refusal, "tls handshake refused", {
        reason: refusal,
        remote: raw.remoteAddress,
        pending: this.pending.size,
      });
      raw.destroy();
      return;
    }
    if (this.context === undefined) throw new Error("TlsHandshakes: no secure context");
    const { TLSSocket } = nodeTls();
    const socket = new TLSSocket(raw, { isServer: true, secureContext: this.context });
    const timer = setTimeout(() => {
      this.limited.debug("timed-out", "tls handshake timed out", { remote: raw.remoteAddress });
      this.destroy(socket);
    }, this.limits.deadlineMs);
    this.pending.set(socket, { raw, source: admission.source, timer });
    this.bySource.set(admission.source, (this.bySource.get(admission.source) ?? 0) + 1);
    const left = () => this.destroy(socket);
    const failed = (err: Error) => {
      this.limited.debug("failed", "tls handshake failed", { error: err.message });
      this.destroy(socket);
    };
    socket.once("end", left);
    // `on`, not `once`: a TLS error and the socket's own may both come, and an error without a
    // listener would end the worker.
    socket.on("error", failed);
    socket.once("close", () => this.forget(socket));
    socket.once("secure", () => {
      socket.off("end", left);
      socket.off("error", failed);
      if (!this.forget(socket)) {
        socket.destroy(); // its deadline passed as the handshake finished
        return;
      }
      secure(socket);
    });
  }

  /** Every handshake under way ends (the engine closes). */
  closeAll(): void {
    for (const socket of [...this.pending.keys()]) this.destroy(socket);
  }

  private refusal(source: string): TlsRefusal | undefined {
    if (this.pending.size >= this.limits.total) return "tls-handshake-limit";
    const perSource = this.limits.perSource;
    if (perSource > 0 && (this.bySource.get(source) ?? 0) >= perSource) {
      return "tls-handshake-per-ip-limit";
    }
    return undefined;
  }

  /** Destroys the TLS socket and the TCP one under it (destroyed, not ended: nothing lingers). */
  private destroy(socket: tls.TLSSocket): void {
    const p = this.pending.get(socket);
    this.forget(socket);
    socket.destroy();
    p?.raw.destroy();
  }

  /** No longer under way; false when it was not (ended before). */
  private forget(socket: tls.TLSSocket): boolean {
    const p = this.pending.get(socket);
    if (p === undefined) return false;
    clearTimeout(p.timer);
    this.pending.delete(socket);
    const n = (this.bySource.get(p.source) ?? 1) - 1;
    if (n > 0) this.bySource.set(p.source, n);
    else this.bySource.delete(p.source);
    return true;
  }
}
