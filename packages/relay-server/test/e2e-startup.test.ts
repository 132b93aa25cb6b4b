// End to end: what a real turnpike-relay process checks against the host when it starts, and
// says when the host later refuses it. A relay started on an address another relay serves stops
// with one line naming --listen (the SO_REUSEPORT group would otherwise take it in and split the
// clients between the two), in both worker modes; a --relay-ip that is not this host's stops it
// too (every Allocate would get 508); relay ports the kernel may hand out as ephemeral ports are
// a warning naming the sysctl; a relay socket that cannot be bound later is a WARN, once. A TLS
// pair that does not load (not PEM, a key of another certificate, a directory) and a health port
// another program holds stop it with one line naming the option too, before any worker starts.
import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintPinnedCredentials } from "@turnpike/relay-core";
import {
  parseLocalPortRange,
  parseReservedPorts,
  unreservedEphemeral,
} from "@turnpike/runtime-kit";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { type ManagedProcess, sleep, spawnManaged } from "@turnpike/test-support/process";
import { stunBinding } from "@turnpike/test-support/stun";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTools } from "@turnpike/test-support/tools";
import { TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, TURNPIKE_BIN, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-startup-token";

/** Starts turnpike-relay with `args` and waits (bounded) for it to exit. */
async function runToExit(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const udpIo = process.env.TEST_UDP_IO;
  const proc: ManagedProcess = spawnManaged(
    process.execPath,
    [TURNPIKE_BIN, ...args, ...(udpIo !== undefined ? ["--udp-io", udpIo] : [])],
    { env: { PATH: process.env.PATH, TURNPIKE_TOKEN: TOKEN } },
  );
  const exited = await Promise.race([proc.waitExit(), sleep(15_000).then(() => undefined)]);
  if (exited === undefined) {
    await proc.stop("SIGKILL");
    throw new Error(`turnpike-relay ${args.join(" ")} did not stop:\n${proc.stderr}`);
  }
  return { code: exited.code, stderr: proc.stderr };
}

/** stderr without the log lines (`<ISO time> LEVEL ...`): what the CLI itself printed. */
function plainLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l !== "" && !/^\d{4}-\d\d-\d\dT\S+ [A-Z]+ /.test(l));
}

describe("a second relay on the address a running one serves", () => {
  let range: PortRange;
  let first: TurnpikeHandle | undefined;

  beforeAll(async () => {
    range = reservePortRange(20);
    // The first relay in an SO_REUSEPORT group of two workers (--workers auto on three cores).
    first = await startTurnpike({
      minPort: range.min,
      maxPort: range.min + 9,
      token: TOKEN,
      extraArgs: ["--workers", "2"],
    });
  });
  afterAll(async () => {
    await first?.stop("SIGINT", 5000);
    range?.release();
  });

  for (const workers of ["1", "2"]) {
    it(`stops with one line naming --listen and exit 2 (--workers ${workers}), and the first relay keeps serving`, async () => {
      const r = await runToExit([
        "--listen",
        `127.0.0.1:${first!.port}`,
        "--health-listen",
        `127.0.0.1:${await freePort()}`,
        "--min-port",
        String(range.min + 10),
        "--max-port",
        String(range.max),
        "--workers",
        workers,
      ]);
      expect(r.code, r.stderr).toBe(2);
      expect(plainLines(r.stderr)).toEqual([
        `turnpike-relay: --listen 127.0.0.1:${first!.port}: address already in use (another relay or program is listening there)`,
      ]);
      for (const transport of ["udp", "tcp"] as const) {
        const answer = await stunBinding({ port: first!.port, transport });
        expect(answer.software, transport).toMatch(/^turnpike\//);
      }
    });
  }

  it("names --listen too when another program holds only the UDP port", async () => {
    const socket = createSocket("udp4");
    await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
    try {
      const port = socket.address().port;
      const r = await runToExit(["--listen", `127.0.0.1:${port}`, "--health-listen", "off"]);
      expect(r.code, r.stderr).toBe(2);
      expect(plainLines(r.stderr)).toEqual([
        `turnpike-relay: --listen 127.0.0.1:${port}: address already in use (another relay or program is listening there)`,
      ]);
    } finally {
      socket.close();
    }
  });
});

describe("TLS files and a health port the relay cannot use", () => {
  let dir: string;
  let a: { cert: string; key: string };
  let b: { cert: string; key: string };

  beforeAll(() => {
    requireTools("openssl");
    dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-startup-"));
    const sub = (name: string) => mkdtempSync(join(dir, name));
    a = selfSignedCert(sub("a"));
    b = selfSignedCert(sub("b"));
    writeFileSync(join(dir, "garbage.pem"), "not a certificate\n");
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const tls = (cert: string, key: string) => [
    "--listen",
    "127.0.0.1:0",
    "--tls-listen",
    "127.0.0.1:0",
    "--tls-cert",
    cert,
    "--tls-key",
    key,
    "--health-listen",
    "off",
  ];

  for (const workers of ["1", "2"]) {
    it(`stops with one line naming --tls-cert and the reason, exit 2, for garbage, a mismatched key and a directory (--workers ${workers})`, async () => {
      const cases: [string[], string][] = [
        [
          tls(join(dir, "garbage.pem"), a.key),
          "turnpike-relay: --tls-cert and --tls-key are not a usable pair: no start line",
        ],
        [
          tls(a.cert, b.key),
          "turnpike-relay: --tls-cert and --tls-key are not a usable pair: key values mismatch",
        ],
        [
          tls(dir, a.key),
          `turnpike-relay: --tls-cert ${JSON.stringify(dir)} is not readable (EISDIR)`,
        ],
      ];
      for (const [args, line] of cases) {
        const r = await runToExit([...args, "--workers", workers]);
        expect(r.code, r.stderr).toBe(2);
        // One line, and no worker started to fail in its turn.
        expect(
          r.stderr
            .trim()
            .split("\n")
            .filter((l) => !/ WARN /.test(l)),
        ).toEqual([line]);
      }
    });

    it(`stops with one line naming --health-listen when another program holds it (--workers ${workers})`, async () => {
      const holder = net.createServer();
      await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
      try {
        const at = `127.0.0.1:${(holder.address() as net.AddressInfo).port}`;
        const r = await runToExit([
          "--listen",
          "127.0.0.1:0",
          "--health-listen",
          at,
          "--workers",
          workers,
        ]);
        expect(r.code, r.stderr).toBe(2);
        expect(plainLines(r.stderr)).toEqual([
          `turnpike-relay: --health-listen ${at}: address already in use (another relay or program is listening there)`,
        ]);
        expect(r.stderr).not.toMatch(/EADDRINUSE|worker/);
      } finally {
        holder.close();
      }
    });
  }
});

describe("relay addresses and ports the host cannot give", () => {
  it("stops at start with one line naming --relay-ip when it is not an address of this host", async () => {
    const r = await runToExit([
      "--listen",
      "127.0.0.1:0",
      "--relay-ip",
      "192.0.2.99",
      "--health-listen",
      "off",
    ]);
    expect(r.code, r.stderr).toBe(2);
    expect(plainLines(r.stderr)).toEqual([
      "turnpike-relay: --relay-ip 192.0.2.99 is not an address of this host (EADDRNOTAVAIL): relay sockets bind there; give an address of one of its interfaces, and --public-ip4 for the address clients reach behind 1:1 NAT",
    ]);
  });

  it("warns at start about relay ports inside the kernel's unreserved ephemeral range, naming the sysctl", async () => {
    const read = (name: string) => readFileSync(`/proc/sys/net/ipv4/${name}`, "utf8");
    const local = parseLocalPortRange(read("ip_local_port_range"));
    const reserved = parseReservedPorts(read("ip_local_reserved_ports"));
    const free =
      local && unreservedEphemeral(local, local, reserved).find((r) => r.max - r.min > 20);
    if (free === undefined) return; // every ephemeral port reserved here: nothing to warn about
    const relay = await startTurnpike({
      minPort: free.min + 10,
      maxPort: free.min + 19,
      token: TOKEN,
    });
    try {
      const warning = relay.stderr
        .split("\n")
        .find((l) => l.includes("relay ports overlap the kernel's ephemeral ports"));
      expect(warning, relay.stderr).toMatch(/ WARN /);
      expect(warning).toContain(`ports=${free.min + 10}-${free.min + 19}`);
      expect(warning).toContain("sysctl -w net.ipv4.ip_local_reserved_ports=");
    } finally {
      await relay.stop("SIGINT", 5000);
    }
  });
});

describe("a relay socket the host refuses later", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let holder: Socket | undefined;
  let pinned: number;

  beforeAll(async () => {
    range = reservePortRange(20);
    pinned = range.max;
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.min + 9,
      token: TOKEN,
      extraArgs: ["--pinned-ports", `${pinned}-${pinned}`],
    });
    // Another program holds the pinned port.
    holder = createSocket("udp4");
    await new Promise<void>((resolve) => holder!.bind(pinned, "127.0.0.1", resolve));
  });
  afterAll(async () => {
    holder?.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("answers 508 and says so at WARN once per reason, however many Allocates it costs", async () => {
    const creds = mintPinnedCredentials(TOKEN, Math.floor(Date.now() / 1000), 600, "acme", pinned);
    for (let i = 0; i < 4; i++) {
      const c = await TurnClientLite.open({
        port: relay!.port,
        username: creds.username,
        password: creds.password,
      });
      try {
        expect((await c.allocate()).code).toBe(508);
      } finally {
        c.close();
      }
    }
    await sleep(200);
    const lines = relay!.stderr.split("\n").filter((l) => l.includes("relay socket bind failed"));
    const workers = Number(process.env.TEST_WORKERS ?? "1");
    // One per engine at most: each worker keeps its own window.
    expect(lines.length, relay!.stderr).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(workers);
    expect(lines[0]).toMatch(/ WARN relay socket bind failed: Allocates get 508 while this lasts /);
    expect(lines[0]).toContain(`port=${pinned}`);
    expect(lines[0]).toContain("code=EADDRINUSE");
  });
});
