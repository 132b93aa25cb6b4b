// Which UDP data path runs: --udp-io auto|batch|dgram (see udp-path.ts).
import { batchIoAvailability } from "@turnpike/udp-batch";
import type { UdpIoMode } from "../config/types.js";
import type { EngineHost } from "../engine/host.js";
import { BatchUdpPath } from "./batch-path.js";
import { DgramUdpPath } from "./dgram-path.js";
import type { UdpPath } from "./udp-path.js";

export interface UdpPathChoice {
  readonly path: UdpPath;
  /** Why "auto" fell back to dgram (undefined when it did not). */
  readonly fallbackReason: string | undefined;
}

/** `batch` fails when the native module is unavailable; `auto` falls back to dgram. */
export function selectUdpPath(mode: UdpIoMode, host: EngineHost): UdpPathChoice {
  if (mode === "dgram") return { path: new DgramUdpPath(host), fallbackReason: undefined };
  const availability = batchIoAvailability();
  if (availability.available) return { path: new BatchUdpPath(host), fallbackReason: undefined };
  if (mode === "batch") {
    throw new Error(`--udp-io batch: ${availability.reason}`);
  }
  return { path: new DgramUdpPath(host), fallbackReason: availability.reason };
}
