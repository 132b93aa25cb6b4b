// deploy/nftables/turnpike-notrack.nft, the recipe the relay's connection tracking warning
// points to (relay-server/src/conntrack.ts): its ports are the relay's defaults, the TLS
// drop-in's and the README's; the relay range it exempts is one the sysctl.d file reserves
// from the kernel's ephemeral ports (else another program's connection would be exempted with
// it). That it works, loaded as shipped, is relay-server/test/e2e-conntrack.test.ts.
import { describe, expect, it } from "vitest";
import { parseRelayArgs } from "../../packages/relay-server/src/config/parse.js";
import { NOTRACK_RECIPE } from "../../packages/relay-server/src/conntrack.js";
import { ephemeralPortWarnings } from "../../packages/runtime-kit/src/ephemeral-ports.js";
import { markdownSection, repoText } from "./docs.js";

const RECIPE = repoText(NOTRACK_RECIPE);
const SECTION = markdownSection(repoText("README.md"), "Connection tracking");

/** The elements of one of the recipe's sets, as ports and [min, max] ranges. */
function setElements(name: string): (number | [number, number])[] {
  const body = new RegExp(`set ${name} \\{[^}]*elements = \\{([^}]*)\\}`).exec(RECIPE)?.[1];
  if (body === undefined) throw new Error(`no set ${name}`);
  return body
    .split(",")
    .map((e) => e.trim())
    .map((e) => {
      const [a, b] = e.split("-").map(Number);
      return b === undefined ? a! : [a!, b];
    });
}

describe("the connection tracking recipe", () => {
  const config = parseRelayArgs(
    [],
    { TURNPIKE_TOKEN: "t0ken" },
    { openFilesLimit: () => undefined },
  );
  if (config.command !== "relay") throw new Error(config.command);
  const listen = config.listen.map((a) => a.port);
  const range: [number, number] = [config.minPort, config.maxPort];
  const tls = Number(
    /TURNPIKE_TLS_LISTEN=\S+:(\d+)/.exec(repoText("deploy/systemd/turnpike-relay-tls.conf"))?.[1],
  );

  it("exempts the default listener and relay range on UDP, and TCP's too with the TLS drop-in's port", () => {
    expect(listen).toEqual([3478]);
    expect(setElements("udp_ports")).toEqual([...listen, range]);
    expect(tls).toBe(5349);
    expect(setElements("tcp_ports")).toEqual([...listen, tls, range]);
  });

  it("exempts both directions: what arrives for the ports and what the host sends from them", () => {
    for (const proto of ["udp", "tcp"]) {
      expect(RECIPE).toMatch(
        new RegExp(
          `chain prerouting \\{[^}]*hook prerouting priority raw;[^}]*${proto} dport @${proto}_ports notrack`,
        ),
      );
      expect(RECIPE).toMatch(
        new RegExp(
          `chain output \\{[^}]*hook output priority raw;[^}]*${proto} sport @${proto}_ports notrack`,
        ),
      );
    }
  });

  it("exempts a relay range that the sysctl.d file reserves from the kernel's ephemeral ports", () => {
    const reserved = /^net\.ipv4\.ip_local_reserved_ports\s*=\s*(\S+)\s*$/m.exec(
      repoText("deploy/sysctl/90-turnpike-relay.conf"),
    )?.[1];
    const ranges = [{ name: "relay ports", range: { min: range[0], max: range[1] } }];
    const host = { localPortRange: "32768\t60999\n" };
    expect(ephemeralPortWarnings(ranges, host)).toHaveLength(1);
    expect(ephemeralPortWarnings(ranges, { ...host, reservedPorts: reserved! })).toEqual([]);
  });

  it("is what the README's commands load and install, with the ports they name", () => {
    expect(SECTION).toContain(`nft -f ${NOTRACK_RECIPE}`);
    expect(SECTION).toContain(`install -D -m 0644 ${NOTRACK_RECIPE} /etc/nftables.d/`);
    expect(SECTION).toContain("UDP 3478 and 49152–65535 and TCP 3478, 5349 and 49152–65535");
  });
});
