// Refused requests as log lines, for an operator asking why a client gets nowhere: every error
// response relay-core decides carries a Refusal (why, the USERNAME, the peer), and here it
// becomes one DEBUG line with the client's address, at most a few per reason and minute, so a
// flood of bad requests cannot flood the log. A peer the policy refused also names the option
// that would let it through. Passwords and keys never reach a Refusal.
//
//   DEBUG authentication failed reason=bad-integrity code=401 method=allocate client=udp:192.0.2.7:5000 username=1795...:alice
//   DEBUG peer refused by the relay's peer policy peer=127.0.0.1 policy=loopback allowWith=--allow-loopback-peers ...
//   DEBUG request refused reason=user-quota code=486 method=allocate client=... username=...

import {
  AUTH_FAILURE_REASONS,
  type ClientEndpoint,
  methodName,
  type Refusal,
} from "@turnpike/relay-core";
import type { Logger, RateLimitedLogger } from "@turnpike/runtime-kit";

const AUTH_REASONS: ReadonlySet<string> = new Set(AUTH_FAILURE_REASONS);

export class RefusalLog {
  private readonly limited: RateLimitedLogger;

  constructor(private readonly log: Logger) {
    this.limited = log.rateLimited();
  }

  /** An error response to `client`; nothing unless the log is at debug. */
  refused(client: ClientEndpoint, method: number, code: number, refusal: Refusal): void {
    if (!this.log.enabled("debug")) return;
    const fields = {
      reason: refusal.reason,
      code,
      method: methodName(method),
      client: `${client.transport}:${client.address}:${client.port}`,
      username: refusal.username,
      peer: refusal.peer,
      policy: refusal.policy,
      allowWith: refusal.policy === undefined ? undefined : allowWith(refusal),
    };
    const msg =
      refusal.policy !== undefined
        ? "peer refused by the relay's peer policy"
        : AUTH_REASONS.has(refusal.reason)
          ? "authentication failed"
          : "request refused";
    this.limited.debug(`refused:${refusal.reason}`, msg, fields);
  }
}

/** The option that would let a refused peer through (README, "Security model"). */
function allowWith(refusal: Refusal): string {
  const ip = peerIp(refusal.peer ?? "");
  switch (refusal.policy) {
    case "loopback":
      return `--allow-loopback-peers (the relay's own host: tests and one-machine setups) or --allow-peer ${ip}`;
    case "self":
      return "--allow-self-peer (the relay's own addresses and listening ports)";
    case "denied-by-config":
      return `nothing while --deny-peer covers ${ip}`;
    case "invalid":
    case "unspecified":
      return "nothing: no relay sends there";
    default:
      return `--allow-peer ${ip}`;
  }
}

/** "127.0.0.1:5000" -> "127.0.0.1", "[::1]:5000" or "::1" -> "::1". */
function peerIp(peer: string): string {
  if (peer.startsWith("[")) return peer.slice(1, peer.indexOf("]"));
  const colons = peer.split(":").length - 1;
  return colons === 1 ? peer.slice(0, peer.indexOf(":")) : peer;
}
