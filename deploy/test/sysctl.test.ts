// deploy/sysctl/90-turnpike-relay.conf and the README's advice on the kernel's ephemeral ports:
// one value everywhere, and on a host with the distributions' default ephemeral range it leaves
// none of the relay's default ports nor the README's pinned range to the kernel's choice (the
// check the relay makes at start, runtime-kit's ephemeralPortWarnings). The same for
// 92-turnpike-udp-buffers.conf and the UDP listeners' buffer check (listener-buffers.ts).
import { describe, expect, it } from "vitest";
import { listenerBufferWarnings } from "../../packages/relay-server/src/udp/listener-buffers.js";
import { ephemeralPortWarnings } from "../../packages/runtime-kit/src/ephemeral-ports.js";
import { markdownSection, repoText } from "./docs.js";

const CONF = repoText("deploy/sysctl/90-turnpike-relay.conf");
const SECTION = markdownSection(
  repoText("README.md"),
  "Relay ports and the kernel's ephemeral ports",
);

describe("reserving the relay's ports", () => {
  const value = /^net\.ipv4\.ip_local_reserved_ports\s*=\s*(\S+)\s*$/m.exec(CONF)?.[1];

  it("is one value in the sysctl.d file and in every README command", () => {
    expect(value).toBeDefined();
    const inReadme = [...SECTION.matchAll(/ip_local_reserved_ports=([\d,-]+)/g)].map((m) => m[1]);
    expect(inReadme.length).toBeGreaterThanOrEqual(2);
    for (const v of inReadme) expect(v).toBe(value);
    expect(SECTION).toContain("deploy/sysctl/90-turnpike-relay.conf");
  });

  it("leaves the default relay range and the README's pinned range to the relay", () => {
    const ranges = [
      { name: "relay ports", range: { min: 49152, max: 65535 } },
      { name: "pinned ports", range: { min: 40000, max: 40999 } },
    ];
    const host = { localPortRange: "32768\t60999\n" };
    expect(ephemeralPortWarnings(ranges, host)).toHaveLength(2);
    expect(ephemeralPortWarnings(ranges, { ...host, reservedPorts: value! })).toEqual([]);
  });
});

describe("the UDP listeners' socket buffer caps", () => {
  const conf = repoText("deploy/sysctl/92-turnpike-udp-buffers.conf");
  const value = (name: string) =>
    Number(new RegExp(`^${name.replaceAll(".", "\\.")}\\s*=\\s*(\\d+)\\s*$`, "m").exec(conf)?.[1]);
  const section = markdownSection(repoText("README.md"), "UDP socket buffers");

  it("raise both caps to what the listeners ask for: the start-time check has nothing to say", () => {
    const caps = { rmemMax: value("net.core.rmem_max"), wmemMax: value("net.core.wmem_max") };
    expect(caps.rmemMax).toBeGreaterThan(0);
    expect(caps.wmemMax).toBeGreaterThan(0);
    expect(listenerBufferWarnings(caps)).toEqual([]);
    // The distributions' default is what the check is for.
    expect(listenerBufferWarnings({ rmemMax: 212_992, wmemMax: 212_992 })).toHaveLength(1);
  });

  it("are the values of the README's commands, which install the file", () => {
    expect(section).toContain(
      `sysctl -w net.core.rmem_max=${value("net.core.rmem_max")} net.core.wmem_max=${value("net.core.wmem_max")}`,
    );
    expect(section).toContain("deploy/sysctl/92-turnpike-udp-buffers.conf");
  });
});
