// The UDP listeners' socket buffers against the kernel's caps (udp/listener-buffers.ts): a cap
// below what the relay asks for is one warning at start, from the preflight, naming the sysctls
// and the file that raises them; the caps are read from /proc.
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import { preflight } from "../src/preflight.js";
import {
  LISTENER_BUFFER_BYTES,
  listenerBufferWarnings,
  readBufferCaps,
} from "../src/udp/listener-buffers.js";

/** The distributions' default net.core.rmem_max and wmem_max. */
const DISTRO_DEFAULT = 212_992;

describe("the UDP listeners' socket buffers", () => {
  it("warns once when the kernel caps both below what the listeners ask for, naming the sysctls and the fix", () => {
    const warnings = listenerBufferWarnings({ rmemMax: DISTRO_DEFAULT, wmemMax: DISTRO_DEFAULT });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toContain("net.core.rmem_max, net.core.wmem_max");
    expect(warnings[0]!.fields).toEqual({
      asked: LISTENER_BUFFER_BYTES,
      rmemMax: DISTRO_DEFAULT,
      wmemMax: DISTRO_DEFAULT,
      raise: `sysctl -w net.core.rmem_max=${LISTENER_BUFFER_BYTES} net.core.wmem_max=${LISTENER_BUFFER_BYTES}`,
      file: "deploy/sysctl/92-turnpike-udp-buffers.conf",
    });
  });

  it("names only the cap that is short", () => {
    const [w] = listenerBufferWarnings({ rmemMax: DISTRO_DEFAULT, wmemMax: 8 << 20 });
    expect(w?.msg).toContain("(net.core.rmem_max)");
    expect(w?.fields.raise).toBe(`sysctl -w net.core.rmem_max=${LISTENER_BUFFER_BYTES}`);
  });

  it("says nothing when both caps fit, or when they could not be read", () => {
    expect(
      listenerBufferWarnings({ rmemMax: LISTENER_BUFFER_BYTES, wmemMax: LISTENER_BUFFER_BYTES }),
    ).toEqual([]);
    expect(listenerBufferWarnings({})).toEqual([]);
  });

  it("reads the caps from /proc, leaving out what it cannot read", () => {
    const files: Record<string, string> = {
      "/proc/sys/net/core/rmem_max": "212992\n",
      "/proc/sys/net/core/wmem_max": "not a number\n",
    };
    const read = (path: string) => {
      const text = files[path];
      if (text === undefined) throw new Error(`ENOENT ${path}`);
      return text;
    };
    expect(readBufferCaps(read)).toEqual({ rmemMax: 212_992 });
    expect(readBufferCaps(() => "")).toEqual({ rmemMax: 0, wmemMax: 0 });
    expect(
      readBufferCaps(() => {
        throw new Error("no /proc");
      }),
    ).toEqual({});
    // This host's own, as the relay reads them at start.
    const here = readBufferCaps();
    expect(here.rmemMax).toBeGreaterThan(0);
    expect(here.wmemMax).toBeGreaterThan(0);
  });

  it("is one of the preflight's warnings for a relay with UDP listeners", async () => {
    const config = parseRelayArgs(
      ["--listen", "127.0.0.1:0", "--relay-ip", "127.0.0.1", "--health-listen", "off"],
      { TURNPIKE_TOKEN: "t0ken" },
      { openFilesLimit: () => undefined },
    );
    if (config.command !== "relay") throw new Error(config.command);
    // Connection tracking is not this suite's (conntrack.test.ts): nothing found, on any host.
    const warnings = await preflight(config, {
      sysctls: {},
      conntrack: undefined,
      bufferCaps: { rmemMax: DISTRO_DEFAULT, wmemMax: DISTRO_DEFAULT },
    });
    expect(warnings.map((w) => w.fields.file)).toEqual([
      "deploy/sysctl/92-turnpike-udp-buffers.conf",
    ]);
    expect(await preflight(config, { sysctls: {}, bufferCaps: {}, conntrack: undefined })).toEqual(
      [],
    );
  });
});
