// TURN URIs (RFC 7065 §3.1):
//
//   turnURI   = scheme ":" host [ ":" port ] [ "?transport=" transport ]
//   scheme    = "turn" / "turns"
//   transport = "udp" / "tcp" / transport-ext
//
// Default ports: 3478 for turn, 5349 for turns (RFC 7065 §3.2, RFC 8656 §3.1). A turns: URI
// always means TLS over TCP (DTLS is not offered). Nothing here throws: a bad URI is a typed
// error result the config layer turns into a one-line message.

import { isIPv4, isIPv6 } from "node:net";

/** How the tunnel reaches the relay (the control connection). */
export type ControlTransport = "udp" | "tcp" | "tls";

export interface TurnUri {
  /** The text as given, for logs and /list. */
  readonly text: string;
  readonly secure: boolean;
  /** A hostname or an IP literal (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
  readonly transport: ControlTransport;
}

export const DEFAULT_TURN_PORT = 3478;
export const DEFAULT_TURNS_PORT = 5349;

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export function parseTurnUri(text: string): TurnUri | { error: string } {
  const m = /^(turns?):(\[[^\]]*\]|[^:?/[\]]*)(?::([^?]*))?(?:\?(.*))?$/i.exec(text.trim());
  if (!m) return { error: "a TURN URI like turn:relay.example.com:3478?transport=udp" };
  const secure = m[1]!.toLowerCase() === "turns";
  let host = m[2]!;
  if (host.startsWith("[")) {
    host = host.slice(1, -1);
    if (!isIPv6(host)) return { error: "a bracketed IPv6 address in the host part" };
    host = host.toLowerCase();
  } else if (!isIPv4(host) && !HOSTNAME.test(host)) {
    return { error: "a hostname or IP address after turn:/turns:" };
  }
  let port = secure ? DEFAULT_TURNS_PORT : DEFAULT_TURN_PORT;
  if (m[3] !== undefined) {
    port = /^\d{1,5}$/.test(m[3]) ? Number(m[3]) : Number.NaN;
    if (!(port >= 1 && port <= 65535)) return { error: "a port 1..65535" };
  }
  let transport: ControlTransport = secure ? "tls" : "udp";
  if (m[4] !== undefined) {
    const q = /^transport=(udp|tcp)$/i.exec(m[4]);
    if (!q) return { error: "?transport=udp or ?transport=tcp as the only query" };
    const t = q[1]!.toLowerCase();
    // RFC 7065 §3.1: turns with transport=udp would be DTLS, which this client does not speak.
    if (secure && t === "udp")
      return { error: "turns: with transport=tcp (DTLS is not supported)" };
    transport = secure ? "tls" : (t as "udp" | "tcp");
  }
  return { text: text.trim(), secure, host, port, transport };
}

/** `turn:host:port?transport=x` with brackets around an IPv6 host. */
export function formatTurnUri(u: TurnUri, host = u.host): string {
  const h = host.includes(":") ? `[${host}]` : host;
  return u.secure
    ? `turns:${h}:${u.port}?transport=tcp`
    : `turn:${h}:${u.port}?transport=${u.transport}`;
}
