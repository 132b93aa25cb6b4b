// The start-time check of connection tracking (src/conntrack.ts): reading the table's sysctls,
// finding a flow in /proc/net/nf_conntrack without holding the file, the warning, and the
// preflight's use of it. The probe against a real kernel, with and without a stateful rule and
// with the shipped recipe, is e2e-conntrack.test.ts (in namespaces of its own).
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../src/config/parse.js";
import {
  type ConntrackFinding,
  conntrackWarnings,
  flowNeedle,
  NOTRACK_RECIPE,
  PROBE_FLOWS,
  readConntrackSysctls,
  relayPortToProbe,
  scanFlows,
  trackedByCount,
} from "../src/conntrack.js";
import { preflight } from "../src/preflight.js";

/** Two lines as Linux 6.x writes them: an unanswered probe, and an answered client flow. */
const LINES = [
  "ipv4     2 udp      17 24 src=127.0.0.1 dst=127.0.0.1 sport=63390 dport=33240 [UNREPLIED] src=127.0.0.1 dst=127.0.0.1 sport=33240 dport=63390 mark=0 zone=0 use=2",
  "ipv4     2 udp      17 29 src=10.201.1.2 dst=10.201.1.1 sport=42006 dport=3478 src=10.201.1.1 dst=10.201.1.2 sport=3478 dport=42006 mark=0 zone=0 use=2",
];

function fileOf(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "turnpike-conntrack-")), "nf_conntrack");
  writeFileSync(path, text);
  return path;
}

describe("reading the connection tracking sysctls", () => {
  it("reads count, max and the UDP stream timeout, and leaves out what is absent or not a number", () => {
    const files: Record<string, string> = {
      "/proc/sys/net/netfilter/nf_conntrack_count": "17\n",
      "/proc/sys/net/netfilter/nf_conntrack_max": "262144\n",
      "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream": "120\n",
    };
    const read = (p: string) => {
      const t = files[p];
      if (t === undefined) throw new Error("ENOENT");
      return t;
    };
    expect(readConntrackSysctls(read)).toEqual({ count: 17, max: 262_144, udpTimeoutStream: 120 });
    files["/proc/sys/net/netfilter/nf_conntrack_count"] = "many\n";
    delete files["/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream"];
    expect(readConntrackSysctls(read)).toEqual({ max: 262_144 });
    // A kernel without connection tracking has none of them: the check then says nothing.
    expect(
      readConntrackSysctls(() => {
        throw new Error("ENOENT");
      }),
    ).toEqual({});
  });
});

describe("finding the probe's flow in /proc/net/nf_conntrack", () => {
  it("matches a flow by its addresses and ports, not by a port that only starts like one", () => {
    const path = fileOf(`${LINES.join("\n")}\n`);
    expect(scanFlows([flowNeedle(63390, 33240)], path)).toEqual(
      new Set([flowNeedle(63390, 33240)]),
    );
    // A port that only starts like one of the flow's is another flow.
    expect(scanFlows([flowNeedle(6339, 33240)], path).size).toBe(0);
    expect(scanFlows([flowNeedle(63390, 3324)], path).size).toBe(0);
  });

  it("finds a flow whose line straddles two reads, among many", () => {
    const needle = flowNeedle(63390, 33240);
    // The needle starts 10 bytes before the end of the first 64 KiB read.
    const at = (64 << 10) - 10 - LINES[0]!.indexOf(needle);
    const text = `${"#".repeat(at - 1)}\n${LINES[0]}\n${`${LINES[1]}\n`.repeat(1000)}`;
    expect(text.indexOf(needle)).toBe((64 << 10) - 10);
    const path = fileOf(text);
    expect(scanFlows([needle], path)).toEqual(new Set([needle]));
    // Reading stops at the limit: a table larger than it is not read to its end.
    expect(scanFlows([needle], path, 4096).size).toBe(0);
  });

  it("fails where there is no table to read (the probe then says nothing)", () => {
    expect(() => scanFlows([flowNeedle(1, 2)], "/nonexistent/nf_conntrack")).toThrow();
  });
});

describe("telling from the table's size (a user that cannot read the table)", () => {
  it("is tracked when the median round grew by three quarters of its flows or more", () => {
    expect(trackedByCount([32, 32, 32], PROBE_FLOWS)).toBe(true);
    // Entries the kernel expired meanwhile take some away; one round's burst of others adds.
    expect(trackedByCount([24, 30, 31], PROBE_FLOWS)).toBe(true);
    expect(trackedByCount([-40, 29, 32], PROBE_FLOWS)).toBe(true);
    expect(trackedByCount([0, 0, 0], PROBE_FLOWS)).toBe(false);
    expect(trackedByCount([0, 2, 90], PROBE_FLOWS)).toBe(false);
    expect(trackedByCount([23, 23, 40], PROBE_FLOWS)).toBe(false);
    expect(trackedByCount([], PROBE_FLOWS)).toBe(false);
  });
});

describe("the warning", () => {
  const sysctls = { count: 4, max: 262_144, udpTimeoutStream: 120 };

  it("says nothing when nothing was tracked or nothing could be known", () => {
    expect(conntrackWarnings(undefined)).toEqual([]);
    expect(conntrackWarnings({ tracked: [], sysctls })).toEqual([]);
  });

  it("names the tracked ports, the table's size and the recipe", () => {
    const finding: ConntrackFinding = { tracked: [3478, 50123], sysctls };
    const [w, ...rest] = conntrackWarnings(finding);
    expect(rest).toEqual([]);
    expect(w!.msg).toContain("datagrams sent from ports 3478, 50123 on the loopback were tracked");
    expect(w!.msg).toContain("kept 120 s after its last datagram");
    expect(w!.msg).toContain("net.netfilter.nf_conntrack_max");
    expect(w!.fields).toEqual({
      trackedPorts: "3478,50123",
      conntrackCount: 4,
      conntrackMax: 262_144,
      udpTimeoutStream: 120,
      file: NOTRACK_RECIPE,
    });
    const one = conntrackWarnings({ tracked: [3478], sysctls: {} })[0]!;
    expect(one.msg).toContain("a datagram sent from port 3478 on the loopback was tracked");
    expect(one.msg).not.toContain("kept");
    expect(one.fields).toEqual({ trackedPorts: "3478", file: NOTRACK_RECIPE });
  });

  it("probes a port of the relay range, either end included", () => {
    expect(relayPortToProbe(49152, 65535, (min) => min)).toBe(49152);
    expect(relayPortToProbe(49152, 65535, (_min, max) => max - 1)).toBe(65535);
    for (let i = 0; i < 100; i++) {
      const p = relayPortToProbe(40000, 40009);
      expect(p).toBeGreaterThanOrEqual(40000);
      expect(p).toBeLessThanOrEqual(40009);
    }
  });
});

describe("in the preflight", () => {
  const config = parseRelayArgs(
    ["--listen", "127.0.0.1:0", "--relay-ip", "127.0.0.1", "--health-listen", "off"],
    { TURNPIKE_TOKEN: "t0ken" },
    { openFilesLimit: () => undefined },
  );
  if (config.command !== "relay") throw new Error(config.command);

  it("logs the warning with the others when the relay's traffic is tracked", async () => {
    const warnings = await preflight(config, {
      sysctls: {},
      bufferCaps: {},
      conntrack: { tracked: [51000], sysctls: { max: 65_536 } },
    });
    expect(warnings.map((w) => w.fields.file)).toEqual([NOTRACK_RECIPE]);
    expect(
      await preflight(config, {
        sysctls: {},
        bufferCaps: {},
        conntrack: { tracked: [], sysctls: {} },
      }),
    ).toEqual([]);
  });
});
