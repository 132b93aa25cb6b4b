// The states a tunnel is in, as /list and the metrics show them. The lifecycle machine
// (../lifecycle.ts) moves between them; the supervisor owns "resolving" (a relay name with no
// address yet has no tunnel).
//
//   resolving     the relay's name has no address yet (the supervisor's)
//   connecting    credentials and the control connection on their way
//   allocating    Allocate sent (credentials, 401/nonce dance inside the TurnClient)
//   ready         relayed address live, permissions installed for the allowed peers
//   backoff       the relay was lost; waiting a full-jitter delay to try again
//   refused       the relay refused this tunnel (credentials 401/403, a peer's permission):
//                 waiting the same way; lastError says why, the log said it once (WARN)
//   closed-window outside every access window: allocation released on purpose
//   stopped       removed (DELETE /expose or shutdown)

export type TunnelState =
  | "resolving"
  | "connecting"
  | "allocating"
  | "ready"
  | "backoff"
  | "refused"
  | "closed-window"
  | "stopped";

export const TUNNEL_STATES: readonly TunnelState[] = [
  "resolving",
  "connecting",
  "allocating",
  "ready",
  "backoff",
  "refused",
  "closed-window",
  "stopped",
];
