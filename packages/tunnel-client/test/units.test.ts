import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeTunnelKey } from "@turnpike/runtime-kit";
import { describe, expect, it } from "vitest";
import { Backoff } from "../src/backoff.js";
import {
  ConfigError,
  parseTunnelArgs,
  renderConfigTable,
  type TunnelConfig,
} from "../src/config/index.js";
import { createCredentialSource, fetchJsonOverHttp } from "../src/credentials.js";
import { reallocateBy } from "../src/lifecycle/renewal.js";
import { expandAllowList } from "../src/peers.js";
import { StaticResolver } from "../src/resolver.js";
import { parseTurnUri } from "../src/uri.js";
import { type AccessWindow, isOpen, parseWindow } from "../src/windows.js";

describe("backoff (full jitter)", () => {
  it("draws each delay uniformly below min(cap, base * 2^attempt)", () => {
    const b = new Backoff({ baseMs: 500, capMs: 30_000, random: () => 0.999999 });
    const delays = Array.from({ length: 10 }, () => b.next(0));
    expect(delays.map((d) => Math.round(d / 100) * 100)).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000,
    ]);
    const zero = new Backoff({ baseMs: 500, capMs: 30_000, random: () => 0 });
    expect(zero.next(0)).toBe(0);
  });

  it("never exceeds the cap, even after thousands of failures", () => {
    const b = new Backoff({ baseMs: 500, capMs: 30_000, random: Math.random });
    for (let i = 0; i < 5000; i++) expect(b.next(0)).toBeLessThan(30_000);
  });

  it("starts over after a connection that stayed up for the stable period", () => {
    const b = new Backoff({
      baseMs: 1000,
      capMs: 8000,
      random: () => 0.999999,
      stableAfterMs: 5000,
    });
    b.next(0);
    b.next(0);
    b.next(0);
    expect(b.window()).toBe(8000);
    b.connected(100);
    expect(b.next(200)).toBeGreaterThan(7000); // flapped quickly: still backing off
    b.connected(1000);
    expect(b.next(7000)).toBeLessThan(1000); // up for 6 s: attempt 0 again
  });
});

const w = (text: string): AccessWindow => {
  const r = parseWindow(text);
  if ("error" in r) throw new Error(r.error);
  return r;
};

describe("access windows", () => {
  it("opens Mon-Fri 08:00-18:00 Berlin at 06:00 UTC in summer and 07:00 UTC in winter (DST)", () => {
    const win = [w("Mon-Fri 08:00-18:00 Europe/Berlin")];
    // Wed 2025-07-02: CEST (UTC+2)
    expect(isOpen(win, new Date("2025-07-02T05:59:00Z"))).toBe(false);
    expect(isOpen(win, new Date("2025-07-02T06:00:00Z"))).toBe(true);
    expect(isOpen(win, new Date("2025-07-02T15:59:00Z"))).toBe(true);
    expect(isOpen(win, new Date("2025-07-02T16:00:00Z"))).toBe(false);
    // Wed 2025-01-15: CET (UTC+1)
    expect(isOpen(win, new Date("2025-01-15T06:30:00Z"))).toBe(false);
    expect(isOpen(win, new Date("2025-01-15T07:00:00Z"))).toBe(true);
    // Saturday: closed all day
    expect(isOpen(win, new Date("2025-07-05T10:00:00Z"))).toBe(false);
  });

  it("follows the day of the DST switch itself (Berlin, Sunday 2025-03-30, 02:00 -> 03:00)", () => {
    const win = [w("Sun 01:00-04:00 Europe/Berlin")];
    expect(isOpen(win, new Date("2025-03-29T23:59:00Z"))).toBe(false); // 00:59 CET
    expect(isOpen(win, new Date("2025-03-30T00:00:00Z"))).toBe(true); // 01:00 CET
    expect(isOpen(win, new Date("2025-03-30T01:30:00Z"))).toBe(true); // 03:30 CEST
    expect(isOpen(win, new Date("2025-03-30T02:00:00Z"))).toBe(false); // 04:00 CEST
  });

  it("crosses midnight on the listed day only", () => {
    const win = [w("Fri 22:00-06:00 America/New_York")];
    // Fri 2025-07-04 23:00 EDT = Sat 03:00 UTC; Sat 05:00 EDT = 09:00 UTC
    expect(isOpen(win, new Date("2025-07-05T03:00:00Z"))).toBe(true);
    expect(isOpen(win, new Date("2025-07-05T09:00:00Z"))).toBe(true);
    expect(isOpen(win, new Date("2025-07-05T10:00:00Z"))).toBe(false);
    // Thu 23:00 EDT: Thursday is not listed
    expect(isOpen(win, new Date("2025-07-04T03:00:00Z"))).toBe(false);
  });

  it("is always open without windows, and rejects malformed ones with a reason", () => {
    expect(isOpen([], new Date())).toBe(true);
    expect(parseWindow("Mon-Fri 08:00-18:00 Mars/Olympus")).toHaveProperty("error");
    expect(parseWindow("Funday 08:00-18:00")).toHaveProperty("error");
    expect(parseWindow("Mon 25:00-26:00")).toHaveProperty("error");
    expect(parseWindow("Mon 08:00-08:00")).toHaveProperty("error");
    expect(w("daily 00:00-24:00").days).toBe(0x7f);
  });
});

describe("TURN URIs (RFC 7065)", () => {
  it("applies default ports and transports", () => {
    expect(parseTurnUri("turn:relay.example.com")).toMatchObject({
      host: "relay.example.com",
      port: 3478,
      transport: "udp",
      secure: false,
    });
    expect(parseTurnUri("turns:relay.example.com")).toMatchObject({
      port: 5349,
      transport: "tls",
      secure: true,
    });
    expect(parseTurnUri("turn:10.0.0.1:3479?transport=tcp")).toMatchObject({
      host: "10.0.0.1",
      port: 3479,
      transport: "tcp",
    });
    expect(parseTurnUri("turn:[2001:db8::1]:3478")).toMatchObject({
      host: "2001:db8::1",
      port: 3478,
    });
    expect(parseTurnUri("turns:relay.example.com:443?transport=tcp")).toMatchObject({
      port: 443,
      transport: "tls",
    });
  });

  it("rejects what it cannot honour", () => {
    for (const bad of [
      "stun:x",
      "turn:",
      "turn:x:0",
      "turn:x:70000",
      "turn:x?transport=sctp",
      "turns:x?transport=udp",
      "turn:[zz]:1",
      "turn://x",
    ]) {
      expect(parseTurnUri(bad), bad).toHaveProperty("error");
    }
  });
});

describe("allowed peers", () => {
  it("expands a small CIDR into one permission per address", () => {
    const r = expandAllowList(["192.0.2.0/30", "198.51.100.7"], 64);
    expect(r).toEqual({
      entries: ["192.0.2.0/30", "198.51.100.7"],
      ips: ["192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "198.51.100.7"],
    });
  });

  it("refuses a CIDR too large to express as permissions", () => {
    const r = expandAllowList(["10.0.0.0/8"], 64);
    expect("error" in r && r.error).toMatch(/too large.*\/24/);
    expect(expandAllowList(["2001:db8::/64"], 64)).toHaveProperty("error");
    expect(expandAllowList(["192.0.2.0/24"], 64)).toHaveProperty("error"); // 256 > 64
    expect(expandAllowList(["192.0.2.0/24"], 256)).not.toHaveProperty("error");
  });
});

describe("resolver", () => {
  it("answers fixed names from the table and can change the answer", async () => {
    const r = new StaticResolver([["relay.test", ["127.0.0.2", "127.0.0.1"]]]);
    expect(await r.resolve("RELAY.test")).toEqual(["127.0.0.1", "127.0.0.2"]);
    r.set("relay.test", ["127.0.0.1"]);
    expect(await r.resolve("relay.test")).toEqual(["127.0.0.1"]);
    expect(await r.resolve("127.0.0.9")).toEqual(["127.0.0.9"]);
  });
});

describe("configuration", () => {
  const run = (argv: string[], env: NodeJS.ProcessEnv = {}): TunnelConfig => {
    const c = parseTunnelArgs(argv, env);
    if (c.command !== "run") throw new Error(c.command);
    return c;
  };
  const error = (argv: string[], env: NodeJS.ProcessEnv = {}): string => {
    try {
      parseTunnelArgs(argv, env);
    } catch (e) {
      if (e instanceof ConfigError) return e.message;
      throw e;
    }
    throw new Error("no error");
  };

  it("reads relays, services, peers and the token (flag > env)", () => {
    const c = run(
      [
        "--relay",
        "turn:relay.test",
        "--relay",
        "turns:relay2.test",
        "--expose",
        "db=tcp://10.1.2.3:5432",
        "--expose",
        "dns=udp://[fd00::53]:53",
        "--allow-peer",
        "203.0.113.9",
        "--keepalive",
        "5",
      ],
      {
        TURNPIKE_TOKEN: "s3cret",
        TURNPIKE_KEEPALIVE: "7",
        TURNPIKE_NAME: "acme",
        XDG_RUNTIME_DIR: "/run/user/1000",
      },
    );
    expect(c.relays.map((r) => [r.host, r.port, r.transport])).toEqual([
      ["relay.test", 3478, "udp"],
      ["relay2.test", 5349, "tls"],
    ]);
    expect(c.services.map((s) => [s.name, s.protocol, s.target.host, s.target.port])).toEqual([
      ["db", "tcp", "10.1.2.3", 5432],
      ["dns", "udp", "fd00::53", 53],
    ]);
    expect(c.services[0]!.allowPeers.ips).toEqual(["203.0.113.9"]);
    expect(c.credentials).toEqual({ kind: "token", token: "s3cret", name: "acme", ttl: 86400 });
    expect(c.keepalive).toBe(5);
    expect(c.backoffBase).toBe(0.5);
    expect(c.backoffMax).toBe(30);
    expect(c.adminListen).toEqual({ path: "/run/user/1000/turnpike-tunnel/admin.sock" });
  });

  it("serves the admin API on an owner-only socket by default, and over TCP only with a token", () => {
    const base = ["--relay", "turn:x"];
    const env = { TURNPIKE_TOKEN: "t" };
    expect(error([...base, "--admin-listen", "127.0.0.1:7070"], env)).toBe(
      "--admin-listen 127.0.0.1:7070 is TCP, which every local process can reach: set --admin-token (TURNPIKE_ADMIN_TOKEN), or use --admin-listen unix:PATH",
    );
    const tcp = run([...base, "--admin-listen", "[::1]:7070"], {
      ...env,
      TURNPIKE_ADMIN_TOKEN: "a",
    });
    expect(tcp.adminListen).toEqual({ host: "::1", port: 7070 });
    expect(tcp.adminToken).toBe("a");
    expect(tcp.warnings).toEqual([]);
    const wide = run([...base, "--admin-listen", "0.0.0.0:7070", "--admin-token", "a"], env);
    expect(wide.warnings).toEqual([
      "--admin-listen 0.0.0.0:7070 is beyond loopback over plain HTTP: the token crosses the network in clear",
      "--admin-token on the command line is visible to other users of this host; prefer TURNPIKE_ADMIN_TOKEN",
    ]);
    expect(run([...base, "--admin-listen", "unix:/srv/t/admin.sock"], env).adminListen).toEqual({
      path: "/srv/t/admin.sock",
    });
    expect(run([...base, "--admin-listen", "off"], env).adminListen).toBeNull();
    expect(error([...base, "--admin-listen", "unix:admin.sock"], env)).toMatch(
      /^--admin-listen must be unix:\/ABSOLUTE\/PATH/,
    );
    // `list` asks where a tunnel with the same environment listens.
    const list = (env: NodeJS.ProcessEnv) => parseTunnelArgs(["list"], env);
    expect(list({ XDG_RUNTIME_DIR: "/run/user/7" })).toMatchObject({
      admin: "unix:/run/user/7/turnpike-tunnel/admin.sock",
    });
    expect(list({ TURNPIKE_ADMIN_LISTEN: "0.0.0.0:7071", TURNPIKE_ADMIN_TOKEN: "a" })).toEqual({
      command: "list",
      admin: "http://127.0.0.1:7071",
      adminToken: "a",
      json: false,
    });
    expect(() => list({ TURNPIKE_ADMIN_LISTEN: "off" })).toThrow(/no admin API to ask/);
  });

  it("takes lists and windows from the environment", () => {
    const c = run([], {
      TURNPIKE_RELAY: "turn:a.test,turn:b.test:3479",
      TURNPIKE_USERNAME: "u",
      TURNPIKE_PASSWORD: "p",
      TURNPIKE_EXPOSE: "a=tcp://h:1,b=udp://h:2",
      TURNPIKE_WINDOW: "Mon-Fri 08:00-18:00 Europe/Berlin;Sat 10:00-12:00",
      TURNPIKE_RESOLVE: "a.test=127.0.0.1,127.0.0.2",
    });
    expect(c.relays).toHaveLength(2);
    expect(c.services).toHaveLength(2);
    expect(c.services[0]!.windows).toHaveLength(2);
    expect(c.credentials.kind).toBe("static");
    expect([...c.resolve.entries()]).toEqual([["a.test", ["127.0.0.1", "127.0.0.2"]]]);
  });

  it("says clearly what is wrong", () => {
    expect(error(["--expose", "a=tcp://h:1"], { TURNPIKE_TOKEN: "t" })).toMatch(
      /--relay is required/,
    );
    expect(error(["--relay", "turn:x"])).toMatch(/no credentials/);
    expect(error(["--relay", "turn:x", "--username", "u"])).toMatch(/go together/);
    expect(
      error(["--relay", "turn:x", "--allow-peer", "10.0.0.0/16"], { TURNPIKE_TOKEN: "t" }),
    ).toMatch(/--allow-peer: "10.0.0.0\/16" is too large/);
    expect(
      error(["--relay", "turn:x", "--expose", "db=http://h:1"], { TURNPIKE_TOKEN: "t" }),
    ).toMatch(/^--expose must be NAME=tcp/);
    expect(error(["--relay", "ftp:x"], { TURNPIKE_TOKEN: "t" })).toMatch(/^--relay must be/);
    expect(error(["--relay", "turn:x", "--bogus"], { TURNPIKE_TOKEN: "t" })).toMatch(
      /unknown option --bogus/,
    );
    expect(error(["--relay", "turn:x", "--window", "Mon 9-5"], { TURNPIKE_TOKEN: "t" })).toMatch(
      /^--window must be/,
    );
    expect(
      error(["--relay", "turn:x", "--credentials-url", "https://x/c"], { TURNPIKE_TOKEN: "t" }),
    ).toMatch(/exactly one credential source/);
  });

  it("reads TLS trust (--ca, --insecure-skip-verify) and short credential ttls", () => {
    const dir = mkdtempSync(join(tmpdir(), "turnpike-units-"));
    try {
      const pem = join(dir, "ca.pem");
      const body = "MIIB".padEnd(64, "A");
      writeFileSync(
        pem,
        `junk\n-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`,
      );
      const c = run(["--relay", "turns:r.test", "--ca", pem, "--credential-ttl", "5"], {
        TURNPIKE_TOKEN: "t",
      });
      expect(c.tls.ca).toHaveLength(2);
      expect(c.tls.rejectUnauthorized).toBe(true);
      expect(c.credentials).toMatchObject({ kind: "token", ttl: 5 });
      const insecure = run(["--relay", "turns:r.test"], {
        TURNPIKE_TOKEN: "t",
        TURNPIKE_INSECURE_SKIP_VERIFY: "true",
      });
      expect(insecure.tls).toEqual({ rejectUnauthorized: false });
      expect(insecure.warnings.join("\n")).toMatch(/--insecure-skip-verify is set.*tests only/);
      expect(
        run(["--relay", "turns:r.test", "--insecure-skip-verify"], { TURNPIKE_TOKEN: "t" }).tls,
      ).toEqual({ rejectUnauthorized: false });
      writeFileSync(join(dir, "empty.pem"), "no certificates here");
      expect(
        error(["--relay", "turn:x", "--ca", join(dir, "empty.pem")], { TURNPIKE_TOKEN: "t" }),
      ).toMatch(/^--ca must be a PEM file with at least one CERTIFICATE/);
      expect(
        error(["--relay", "turn:x", "--ca", join(dir, "missing.pem")], { TURNPIKE_TOKEN: "t" }),
      ).toMatch(/^--ca must be a readable PEM file \(ENOENT\)/);
      expect(
        error(["--relay", "turn:x", "--credential-ttl", "4"], { TURNPIKE_TOKEN: "t" }),
      ).toMatch(/^--credential-ttl must be 5\.\./);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads a tunnel key (TURNPIKE_KEY) as the one credential source, and --tls-servername", () => {
    const key = encodeTunnelKey({ username: "1800000000:acme-pg;port=40007", password: "pw" });
    const c = run(["--relay", "turns:192.0.2.7", "--tls-servername", "Relay.Example.com"], {
      TURNPIKE_KEY: key,
    });
    expect(c.credentials).toEqual({
      kind: "key",
      username: "1800000000:acme-pg;port=40007",
      password: "pw",
    });
    expect(c.tls).toEqual({ rejectUnauthorized: true, servername: "relay.example.com" });
    const flag = run(["--relay", "turn:x", "--key", key]);
    expect(flag.warnings.some((w) => w.startsWith("--key on the command line"))).toBe(true);
    expect(flag.warnings.join("\n")).not.toContain(key);
    expect(error(["--relay", "turn:x"], { TURNPIKE_KEY: key, TURNPIKE_TOKEN: "t" })).toMatch(
      /exactly one credential source: TURNPIKE_KEY/,
    );
    expect(error(["--relay", "turn:x"], { TURNPIKE_KEY: "tpk1.garbage!" })).toBe(
      "TURNPIKE_KEY: a tunnel key is base64url after its prefix",
    );
    expect(
      error(["--relay", "turn:x", "--tls-servername", "not a name"], { TURNPIKE_KEY: key }),
    ).toMatch(/^--tls-servername must be a DNS name/);
  });

  it("parses the list subcommand and renders docs from the same table", () => {
    expect(
      parseTunnelArgs(["list", "--admin", "http://127.0.0.1:9999"], { TURNPIKE_ADMIN_TOKEN: "x" }),
    ).toEqual({ command: "list", admin: "http://127.0.0.1:9999", adminToken: "x", json: false });
    const help = parseTunnelArgs(["--help"], {});
    expect(help.command).toBe("help");
    expect((help as { text: string }).text).toContain("TURNPIKE_DNS_INTERVAL");
    expect((help as { text: string }).text).not.toContain("--resolve");
    expect((help as { text: string }).text).not.toContain("--test-clock");
    expect((help as { text: string }).text).toContain("--insecure-skip-verify");
    expect(renderConfigTable()).toContain(
      "| `--backoff-max SECONDS` | `TURNPIKE_BACKOFF_MAX` | 30 |",
    );
  });
});

describe("credential sources", () => {
  it("serves a tunnel key's credentials until the expiry in its username, then says why not", async () => {
    let now = 1_799_999_000_000;
    const source = createCredentialSource(
      { kind: "key", username: "1800000000:acme-pg;port=40007", password: "pw" },
      { nowMs: () => now },
    );
    expect(await source.get()).toMatchObject({
      username: "1800000000:acme-pg;port=40007",
      password: "pw",
      // Nothing to renew from: the tunnel never re-allocates on its own.
      renewAt: Number.POSITIVE_INFINITY,
    });
    now = 1_800_000_000_000;
    await expect(source.get()).rejects.toThrow(
      "the --key credentials expired at 2027-01-15T08:00:00.000Z: ask the platform for a new key",
    );
  });

  it("renews after 80% of the ttl, and a refused renewal re-allocates a minute before expiry", async () => {
    let now = 1_000_000_500; // ms, half a second into a unix second
    const src = createCredentialSource(
      { kind: "token", token: "k", name: "acme", ttl: 86400 },
      { nowMs: () => now },
    );
    const a = await src.get();
    // The username carries whole seconds: the relay refuses it from (1000000 + 86400) s on.
    expect(a.username).toBe("1086400:acme");
    expect(a.expiresAt).toBe(1_086_400_000);
    expect(a.renewAt).toBe(1_086_400_000 - 86_400 * 200);
    expect(reallocateBy(a)).toBe(1_086_400_000 - 60_000);
    now = a.renewAt - 1;
    expect(await src.get()).toBe(a);
    now = a.renewAt;
    expect((await src.get()).username).not.toBe(a.username);
    // Short ttls: re-allocation is due when renewal is.
    const short = await createCredentialSource(
      { kind: "token", token: "k", name: "acme", ttl: 5 },
      { nowMs: () => 2_000_000_000 },
    ).get();
    expect(reallocateBy(short)).toBe(short.renewAt);
  });

  it("takes the expiry of a URL's credentials from its REST username", async () => {
    const src = createCredentialSource(
      { kind: "url", url: "http://platform.test/creds" },
      {
        nowMs: () => 1_000_000_000,
        fetchJson: async () => ({ username: "1000030:acme", password: "p", ttl: 60 }),
      },
    );
    const c = await src.get();
    expect(c.expiresAt).toBe(1_000_030_000); // the username says 30 s, tighter than ttl 60
    await expect(
      createCredentialSource(
        { kind: "url", url: "http://platform.test/creds" },
        { fetchJson: async () => ({ user: "x" }) },
      ).get(),
    ).rejects.toThrow(/did not answer/);
  });

  it("keeps the URL's secret (userinfo, query) out of error messages", async () => {
    const server = createServer((_req, res) => {
      res.statusCode = 500;
      res.end("no");
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as AddressInfo).port;
    const url = `http://user:hunter2@127.0.0.1:${port}/creds?key=s3cret#frag`;
    try {
      const http = await fetchJsonOverHttp(url).catch((e: Error) => e.message);
      expect(http).toBe(`http://127.0.0.1:${port}/creds: HTTP 500`);
      const bad = await createCredentialSource(
        { kind: "url", url },
        { fetchJson: async () => ({ user: "x" }) },
      )
        .get()
        .catch((e: Error) => e.message);
      expect(bad).toMatch(/did not answer/);
      for (const m of [http, bad]) expect(m).not.toMatch(/hunter2|s3cret|user:|frag/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe("README", () => {
  it("carries the configuration table generated from the option table", () => {
    // Biome pads Markdown tables; compare cell contents, not alignment.
    const cells = (text: string) =>
      text
        .split("\n")
        .filter((l) => l.startsWith("|") && !/^\|[\s|:-]+\|$/.test(l))
        .map((l) => l.replace(/\s*\|\s*/g, "|"));
    const readme = cells(readFileSync(new URL("../README.md", import.meta.url), "utf8"));
    for (const row of cells(renderConfigTable())) expect(readme).toContain(row);
  });
});
