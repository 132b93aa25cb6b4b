/**
 * A TurnClient's options resolved once: defaults filled in, and a value that is not a finite
 * positive number replaced by its default (types.ts documents each option).
 */
import { type RetransmissionTiming, retransmissionTiming } from "./transaction.js";
import type { TurnClientOptions } from "./types.js";

export interface ClientSettings {
  /** REQUESTED-TRANSPORT: UDP (RFC 8656 §7.1) or TCP (RFC 6062 §4.1). */
  readonly requestedTransport: "udp" | "tcp";
  /** RFC 8489 §6.2: RTO, Rc and Rm over UDP, one timeout over TCP/TLS. */
  readonly timing: RetransmissionTiming;
  /** 438 Stale Nonce answers retried per request before giving up (RFC 8489 §9.2.5). */
  readonly maxStaleRetries: number;
  /** CreatePermission refresh interval, ms (permissions last 300 s, RFC 8656 §9). */
  readonly permissionRefreshMs: number;
  /** ChannelBind refresh interval, ms (bindings last 600 s, RFC 8656 §12). */
  readonly channelRefreshMs: number;
  /** Time without a request before a keep-alive request, ms; 0 for none. */
  readonly keepaliveMs: number;
}

export function clientSettings(options: TurnClientOptions): ClientSettings {
  const requestedTransport = options.requestedTransport ?? "udp";
  if (requestedTransport === "tcp" && options.transport === "udp") {
    // RFC 6062 §4.1: TCP allocations are requested over a TCP or TLS control connection.
    throw new Error("requestedTransport tcp needs a tcp or tls control connection");
  }
  const keepalive = options.keepaliveInterval ?? (options.transport === "udp" ? 15 : 30);
  return {
    requestedTransport,
    timing: retransmissionTiming(options.transport !== "udp", options.retransmission),
    maxStaleRetries: Math.max(0, options.maxStaleNonceRetries ?? 3),
    permissionRefreshMs: seconds(options.permissionRefreshInterval, 240),
    channelRefreshMs: seconds(options.channelRefreshInterval, 540),
    keepaliveMs: Number.isFinite(keepalive) && keepalive > 0 ? keepalive * 1000 : 0,
  };
}

function seconds(value: number | undefined, fallback: number): number {
  return (value !== undefined && Number.isFinite(value) && value > 0 ? value : fallback) * 1000;
}
