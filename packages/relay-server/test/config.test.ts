import { mkdtempSync, writeFileSync } from "node:fs";
import type { networkInterfaces } from "node:os";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "@turnpike/runtime-kit";
import { describe, expect, it } from "vitest";
import { envName, OPTIONS, renderConfigTable } from "../src/config/options.js";
import { parseRelayArgs } from "../src/config/parse.js";
import { autoWorkers } from "../src/config/relay-command.js";
import type { ParseOptions, RelayConfig } from "../src/config/types.js";

const hostInterfaces = (): ReturnType<typeof networkInterfaces> => ({
  lo: [
    {
      address: "127.0.0.1",
      netmask: "255.0.0.0",
      family: "IPv4",
      mac: "00:00:00:00:00:00",
      internal: true,
      cidr: "127.0.0.1/8",
    },
  ],
  eth0: [
    {
      address: "fe80::1",
      netmask: "ffff:ffff:ffff:ffff::",
      family: "IPv6",
      mac: "02:00:00:00:00:01",
      internal: false,
      cidr: "fe80::1/64",
      scopeid: 2,
    },
    {
      address: "2001:db8::5",
      netmask: "ffff:ffff:ffff:ffff::",
      family: "IPv6",
      mac: "02:00:00:00:00:01",
      internal: false,
      cidr: "2001:db8::5/64",
      scopeid: 0,
    },
    {
      address: "198.51.100.7",
      netmask: "255.255.255.0",
      family: "IPv4",
      mac: "02:00:00:00:00:01",
      internal: false,
      cidr: "198.51.100.7/24",
    },
  ],
});

const opts: ParseOptions = {
  networkInterfaces: hostInterfaces,
  randomToken: () => "generated-token",
  // The open-file limit of whatever host runs the suite must not change the defaults below.
  openFilesLimit: () => undefined,
};

function relay(argv: string[], env: NodeJS.ProcessEnv = { TURNPIKE_TOKEN: "t0ken" }): RelayConfig {
  const parsed = parseRelayArgs(argv, env, opts);
  if (parsed.command !== "relay") throw new Error(`expected relay, got ${parsed.command}`);
  return parsed;
}

function errorOf(argv: string[], env: NodeJS.ProcessEnv = { TURNPIKE_TOKEN: "t0ken" }): string {
  try {
    parseRelayArgs(argv, env, opts);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error("expected a ConfigError");
}

function tempFile(name: string, content: string): string {
  const dir = mkdtempSync(join(tmpdir(), "turnpike-config-"));
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

describe("relay configuration", () => {
  it("starts from documented defaults with no configuration at all", () => {
    const c = relay([], {});
    expect(c).toMatchObject({
      listen: [{ ip: "0.0.0.0", port: 3478, family: 4 }],
      tlsListen: [],
      relayIp4: "198.51.100.7",
      relayIp6: undefined,
      minPort: 49152,
      maxPort: 65535,
      realm: "turnpike",
      maxAllocations: 10000,
      maxAllocationsPerUser: 100,
      maxPermissions: 64,
      maxChannels: 64,
      maxConnections: 10000,
      maxConnectionsPerIp: 100,
      tcpIdleTimeout: 300,
      maxTlsHandshakes: 512,
      maxTlsHandshakesPerIp: 16,
      tlsHandshakeTimeout: 5,
      drainTimeout: 30,
      healthListen: { ip: "127.0.0.1", port: 8080, family: 4 },
      healthMaxConnections: 64,
      prometheusListen: undefined,
      logFormat: "text",
      logLevel: "info",
      allowLoopbackPeers: false,
      allowSelfPeer: false,
      legacyChannelNumbers: false,
    });
    expect(c.software).toMatch(/^turnpike\/\d+\.\d+\.\d+/);
  });

  it("knows the relay's own addresses: relay, public, listen and every interface address", () => {
    const c = relay([
      "--listen",
      "0.0.0.0:3478",
      "--listen",
      "[2001:db8::9]:3478",
      "--relay-ip",
      "10.0.0.5",
      "--public-ip4",
      "203.0.113.10",
    ]);
    expect([...c.selfAddresses].sort()).toEqual(
      [
        "10.0.0.5",
        "203.0.113.10",
        "2001:db8::9",
        "127.0.0.1",
        "fe80::1",
        "2001:db8::5",
        "198.51.100.7",
      ].sort(),
    );
    expect(c.selfAddresses).not.toContain("0.0.0.0");
  });

  it("reads --legacy-channel-numbers from the flag and TURNPIKE_LEGACY_CHANNEL_NUMBERS", () => {
    expect(relay(["--legacy-channel-numbers"]).legacyChannelNumbers).toBe(true);
    expect(relay([], { TURNPIKE_LEGACY_CHANNEL_NUMBERS: "true" }).legacyChannelNumbers).toBe(true);
    expect(relay([], { TURNPIKE_LEGACY_CHANNEL_NUMBERS: "false" }).legacyChannelNumbers).toBe(
      false,
    );
  });

  it("reads --max-connections-per-ip and --allow-self-peer from flags and TURNPIKE_* variables", () => {
    expect(relay(["--max-connections-per-ip", "0"]).maxConnectionsPerIp).toBe(0);
    const fromEnv = relay([], {
      TURNPIKE_TOKEN: "t",
      TURNPIKE_MAX_CONNECTIONS_PER_IP: "7",
      TURNPIKE_ALLOW_SELF_PEER: "true",
    });
    expect(fromEnv.maxConnectionsPerIp).toBe(7);
    expect(fromEnv.allowSelfPeer).toBe(true);
    expect(fromEnv.warnings.some((w) => w.startsWith("--allow-self-peer is set"))).toBe(true);
    expect(errorOf(["--max-connections-per-ip", "-1"])).toContain("--max-connections-per-ip");
  });

  it("generates a token when none is set and says once how to mint credentials", () => {
    const c = relay([], {});
    expect(c.tokens).toEqual(["generated-token"]);
    expect(c.tokenGenerated).toBe(true);
    const lines = c.warnings.filter((w) => w.includes("TURNPIKE_TOKEN"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      "TURNPIKE_TOKEN=generated-token pnpm exec turnpike-relay credentials",
    );
    const installed = parseRelayArgs([], {}, { ...opts, script: "/nowhere/bin/turnpike-relay.js" });
    expect(installed.command === "relay" && installed.warnings.join("\n")).toContain(
      "TURNPIKE_TOKEN=generated-token node /nowhere/bin/turnpike-relay.js credentials",
    );
  });

  it("never puts a provided token into a warning", () => {
    const c = relay([], { TURNPIKE_TOKEN: "s3cret-value" });
    expect(c.tokens).toEqual(["s3cret-value"]);
    expect(c.tokenGenerated).toBe(false);
    expect(c.warnings.join("\n")).not.toContain("s3cret-value");
  });

  it("warns that --token on the command line is visible, without echoing it", () => {
    const c = relay(["--token", "flag-secret"], {});
    expect(c.tokens).toEqual(["flag-secret"]);
    expect(c.warnings.some((w) => w.startsWith("--token on the command line"))).toBe(true);
    expect(c.warnings.join("\n")).not.toContain("flag-secret");
  });

  it("takes a flag over the environment over the config file over the default", () => {
    const file = tempFile(
      "relay.json",
      JSON.stringify({
        "min-port": 40000,
        maxPort: "60000",
        realm: "from-file",
        "log-level": "debug",
      }),
    );
    const env = { TURNPIKE_TOKEN: "t", TURNPIKE_MIN_PORT: "41000", TURNPIKE_REALM: "from-env" };
    const c = relay(["--config", file, "--min-port", "42000"], env);
    expect(c.minPort).toBe(42000); // flag
    expect(c.realm).toBe("from-env"); // env over file
    expect(c.maxPort).toBe(60000); // file over default
    expect(c.logLevel).toBe("debug"); // file
    expect(c.drainTimeout).toBe(30); // default
    expect(c.configFile).toBe(file);
    expect(relay([], { ...env, TURNPIKE_CONFIG: file }).minPort).toBe(41000);
  });

  it("collects repeatable options from repeated flags, comma-separated env and JSON arrays", () => {
    expect(relay(["--listen", "127.0.0.1:3478", "--listen", "[::1]:3479"]).listen).toEqual([
      { ip: "127.0.0.1", port: 3478, family: 4 },
      { ip: "::1", port: 3479, family: 6 },
    ]);
    const env = {
      TURNPIKE_TOKEN: "t",
      TURNPIKE_USER: "alice:pw1, bob:pw:2",
      TURNPIKE_DENY_PEER: "10.0.0.0/8,fd00::/8",
    };
    const c = relay([], env);
    expect(c.users).toEqual([
      { username: "alice", password: "pw1" },
      { username: "bob", password: "pw:2" },
    ]);
    expect(c.denyPeers).toEqual(["10.0.0.0/8", "fd00::/8"]);
    const file = tempFile("r.json", JSON.stringify({ allowPeer: ["192.168.0.0/16", "10.1.2.3"] }));
    expect(relay(["--config", file]).allowPeers).toEqual(["192.168.0.0/16", "10.1.2.3"]);
  });

  it("reads the trusted load balancers of --proxy-protocol from flags, environment and file", () => {
    expect(relay([]).proxyProtocol).toEqual([]);
    const flags = ["--proxy-protocol", "10.0.0.0/8", "--proxy-protocol", "2001:db8::7"];
    expect(relay(flags).proxyProtocol).toEqual(["10.0.0.0/8", "2001:db8::7"]);
    expect(relay([], { TURNPIKE_PROXY_PROTOCOL: "10.0.0.0/8,192.0.2.1" }).proxyProtocol).toEqual([
      "10.0.0.0/8",
      "192.0.2.1",
    ]);
    const file = tempFile("p.json", JSON.stringify({ proxyProtocol: ["172.16.0.0/12"] }));
    expect(relay(["--config", file]).proxyProtocol).toEqual(["172.16.0.0/12"]);
    expect(relay(flags).warnings.join("\n")).not.toContain("--proxy-protocol");
    expect(relay(["--proxy-protocol", "0.0.0.0/0"]).warnings.join("\n")).toContain(
      "--proxy-protocol 0.0.0.0/0 trusts every source",
    );
  });

  it("derives the relay IP from a specific listener, and from the host for an unspecified one", () => {
    const c = relay(["--listen", "127.0.0.1:3478", "--listen", "[::]:3478"]);
    expect(c.relayIp4).toBe("127.0.0.1");
    expect(c.relayIp6).toBe("2001:db8::5"); // the first non-internal, non-link-local IPv6
    const explicit = relay([
      "--listen",
      "0.0.0.0:3478",
      "--relay-ip",
      "203.0.113.9",
      "--public-ip4",
      "192.0.2.1",
    ]);
    expect(explicit).toMatchObject({ relayIp4: "203.0.113.9", publicIp4: "192.0.2.1" });
  });

  it("accepts booleans as flags, --no- flags and env words", () => {
    expect(relay(["--allow-loopback-peers"]).allowLoopbackPeers).toBe(true);
    expect(
      relay(["--no-allow-loopback-peers"], {
        TURNPIKE_TOKEN: "t",
        TURNPIKE_ALLOW_LOOPBACK_PEERS: "true",
      }).allowLoopbackPeers,
    ).toBe(false);
    const c = relay([], { TURNPIKE_TOKEN: "t", TURNPIKE_ALLOW_LOOPBACK_PEERS: "1" });
    expect(c.allowLoopbackPeers).toBe(true);
    expect(c.warnings.some((w) => w.startsWith("--allow-loopback-peers"))).toBe(true);
  });

  it("turns the health listener off with `off` and allows port 0 for tests", () => {
    expect(relay(["--health-listen", "off"]).healthListen).toBeNull();
    expect(relay(["--listen", "127.0.0.1:0"]).listen[0]?.port).toBe(0);
  });

  it("treats an empty environment variable as unset", () => {
    expect(relay([], { TURNPIKE_TOKEN: "t", TURNPIKE_MIN_PORT: "" }).minPort).toBe(49152);
  });

  it.each([
    [["--min-port", "70000"], {}, '--min-port must be 1024..65535, got "70000"'],
    [["--max-port", "abc"], {}, '--max-port must be 1024..65535, got "abc"'],
    [[], { TURNPIKE_MIN_PORT: "0" }, 'TURNPIKE_MIN_PORT must be 1024..65535, got "0"'],
    [["--min-port", "80"], {}, '--min-port must be 1024..65535, got "80"'],
    [
      ["--min-port", "1024", "--max-port", "1023"],
      {},
      '--max-port must be 1024..65535, got "1023"',
    ],
    [
      ["--pinned-ports", "80-90"],
      {},
      '--pinned-ports must be MIN-MAX with 1024 <= MIN <= MAX <= 65535, got "80-90"',
    ],
    [["--max-bps", "-5"], {}, '--max-bps must be 0..1000000000000, got "-5"'],
    [
      ["--min-port", "60000", "--max-port", "50000"],
      {},
      "--min-port must be <= --max-port, got 60000 > 50000",
    ],
    [
      ["--listen", "::1:3478"],
      {},
      '--listen must be IP:PORT or [IPv6]:PORT with port 0..65535, got "::1:3478"',
    ],
    [
      ["--listen", "localhost:3478"],
      {},
      '--listen must be IP:PORT or [IPv6]:PORT with port 0..65535, got "localhost:3478"',
    ],
    [
      ["--listen", "127.0.0.1:65536"],
      {},
      '--listen must be IP:PORT or [IPv6]:PORT with port 0..65535, got "127.0.0.1:65536"',
    ],
    [
      ["--alternate-server", "[2001:db8::1]:0"],
      {},
      '--alternate-server must be IP:PORT or [IPv6]:PORT with port 1..65535, got "[2001:db8::1]:0"',
    ],
    [
      ["--relay-ip", "0.0.0.0"],
      {},
      '--relay-ip must be a specific (not unspecified) IP address, got "0.0.0.0"',
    ],
    [
      ["--relay-ip", "10.0.0.1", "--relay-ip", "10.0.0.2"],
      {},
      '--relay-ip must be given at most once per family, got "10.0.0.1,10.0.0.2"',
    ],
    [
      ["--public-ip4", "2001:db8::1"],
      {},
      '--public-ip4 must be an IPv4 address, got "2001:db8::1"',
    ],
    [
      ["--allow-peer", "10.0.0.0/33"],
      {},
      '--allow-peer must be a CIDR like 10.0.0.0/8 or fd00::/8, got "10.0.0.0/33"',
    ],
    [
      ["--proxy-protocol", "lb.example.com"],
      {},
      '--proxy-protocol must be a CIDR like 10.0.0.0/8 or fd00::/8, got "lb.example.com"',
    ],
    [
      [],
      { TURNPIKE_DENY_PEER: "10.0.0.0/8,nonsense" },
      'TURNPIKE_DENY_PEER must be a CIDR like 10.0.0.0/8 or fd00::/8, got "nonsense"',
    ],
    [["--user", "alice"], {}, '--user must be NAME:PASSWORD, got "alice"'],
    [["--user", ":secretpw"], {}, '--user must be NAME:PASSWORD, got ":***"'],
    [["--log-level", "loud"], {}, '--log-level must be one of error|warn|info|debug, got "loud"'],
    [["--log-format", "xml"], {}, '--log-format must be one of json|text, got "xml"'],
    [["--max-channels", "5000"], {}, '--max-channels must be 1..4096, got "5000"'],
    [["--drain-timeout", "-1"], {}, '--drain-timeout must be 0..86400, got "-1"'],
    [
      [],
      { TURNPIKE_ALLOW_LOOPBACK_PEERS: "maybe" },
      'TURNPIKE_ALLOW_LOOPBACK_PEERS must be true or false, got "maybe"',
    ],
    [["--tls-listen", "127.0.0.1:5349"], {}, "--tls-listen needs --tls-cert and --tls-key"],
    [
      ["--tls-cert", "/nonexistent/cert.pem"],
      {},
      '--tls-cert must be a readable file, got "/nonexistent/cert.pem" (ENOENT)',
    ],
    [["--min-prot", "1"], {}, "unknown option --min-prot (see --help)"],
    [["--min-port"], {}, "--min-port needs a value"],
    [["serve"], {}, 'unknown command "serve"'],
    [
      ["--config", "/nonexistent/relay.json"],
      {},
      '--config must be a readable file, got "/nonexistent/relay.json" (ENOENT)',
    ],
  ])("rejects %j %j with one line: %s", (argv, env, message) => {
    const text = errorOf(argv, { TURNPIKE_TOKEN: "t", ...env });
    expect(text).toBe(message);
    expect(text).not.toContain("\n");
  });

  it("names the file and key for bad config file contents", () => {
    const bad = tempFile("bad.json", JSON.stringify({ maxPort: 99999 }));
    expect(errorOf(["--config", bad])).toBe(
      `"max-port" in ${bad} must be 1024..65535, got "99999"`,
    );
    const unknown = tempFile("unknown.json", JSON.stringify({ maxPorts: 1 }));
    expect(errorOf(["--config", unknown])).toBe(
      `--config file "${unknown}" has an unknown option "maxPorts"`,
    );
    const broken = tempFile("broken.json", "{ nope");
    expect(errorOf(["--config", broken])).toMatch(
      new RegExp(`^--config file "${broken}" is not valid JSON: `),
    );
  });

  it("lists every option with its env var and default in --help and in the README table", () => {
    const help = parseRelayArgs(["--help"], {}, opts);
    expect(help.command).toBe("help");
    const text = help.command === "help" ? help.text : "";
    const table = renderConfigTable();
    for (const [name, spec] of Object.entries(OPTIONS)) {
      if ("hidden" in spec && spec.hidden) {
        // Test hooks stay out of --help and the README, and still parse.
        expect(text).not.toContain(`--${name}`);
        continue;
      }
      expect(text).toContain(`--${name}`);
      expect(text).toContain(envName(name));
      expect(table).toContain(`\`${envName(name)}\``);
      expect(table).toContain(`| ${spec.defaultText.replaceAll("|", "\\|")} |`);
    }
    expect(table.split("\n")[0]).toBe("| option | env var | default | meaning |");
  });
});

describe("--tcp-splice", () => {
  it("splices where it can by default, pipes in JavaScript with off, and refuses anything else", () => {
    expect(relay([]).tcpSplice).toBe("auto");
    expect(relay(["--tcp-splice", "off"]).tcpSplice).toBe("off");
    expect(relay([], { TURNPIKE_TOKEN: "t0ken", TURNPIKE_TCP_SPLICE: "off" }).tcpSplice).toBe(
      "off",
    );
    expect(errorOf(["--tcp-splice", "always"])).toContain("--tcp-splice must be one of auto, off");
  });
});

describe("connections within the open-file limit", () => {
  const under = (limit: number | undefined, argv: string[] = []) => {
    const parsed = parseRelayArgs(
      argv,
      { TURNPIKE_TOKEN: "t0ken" },
      {
        ...opts,
        openFilesLimit: () => limit,
      },
    );
    if (parsed.command !== "relay") throw new Error(`expected relay, got ${parsed.command}`);
    return parsed;
  };

  it("keeps a quarter of the limit for relay sockets and a sixteenth at most for health connections, and says what it lowered", () => {
    const c = under(1024);
    expect([c.maxConnections, c.healthMaxConnections]).toEqual([1024 - 256 - 64, 64]);
    expect(c.warnings).toContain(
      "lowered --max-connections 10000 to 704: this process may open 1024 files (RLIMIT_NOFILE) and keeps 256 for relay sockets; raise the limit for more (systemd LimitNOFILE=, ulimit -n, a container's nofile ulimit)",
    );
    const small = under(256, ["--health-max-connections", "100"]);
    expect([small.maxConnections, small.healthMaxConnections]).toEqual([256 - 128 - 16, 16]);
  });

  it("lowers nothing the limit holds, or where the limit is unknown", () => {
    for (const c of [
      under(1_048_576),
      under(undefined),
      under(1024, ["--max-connections", "500"]),
    ]) {
      expect(c.warnings.filter((w) => w.startsWith("lowered"))).toEqual([]);
    }
    expect(under(1024, ["--max-connections", "500"]).maxConnections).toBe(500);
  });

  it("gives spliced RFC 6062 pipes (6 descriptors each at most) and the idle kernel pipes udp-batch keeps (16) at most half of the reserve", () => {
    // 1024 files: 256 kept, 128 of them for spliced pipes and the pool's idle kernel pipes.
    expect(under(1024).tcpSplicePipes).toBe(Math.floor((128 - 16) / 6));
    expect(under(256).tcpSplicePipes).toBe(Math.floor((64 - 16) / 6));
    expect(under(1_048_576).tcpSplicePipes).toBe(Math.floor((131_072 - 16) / 6));
    expect(under(undefined).tcpSplicePipes).toBeGreaterThanOrEqual(1_000_000);
  });
});

describe("pinned ports, revocation and the discovery API", () => {
  it("reads --pinned-ports MIN-MAX and refuses a range that overlaps the dynamic one", () => {
    expect(relay(["--pinned-ports", "40000-40099"]).pinnedPorts).toEqual({
      min: 40000,
      max: 40099,
    });
    expect(
      relay([], { TURNPIKE_TOKEN: "t", TURNPIKE_PINNED_PORTS: "3000-3000" }).pinnedPorts,
    ).toEqual({
      min: 3000,
      max: 3000,
    });
    expect(relay([]).pinnedPorts).toBeUndefined();
    expect(errorOf(["--pinned-ports", "49000-49152"])).toBe(
      "--pinned-ports must not overlap --min-port..--max-port, got 49000-49152 and 49152-65535",
    );
    expect(errorOf(["--pinned-ports", "40099-40000"])).toBe(
      '--pinned-ports must be MIN-MAX with 1024 <= MIN <= MAX <= 65535, got "40099-40000"',
    );
  });

  it("collects --revoke entries and reads --revoke-file, skipping blanks and comments", () => {
    const file = tempFile("revoked", "# gone\nglobex\n\n  initech \n");
    const c = relay(["--revoke", "acme", "--revoke", "static:umbrella", "--revoke-file", file]);
    expect(c.revoke).toEqual(["acme", "static:umbrella"]);
    expect(c.revokeFile).toBe(file);
    expect(c.revokeFileEntries).toEqual(["globex", "initech"]);
    expect(c.revokeFileWarnings).toEqual([]);
    expect(errorOf(["--revoke-file", "/nonexistent/revoked"])).toMatch(
      /^--revoke-file must be a readable file, got "\/nonexistent\/revoked" \(ENOENT\)$/,
    );
  });

  it("reads a comment after an entry as a comment, and skips lines it cannot use with a warning", () => {
    const file = tempFile(
      "revoked",
      [
        "acme-web   # leaked key",
        "team#2",
        "rest:acme-pg;port=40007\t# one pin only",
        "static:ops",
        "rest-expiry:1795520000",
        "acme web",
        "rest:",
        "rest-expiry:soon",
        "rest:acme;port=70000",
        "",
      ].join("\n"),
    );
    const c = relay(["--revoke-file", file]);
    expect(c.revokeFileEntries).toEqual([
      "acme-web",
      "team#2",
      "rest:acme-pg;port=40007",
      "static:ops",
      "rest-expiry:1795520000",
    ]);
    expect(c.revokeFileWarnings).toEqual([
      `--revoke-file "${file}" line 6 ignored: an entry has no blanks inside (a comment starts with ' #'), got "acme web"`,
      `--revoke-file "${file}" line 7 ignored: "rest:" needs a name after it, got "rest:"`,
      `--revoke-file "${file}" line 8 ignored: "rest-expiry:" takes the expiry of a TURN REST username without a user part (digits), got "rest-expiry:soon"`,
      `--revoke-file "${file}" line 9 ignored: a pinned port must be 1..65535 (no leading zero), got "rest:acme;port=70000"`,
    ]);
  });

  it("refuses a --revoke entry it cannot use, naming it", () => {
    expect(errorOf(["--revoke", "static:"])).toBe(
      '--revoke must be a revocation entry ("static:" needs a name after it), got "static:"',
    );
    expect(
      relay([], { TURNPIKE_TOKEN: "t", TURNPIKE_REVOKE: "a, rest:b;port=40000" }).revoke,
    ).toEqual(["a", "rest:b;port=40000"]);
  });

  it("takes the admin token from the environment, and warns when it is a flag or has no listener", () => {
    expect(relay([], { TURNPIKE_TOKEN: "t", TURNPIKE_ADMIN_TOKEN: "adm" }).adminToken).toBe("adm");
    const flag = relay(["--admin-token", "adm-flag"]);
    expect(flag.adminToken).toBe("adm-flag");
    expect(flag.warnings.some((w) => w.startsWith("--admin-token on the command line"))).toBe(true);
    expect(flag.warnings.join("\n")).not.toContain("adm-flag");
    const off = relay(["--health-listen", "off"], {
      TURNPIKE_TOKEN: "t",
      TURNPIKE_ADMIN_TOKEN: "a",
    });
    expect(off.warnings).toContain(
      "--admin-token is set but --health-listen is off: the discovery API is not served",
    );
  });

  it("builds the allocations command from the relay's health listener and admin token", () => {
    expect(
      parseRelayArgs(["allocations", "--user", "acme"], {
        TURNPIKE_ADMIN_TOKEN: "adm",
        TURNPIKE_HEALTH_LISTEN: "0.0.0.0:9000",
      }),
    ).toEqual({
      command: "allocations",
      url: "http://127.0.0.1:9000",
      adminToken: "adm",
      user: "acme",
      end: undefined,
      json: false,
    });
    expect(
      parseRelayArgs(["allocations", "--url", "https://relay.example:8443", "--json"], {
        TURNPIKE_ADMIN_TOKEN: "adm",
      }),
    ).toMatchObject({ url: "https://relay.example:8443", json: true });
  });
});

describe("shared secrets", () => {
  it("takes several: --token repeated, TURNPIKE_TOKEN comma-separated, a config file's array", () => {
    expect(relay(["--token", "a", "--token", "b"], {}).tokens).toEqual(["a", "b"]);
    expect(relay([], { TURNPIKE_TOKEN: "b, a" }).tokens).toEqual(["b", "a"]);
    const file = tempFile("relay.json", JSON.stringify({ token: ["x", "y"] }));
    expect(relay(["--config", file], {}).tokens).toEqual(["x", "y"]);
  });

  it("reads --token-file: one secret per line, comment lines and blank lines skipped", () => {
    const file = tempFile("tokens", "# rotated 2026-12-01\n  new-secret  \n\nold # secret\n");
    const c = relay(["--token-file", file], {});
    expect(c.tokens).toEqual(["new-secret", "old # secret"]);
    expect(c.tokenFile).toBe(file);
    expect(relay([], { TURNPIKE_TOKEN_FILE: file }).tokens).toEqual(["new-secret", "old # secret"]);
  });

  it.each([
    [
      [],
      { TURNPIKE_TOKEN: "a,,b" },
      "TURNPIKE_TOKEN has an empty entry (item 2 of 3): remove the stray separator",
    ],
    [
      [],
      { TURNPIKE_TOKEN: "a," },
      "TURNPIKE_TOKEN has an empty entry (item 2 of 2): remove the stray separator",
    ],
    [
      ["--token", "a", "--token", "b", "--token", "a"],
      {},
      "--token lists one secret twice (items 1 and 3)",
    ],
    [
      ["--token", "a", "--token-file", "TOKENS"],
      {},
      "--token and --token-file are exclusive: give the secrets either as --token/TURNPIKE_TOKEN or in --token-file",
    ],
  ])("refuses %j %j with one line that shows no secret: %s", (argv, env, message) => {
    const tokens = tempFile("tokens", "z\n");
    const text = errorOf(
      argv.map((a) => (a === "TOKENS" ? tokens : a)),
      env,
    );
    expect(text).toBe(message);
  });

  it("refuses a token file with no secret or one secret twice, by line number", () => {
    const empty = tempFile("tokens", "# nothing yet\n\n");
    expect(errorOf(["--token-file", empty], {})).toBe(`--token-file "${empty}" holds no secret`);
    const twice = tempFile("tokens", "s1\n# c\ns2\ns1\n");
    expect(errorOf(["--token-file", twice], {})).toBe(
      `--token-file "${twice}" lists one secret twice (lines 1 and 4)`,
    );
  });

  it("reads --legacy-pinned-credentials-until as an instant and says at start what it allows", () => {
    const c = relay(["--legacy-pinned-credentials-until", "2999-01-31"]);
    expect(c.legacyPinnedUntil).toBe(Date.parse("2999-01-31T00:00:00Z") / 1000);
    expect(c.warnings).toContain(
      "--legacy-pinned-credentials-until 2999-01-31T00:00:00.000Z: pinned credentials signed with the token itself (the old scheme) are accepted until then; re-mint them with `turnpike-relay credentials --port`",
    );
    expect(
      relay(["--legacy-pinned-credentials-until", "2027-01-31T12:00+01:00"]).legacyPinnedUntil,
    ).toBe(Date.parse("2027-01-31T11:00:00Z") / 1000);
    expect(relay(["--legacy-pinned-credentials-until", "2020-01-01"]).warnings).toContain(
      "--legacy-pinned-credentials-until 2020-01-01T00:00:00.000Z has passed: pinned credentials of the old scheme are refused; drop the option",
    );
    expect(relay([]).legacyPinnedUntil).toBeUndefined();
    expect(errorOf(["--legacy-pinned-credentials-until", "2027-01-31T12:00"])).toBe(
      '--legacy-pinned-credentials-until must be an ISO 8601 date (2027-01-31) or date-time with a zone (2027-01-31T12:00Z), got "2027-01-31T12:00"',
    );
  });
});

describe("credentials subcommand parsing", () => {
  it("reads the token from the environment and builds default URIs from the listeners", () => {
    const parsed = parseRelayArgs(["credentials", "--user", "alice", "--ttl", "600"], {
      TURNPIKE_TOKEN: "k",
      TURNPIKE_LISTEN: "127.0.0.1:3478,[::1]:3479",
      TURNPIKE_TLS_LISTEN: "127.0.0.1:5349",
    });
    expect(parsed).toEqual({
      command: "credentials",
      token: "k",
      pinnedSecret: false,
      user: "alice",
      port: undefined,
      ttl: 600,
      uris: [
        "turn:127.0.0.1:3478?transport=udp",
        "turn:127.0.0.1:3478?transport=tcp",
        "turn:[::1]:3479?transport=udp",
        "turn:[::1]:3479?transport=tcp",
        "turns:127.0.0.1:5349?transport=tcp",
      ],
      notes: [],
    });
  });

  it("takes URIs from the relay's settings (its config file too), never from this host's interfaces", () => {
    // The default listener 0.0.0.0:3478 names no address: no URI, and a note saying what to set.
    const bare = parseRelayArgs(["credentials"], { TURNPIKE_TOKEN: "k" });
    expect(bare).toMatchObject({ uris: [] });
    expect(bare.command === "credentials" && bare.notes).toEqual([
      "no URI for 0.0.0.0:3478: an unspecified listener names no address clients can reach; set the relay's --public-ip4/--public-ip6 or --relay-ip (flag, TURNPIKE_* or its config file), or pass --uri",
    ]);
    // The relay's config file, as the relay reads it.
    const file = tempFile(
      "relay.json",
      JSON.stringify({ listen: ["0.0.0.0:3478", "[::]:3478"], relayIp: ["2001:db8::7"] }),
    );
    expect(
      parseRelayArgs(["credentials"], { TURNPIKE_TOKEN: "k", TURNPIKE_CONFIG: file }),
    ).toMatchObject({
      uris: ["turn:[2001:db8::7]:3478?transport=udp", "turn:[2001:db8::7]:3478?transport=tcp"],
    });
    // Behind 1:1 NAT: the relay listens on its private address, clients reach the public one.
    expect(
      parseRelayArgs(["credentials", "--listen", "10.0.0.5:3478", "--public-ip4", "203.0.113.10"], {
        TURNPIKE_TOKEN: "k",
      }),
    ).toMatchObject({
      uris: ["turn:203.0.113.10:3478?transport=udp", "turn:203.0.113.10:3478?transport=tcp"],
      notes: [],
    });
  });

  it("uses the public IP in URIs for an unspecified listener, and --uri when given", () => {
    const env = { TURNPIKE_TOKEN: "k", TURNPIKE_PUBLIC_IP4: "192.0.2.10" };
    const parsed = parseRelayArgs(["credentials"], env);
    expect(parsed).toMatchObject({
      ttl: 86400,
      uris: ["turn:192.0.2.10:3478?transport=udp", "turn:192.0.2.10:3478?transport=tcp"],
    });
    const explicit = parseRelayArgs(
      ["credentials", "--uri", "turn:relay.example:3478", "--uri", "turns:relay.example:443"],
      env,
    );
    expect(explicit).toMatchObject({
      uris: ["turn:relay.example:3478", "turns:relay.example:443"],
    });
  });

  it("mints with the first of several secrets, from TURNPIKE_TOKEN or --token-file", () => {
    expect(parseRelayArgs(["credentials"], { TURNPIKE_TOKEN: "new,old" })).toMatchObject({
      token: "new",
    });
    const file = tempFile("tokens", "# first mints\nfrom-file\nolder\n");
    expect(parseRelayArgs(["credentials", "--token-file", file], {})).toMatchObject({
      token: "from-file",
    });
    expect(
      parseRelayArgs(["credentials", "--pinned-secret"], { TURNPIKE_TOKEN_FILE: file }),
    ).toMatchObject({ token: "from-file", pinnedSecret: true });
    expect(() =>
      parseRelayArgs(["credentials", "--pinned-secret", "--user", "a"], { TURNPIKE_TOKEN: "k" }),
    ).toThrow("--pinned-secret prints the secret only: drop --user");
  });

  it("refuses to mint without a token", () => {
    expect(() => parseRelayArgs(["credentials"], {})).toThrow(
      "credentials needs the relay's shared secret: export TURNPIKE_TOKEN (or pass --token or --token-file)",
    );
    expect(() => parseRelayArgs(["credentials", "--ttl", "0"], { TURNPIKE_TOKEN: "k" })).toThrow(
      '--ttl must be 1..315360000, got "0"',
    );
  });
});

describe("--workers auto", () => {
  it("is one engine up to two cores, then one worker per core beyond the first", () => {
    expect([1, 2, 3, 4, 8, 64].map(autoWorkers)).toEqual([1, 1, 2, 3, 7, 63]);
  });

  it("is what a relay without --workers runs, from the cores this process may use", () => {
    expect(relay(["--listen", "127.0.0.1:3478"]).workers).toBe(autoWorkers(availableParallelism()));
  });
});
