// placeholder: the lead replaces this file
import type { RelayConfig } from "./config.js";
import type { RelayDeps, RunningRelay } from "./types.js";

export async function startRelay(_config: RelayConfig, _deps: RelayDeps): Promise<RunningRelay> {
  throw new Error("relay driver not built yet");
}
