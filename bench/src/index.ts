// turnpike-bench as a library: the load client and scenarios for other tests to reuse.

export { startEchoPeer } from "./load/peer.js";
export { TurnLoadClient } from "./load/turn-load-client.js";
export { defaultSettings, startCoturn, startTurnpike } from "./servers.js";
