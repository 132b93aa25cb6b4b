/**
 * @turnpike/tunnel-client: expose private TCP/UDP services through a TURN relay.
 * The `turnpike-tunnel` CLI is cli.ts; these are the pieces for embedding and tests.
 */
export * from "./admin.js";
export * from "./backoff.js";
export * from "./config/index.js";
export * from "./credentials.js";
export { EXPIRY_MARGIN_MS, RENEW_RETRY_MS, reallocateBy } from "./lifecycle/renewal.js";
export * from "./lifecycle.js";
export * from "./list.js";
export * from "./peers.js";
export * from "./pins.js";
export * from "./resolver.js";
export * from "./supervisor.js";
export * from "./tunnel.js";
export * from "./uri.js";
export * from "./windows.js";
