// A native module whose memory layout differs from JavaScript's is not used: the package
// reports it unavailable, with the reason, exactly as a module that did not build, and the
// relay falls back to node:dgram. (Its own file: the module loads once per process, and here
// it loads with a layout changed on the way to JavaScript.)
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";

const require = createRequire(import.meta.url);
const loadNative = require.extensions[".node"]!;
const built = (() => {
  try {
    require("../build/Release/udp_batch.node");
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!built)("a built module with another layout", () => {
  it("is reported unavailable with the difference, and BatchIo refuses to start", async () => {
    // Hand JavaScript the real module with one value of its layout changed.
    for (const key of Object.keys(require.cache)) {
      if (key.endsWith("udp_batch.node")) delete require.cache[key];
    }
    require.extensions[".node"] = (module, filename) => {
      loadNative(module, filename);
      if (!filename.endsWith("udp_batch.node")) return;
      const real = module.exports as { layout: Record<string, unknown> };
      module.exports = Object.create(real, {
        layout: { value: { ...real.layout, RX_STRIDE: 9 } },
      });
    };
    try {
      const { BatchIo, batchIoAvailability } = await import("../src/index.js");
      const reason =
        "the native module's memory layout does not match its JavaScript (RX_STRIDE is 9 in the native module, 8 in JavaScript); rebuild it (pnpm install)";
      expect(batchIoAvailability()).toEqual({ available: false, reason });
      expect(() => new BatchIo({ onBatch: () => {} })).toThrow(`udp-batch unavailable: ${reason}`);
    } finally {
      require.extensions[".node"] = loadNative;
    }
  });
});
