import { describe, expect, it } from "vitest";
import {
  ephemeralPortWarnings,
  parseLocalPortRange,
  parseReservedPorts,
  readPortSysctls,
  unreservedEphemeral,
} from "../src/ephemeral-ports.js";

const RELAY = { name: "relay ports", range: { min: 49152, max: 65535 } };
const PINNED = { name: "pinned ports", range: { min: 40000, max: 40999 } };
/** Most distributions' default, as /proc prints it. */
const DEFAULT_RANGE = "32768\t60999\n";

describe("the kernel's ephemeral port sysctls", () => {
  it("parse as /proc prints them, skipping what is malformed", () => {
    expect(parseLocalPortRange(DEFAULT_RANGE)).toEqual({ min: 32768, max: 60999 });
    expect(parseLocalPortRange("60999 32768")).toBeUndefined();
    expect(parseLocalPortRange("")).toBeUndefined();
    expect(parseReservedPorts("\n")).toEqual([]);
    expect(parseReservedPorts("8080,40000-40999,40500-41000,x,70000\n")).toEqual([
      { min: 8080, max: 8080 },
      { min: 40000, max: 41000 },
    ]);
  });

  it("leave the ports of a range inside the ephemeral range and outside the reserved ones", () => {
    const local = { min: 32768, max: 60999 };
    expect(unreservedEphemeral(RELAY.range, local, [])).toEqual([{ min: 49152, max: 60999 }]);
    expect(unreservedEphemeral(RELAY.range, local, [{ min: 50000, max: 50099 }])).toEqual([
      { min: 49152, max: 49999 },
      { min: 50100, max: 60999 },
    ]);
    expect(unreservedEphemeral(RELAY.range, local, [{ min: 49152, max: 65535 }])).toEqual([]);
    expect(unreservedEphemeral({ min: 61000, max: 65535 }, local, [])).toEqual([]);
  });
});

describe("ephemeral port warnings", () => {
  it("name each overlapping range, the sysctl, and the command that reserves them all", () => {
    const warnings = ephemeralPortWarnings([RELAY, PINNED], {
      localPortRange: DEFAULT_RANGE,
      reservedPorts: "8080\n",
    });
    expect(warnings).toEqual([
      {
        msg: "relay ports overlap the kernel's ephemeral ports (net.ipv4.ip_local_port_range): an outgoing connection on this host can take one",
        fields: {
          ports: "49152-65535",
          ephemeral: "32768-60999",
          unreserved: "49152-60999",
          reserve: "sysctl -w net.ipv4.ip_local_reserved_ports=8080,40000-40999,49152-65535",
        },
      },
      expect.objectContaining({
        msg: expect.stringMatching(/^pinned ports overlap /),
        fields: expect.objectContaining({ ports: "40000-40999", unreserved: "40000-40999" }),
      }),
    ]);
  });

  it("are none once the ranges are reserved, outside the ephemeral range, or unreadable", () => {
    const reserved = { localPortRange: DEFAULT_RANGE, reservedPorts: "40000-40999,49152-65535" };
    expect(ephemeralPortWarnings([RELAY, PINNED], reserved)).toEqual([]);
    expect(ephemeralPortWarnings([RELAY], { localPortRange: "32768 49151" })).toEqual([]);
    expect(ephemeralPortWarnings([RELAY], {})).toEqual([]);
  });

  it("read this host's sysctls where /proc has them", () => {
    const read = readPortSysctls();
    if (process.platform === "linux")
      expect(parseLocalPortRange(read.localPortRange ?? "")).toBeDefined();
    expect(
      readPortSysctls(() => {
        throw new Error("ENOENT");
      }),
    ).toEqual({});
  });
});
