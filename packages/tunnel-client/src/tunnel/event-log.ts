// What the lifecycle tells people: its events, as log lines. The driver hands every output that
// asks for no I/O here; nothing here acts on them.

import { formatTransportAddress } from "@turnpike/relay-core/client";
import type { Logger } from "@turnpike/runtime-kit";
import type { TunnelOutput } from "../lifecycle.js";
import type { RelayAddress } from "../redirects.js";

export interface EventContext {
  /** "tcp://HOST:PORT", for the ready line. */
  readonly target: string;
  /** Monotonic ms and wall-clock ms now: lifecycle instants are on the monotonic clock. */
  readonly now: () => number;
  readonly wallNow: () => number;
}

export function logLifecycleEvent(log: Logger, o: TunnelOutput, ctx: EventContext): void {
  switch (o.type) {
    case "ready":
      log.info("tunnel ready", {
        relayed: formatTransportAddress(o.relayed),
        lifetime: o.lifetime,
        target: ctx.target,
      });
      return;
    case "down":
      if (o.refused) {
        // Said once at WARN (the operator must act: new credentials, the relay's peer policy),
        // then at DEBUG for each retry while the refusal stays the same.
        log[o.repeated ? "debug" : "warn"]("the relay refused the tunnel, trying again", {
          reason: o.reason,
          delayMs: o.delayMs,
          attempt: o.failures,
        });
        return;
      }
      log[o.wasReady ? "warn" : "info"]("tunnel down, reconnecting", {
        reason: o.reason,
        delayMs: o.delayMs,
        attempt: o.failures,
      });
      return;
    case "redirected":
      log.info("the relay is draining: allocating on its alternate server (300 Try Alternate)", {
        from: relayText(o.from),
        to: relayText(o.to),
      });
      return;
    case "window-closed":
      log.info("access window closed: allocation released");
      return;
    case "window-opened":
      log.info("access window open: allocating");
      return;
    case "reallocating":
      log.info("credentials about to expire: re-allocating with fresh ones", {
        refusedInPlace: o.refusedInPlace,
      });
      return;
    case "renewed":
      log.info("credentials renewed in place", {
        relayed: o.relayed ? formatTransportAddress(o.relayed) : undefined,
        renewals: o.renewals,
      });
      return;
    case "renewal-refused":
      log.info(
        "the relay refused renewed credentials for this allocation (441): re-allocating before the old ones expire",
        {
          at:
            o.reallocateAt === undefined
              ? undefined
              : new Date(o.reallocateAt - ctx.now() + ctx.wallNow()).toISOString(),
        },
      );
      return;
    case "renewal-failed":
      log.warn("could not renew credentials, trying again", { err: o.error });
      return;
    case "pin-ignored":
      log.warn("the relay did not honour the pinned port: serving on a dynamic port", {
        pinnedPort: o.pinnedPort,
        relayed: formatTransportAddress(o.relayed),
      });
      return;
    case "channel-bind-failed":
      log.debug("channel bind failed", { peer: formatTransportAddress(o.peer), code: o.code });
      return;
    default:
      return;
  }
}

function relayText(a: RelayAddress): string {
  return a.family === 6 ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}
