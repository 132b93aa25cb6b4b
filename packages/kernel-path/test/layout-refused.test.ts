// A loader addon whose map layout differs from JavaScript's is not used: the package reports
// the kernel path unavailable, with the reason, exactly as an addon that did not build, and the
// relay runs without it. (Its own file: the addon loads once per process, and here it loads
// with a layout changed on the way to JavaScript.)
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";

const require = createRequire(import.meta.url);
const loadNative = require.extensions[".node"]!;
const built = (() => {
  try {
    require("../build/Release/kernel_path.node");
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!built)("a built loader addon with another map layout", () => {
  it("is reported unavailable with the difference, and KernelPath refuses to open", async () => {
    // Hand JavaScript the real addon with one counter's name changed in its layout.
    for (const key of Object.keys(require.cache)) {
      if (key.endsWith("kernel_path.node")) delete require.cache[key];
    }
    require.extensions[".node"] = (module, filename) => {
      loadNative(module, filename);
      if (!filename.endsWith("kernel_path.node")) return;
      const real = module.exports as { layout: { counters: string[] } };
      const counters = real.layout.counters.map((c) => (c === "toPeerBytes" ? "toPeerOctets" : c));
      module.exports = Object.create(real, {
        layout: { value: { ...real.layout, counters } },
      });
    };
    try {
      const { KernelPath, kernelPathAvailability } = await import("../src/index.js");
      const reason =
        "the loader addon's map layout does not match its JavaScript (binding counters are [toPeerPackets, toPeerOctets, toClientPackets, toClientBytes, limitedPackets, limitedBytes] in the addon, [toPeerPackets, toPeerBytes, toClientPackets, toClientBytes, limitedPackets, limitedBytes] in JavaScript); rebuild it (pnpm install)";
      expect(kernelPathAvailability({ interfaces: ["lo"] })).toEqual({ available: false, reason });
      expect(() => KernelPath.open({ interfaces: ["lo"] })).toThrow(reason);
    } finally {
      require.extensions[".node"] = loadNative;
    }
  });
});
