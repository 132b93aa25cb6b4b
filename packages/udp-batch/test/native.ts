// What udp-batch's suites share: a suite runs only where the native module loaded, and under CI
// the module must load (a silent skip would hide a broken build); a wait for a condition.
import { describe } from "vitest";
import { batchIoAvailability } from "../src/index.js";

const availability = batchIoAvailability();
if (!availability.available && process.env.CI === "true") {
  throw new Error(`udp-batch unavailable in CI: ${availability.reason}`);
}

/** The native module loaded here. */
export const nativeAvailable = availability.available;

/** `describe` where the native module loaded, `describe.skip` elsewhere (outside CI). */
export const describeNative = nativeAvailable ? describe : describe.skip;

/** Resolves once `check()` holds; throws after `ms`. */
export async function until(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 5));
  }
}
