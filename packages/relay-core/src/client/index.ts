/** The TURN client (RFC 8656 client side, RFC 6062 §4): sans-IO, like the server. */
export {
  type RetransmissionTiming,
  retransmissionTiming,
  TransactionClock,
} from "./transaction.js";
export { TurnClient } from "./turn-client.js";
export type {
  ConnectionBindResult,
  RetransmissionOptions,
  TurnClientEvent,
  TurnClientOptions,
  TurnClientState,
  TurnClientStats,
  TurnClientTransport,
  TurnData,
} from "./types.js";
