/**
 * @turnpike/relay-core: a pure, synchronous STUN/TURN protocol engine.
 * See README.md for the sans-IO contract and the call order.
 */

export * from "./auth/constant-time.js";
export * from "./auth/credentials.js";
export * from "./auth/long-term-key.js";
export * from "./auth/nonce.js";
export * from "./auth/pinned-username.js";
export * from "./auth/rest-credentials.js";
export * from "./client/index.js";
export * from "./codec/address.js";
export * from "./codec/channel-data.js";
export * from "./codec/constants.js";
export * from "./codec/crc32.js";
export * from "./codec/message.js";
export * from "./codec/stream-framer.js";
export * from "./min-heap.js";
export * from "./policy/cidr.js";
export * from "./policy/ip.js";
export * from "./policy/peer-address-policy.js";
export * from "./rng.js";
export type {
  ChannelBinding,
  ClientEndpoint,
  ClientTransport,
  Permission,
  RelaySocket,
} from "./server/allocation.js";
export { DatagramSource } from "./server/datagram-source.js";
export * from "./server/rate-limit.js";
export * from "./server/relay-port-pool.js";
export * from "./server/server.js";
export * from "./server/stats.js";
export * from "./server/types.js";
