// Real processes for the tunnel suites: turnpike-relay (or coturn) on chosen loopback
// addresses, the turnpike-tunnel CLI, and echo servers standing in for private targets, set up
// and torn down for a describe block by useTunnelFixture(). Loopback only.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { fileURLToPath } from "node:url";
import { type CoturnHandle, startCoturn } from "@turnpike/test-support/coturn";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { type ManagedProcess, sleep, spawnManaged } from "@turnpike/test-support/process";
import { requireTools } from "@turnpike/test-support/tools";
import { httpGet } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll } from "vitest";

export const RELAY_BIN = fileURLToPath(
  new URL("../../relay-server/bin/turnpike-relay.js", import.meta.url),
);
export const TUNNEL_BIN = fileURLToPath(new URL("../bin/turnpike-tunnel.js", import.meta.url));

/** The test runner's environment without TURNPIKE_*, OTEL_* and OTLP_GRPC_ENDPOINT, plus `extra`. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("TURNPIKE_") && !k.startsWith("OTEL_") && k !== "OTLP_GRPC_ENDPOINT")
      env[k] = v;
  }
  return Object.assign(env, extra);
}

export interface RelayProcess {
  readonly ip: string;
  readonly port: number;
  /** The health listener (GET /readyz, and /v1/allocations with TURNPIKE_ADMIN_TOKEN). */
  readonly healthPort: number;
  readonly proc: ManagedProcess;
  /** SIGKILL (kill -9): the relay gets no chance to close anything. */
  stop(): Promise<void>;
}

/** turnpike-relay listening on ip:port (UDP+TCP), ready once GET /readyz is 200. */
export async function startRelay(opts: {
  ip: string;
  port: number;
  minPort: number;
  maxPort: number;
  token: string;
  /** More turnpike-relay flags, e.g. ["--tls-listen", "127.0.0.1:5349", ...]. */
  extraArgs?: string[];
  /** More environment, e.g. TURNPIKE_ADMIN_TOKEN. */
  env?: Record<string, string>;
  /** The health listener's port (default: a free one). */
  healthPort?: number;
}): Promise<RelayProcess> {
  const health = opts.healthPort ?? (await freePort());
  const args = [
    RELAY_BIN,
    "--listen",
    `${opts.ip}:${opts.port}`,
    "--min-port",
    String(opts.minPort),
    "--max-port",
    String(opts.maxPort),
    "--allow-loopback-peers",
    "--health-listen",
    `127.0.0.1:${health}`,
    "--log-level",
    "warn",
    ...(opts.extraArgs ?? []),
  ];
  const proc = spawnManaged(process.execPath, args, {
    env: cleanEnv({ ...opts.env, TURNPIKE_TOKEN: opts.token }),
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exited) throw new Error(`turnpike-relay exited before ready:\n${proc.stderr}`);
    const r = await httpGet(health, "/readyz", 500).catch(() => undefined);
    if (r?.status === 200) break;
    if (Date.now() > deadline) {
      await proc.stop("SIGKILL");
      throw new Error(`turnpike-relay not ready:\n${proc.stderr}`);
    }
    await sleep(100);
  }
  return {
    ip: opts.ip,
    port: opts.port,
    healthPort: health,
    proc,
    stop: async () => void (await proc.stop("SIGKILL", 1000)),
  };
}

export interface ListRow {
  id: string;
  name: string;
  protocol: string;
  relay: string;
  relayedAddress: string | null;
  pinnedPort: number | null;
  state: string;
  openConnections: number;
  bytesIn: number;
  bytesOut: number;
  reconnects: number;
  lastError: string | null;
}

/** The admin token of the tunnels this harness starts: a TCP admin API needs one. */
export const ADMIN_TOKEN = "tunnel-harness-admin-token";

export interface TunnelProcess {
  readonly adminPort: number;
  readonly adminToken: string;
  readonly proc: ManagedProcess;
  list(): Promise<ListRow[]>;
  /** Polls /list until `pred` holds (bounded). */
  waitFor(
    pred: (rows: ListRow[]) => boolean,
    timeoutMs?: number,
    what?: string,
  ): Promise<ListRow[]>;
  stop(): Promise<void>;
}

/** The CLI with its admin API on a free loopback port, behind `adminToken`. */
export async function startTunnel(
  args: string[],
  env: Record<string, string>,
  adminToken = ADMIN_TOKEN,
): Promise<TunnelProcess> {
  const adminPort = await freePort();
  const all = [
    TUNNEL_BIN,
    "--admin-listen",
    `127.0.0.1:${adminPort}`,
    "--log-level",
    "info",
    ...args,
  ];
  const proc = spawnManaged(process.execPath, all, {
    env: cleanEnv({ TURNPIKE_ADMIN_TOKEN: adminToken, ...env }),
  });
  const list = async (): Promise<ListRow[]> => {
    const r = await adminRequest(adminPort, "GET", "/list", undefined, adminToken);
    if (r.status !== 200) throw new Error(`/list ${r.status} ${r.body}`);
    return JSON.parse(r.body) as ListRow[];
  };
  const waitFor = async (
    pred: (rows: ListRow[]) => boolean,
    timeoutMs = 15_000,
    what = "condition",
  ) => {
    const deadline = Date.now() + timeoutMs;
    let last: ListRow[] = [];
    for (;;) {
      if (proc.exited) throw new Error(`turnpike-tunnel exited:\n${proc.stderr}`);
      try {
        last = await list();
        if (pred(last)) return last;
      } catch {
        // admin API not up yet
      }
      if (Date.now() > deadline) {
        throw new Error(
          `timed out waiting for ${what}; /list: ${JSON.stringify(last)}\n--- tunnel log ---\n${proc.stderr.split("\n").slice(-25).join("\n")}`,
        );
      }
      await sleep(50);
    }
  };
  return {
    adminPort,
    adminToken,
    proc,
    list,
    waitFor,
    stop: async () => void (await proc.stop("SIGTERM", 3000)),
  };
}

/** One HTTP request to the admin API, JSON body, bearer token (null: none). */
export function adminRequest(
  port: number,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = ADMIN_TOKEN,
): Promise<{ status: number; body: string }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return httpRequest(
    port,
    method,
    path,
    headers,
    body === undefined ? undefined : JSON.stringify(body),
  );
}

/**
 * One HTTP request to 127.0.0.1:port, or over a unix socket, with exactly these headers (Node
 * adds Host unless given).
 */
export function httpRequest(
  to: number | { readonly socketPath: string },
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; body: string }> {
  const where = typeof to === "number" ? { host: "127.0.0.1", port: to } : to;
  return new Promise((resolve, reject) => {
    const req = request({ ...where, method, path, headers, timeout: 2000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        text += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on("error", reject);
    req.end(body);
  });
}

export function parseAddress(text: string): { ip: string; port: number } {
  const i = text.lastIndexOf(":");
  return { ip: text.slice(0, i).replace(/^\[|\]$/g, ""), port: Number(text.slice(i + 1)) };
}

/** A UDP echo server: the private target. */
export async function udpEcho(): Promise<{ port: number; close(): void }> {
  const s = createSocket("udp4");
  s.on("message", (m, r) => s.send(m, r.port, r.address));
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  return { port: s.address().port, close: () => s.close() };
}

/** A TCP echo server: the private target. */
export async function tcpEcho(): Promise<{ port: number; server: Server; close(): Promise<void> }> {
  const server = createServer((c) => {
    c.on("error", () => {});
    c.pipe(c);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    port,
    server,
    close: () =>
      new Promise((r) => {
        server.close(() => r());
      }),
  };
}

/** A "platform" UDP socket bound on `ip`. */
export async function udpPeer(ip: string): Promise<DgramSocket> {
  const s = createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, ip, () => r()));
  return s;
}

/**
 * Sends `count` numbered datagrams to `to` in batches and collects the echoes (each must come
 * back byte for byte); returns how many distinct ones came back.
 */
export async function echoUdp(
  sock: DgramSocket,
  to: { ip: string; port: number },
  count: number,
  opts: { batch?: number; size?: number; waitMs?: number } = {},
): Promise<number> {
  const batch = opts.batch ?? 50;
  const size = opts.size ?? 200;
  const got = new Set<number>();
  let corrupt = 0;
  const onMessage = (m: Buffer) => {
    const n = m.readUInt32BE(0);
    if (m.length !== size || !m.equals(payload(n, size))) corrupt++;
    else got.add(n);
  };
  sock.on("message", onMessage);
  try {
    for (let start = 0; start < count; start += batch) {
      const end = Math.min(count, start + batch);
      for (let n = start; n < end; n++) sock.send(payload(n, size), to.port, to.ip);
      const deadline = Date.now() + (opts.waitMs ?? 2000);
      while (Date.now() < deadline) {
        let done = true;
        for (let n = start; n < end; n++) if (!got.has(n)) done = false;
        if (done) break;
        await sleep(5);
      }
    }
  } finally {
    sock.off("message", onMessage);
  }
  if (corrupt > 0) throw new Error(`${corrupt} echoes did not match what was sent`);
  return got.size;
}

function payload(n: number, size: number): Buffer {
  const b = Buffer.alloc(size, n & 0xff);
  b.writeUInt32BE(n, 0);
  return b;
}

export function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/**
 * A plain TCP "platform" client: connects to `to`, sends `bytes`, reads the same number back
 * (the target echoes), returns what came back. Bounded by timeoutMs.
 */
export async function tcpRoundTrip(
  to: { ip: string; port: number },
  bytes: Buffer,
  timeoutMs = 60_000,
  /** Keep at most this many bytes un-echoed in flight (default: write everything at once). */
  window = Number.POSITIVE_INFINITY,
): Promise<Buffer> {
  const { connect } = await import("node:net");
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const sock = connect({ host: to.ip, port: to.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`TCP round trip timed out after ${got} of ${bytes.length} bytes`));
    }, timeoutMs);
    let sent = 0;
    const pump = () => {
      const until = Math.min(bytes.length, got + window);
      if (until > sent) {
        sock.write(bytes.subarray(sent, until));
        sent = until;
      }
    };
    sock.on("connect", pump);
    sock.on("data", (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      pump();
      if (got >= bytes.length) {
        clearTimeout(timer);
        sock.end();
        resolve(Buffer.concat(chunks));
      }
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on("close", () => {
      clearTimeout(timer);
      if (got < bytes.length)
        reject(new Error(`connection closed after ${got} of ${bytes.length} bytes`));
    });
  });
}

/** Connects to `to` and resolves with how the connection ended (for refused targets). */
export async function tcpConnectOutcome(
  to: { ip: string; port: number },
  timeoutMs = 10_000,
): Promise<"closed" | "reset" | "timeout" | "refused"> {
  const { connect } = await import("node:net");
  return new Promise((resolve) => {
    const sock = connect({ host: to.ip, port: to.port });
    const timer = setTimeout(() => {
      sock.destroy();
      resolve("timeout");
    }, timeoutMs);
    let outcome: "closed" | "reset" | "refused" = "closed";
    sock.on("error", (err: NodeJS.ErrnoException) => {
      outcome = err.code === "ECONNREFUSED" ? "refused" : "reset";
    });
    sock.on("connect", () => sock.write("hello"));
    sock.on("data", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(outcome);
    });
  });
}

/** How many log lines of `proc` (stderr) contain `text`. */
export function logCount(proc: ManagedProcess, text: string): number {
  return proc.stderr.split("\n").filter((l) => l.includes(text)).length;
}

/** Polls until `pred` holds (bounded); throws with `what` otherwise. */
export async function waitUntil(
  pred: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  /** Appended to the error, e.g. the tail of a process log. */
  detail?: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${detail ? `\n${detail()}` : ""}`);
    await sleep(50);
  }
}

/** The last `n` lines of a process's stderr. */
export function logTail(proc: ManagedProcess, n = 30): string {
  return `--- log ---\n${proc.stderr.split("\n").slice(-n).join("\n")}`;
}

/** --expose flags for `services` (name -> target URL), loopback peers allowed. */
export function serviceArgs(services: Record<string, string>): string[] {
  const expose = Object.entries(services).flatMap(([name, target]) => [
    "--expose",
    `${name}=${target}`,
  ]);
  return [...expose, "--allow-peer", "127.0.0.1"];
}

/** Flags exposing `services` (name -> target URL) through `relay`, to loopback peers. */
export function exposeArgs(relay: string, services: Record<string, string>): string[] {
  return ["--relay", relay, ...serviceArgs(services)];
}

/** Service `u` (a UDP echo) and `t` (a TCP echo): the tunnel most suites run. */
export function echoServices(udpPort: number, tcpPort: number): Record<string, string> {
  return { u: `udp://127.0.0.1:${udpPort}`, t: `tcp://127.0.0.1:${tcpPort}` };
}

/** The two echo services through `relay`, loopback peers allowed; suites append their flags. */
export function exposeEchoArgs(relay: string, udpPort: number, tcpPort: number): string[] {
  return exposeArgs(relay, echoServices(udpPort, tcpPort));
}

/** `n` tunnels listed, every one of them ready. */
export function allReady(rows: readonly ListRow[], n: number): boolean {
  return rows.length === n && rows.every((r) => r.state === "ready");
}

/**
 * Pinned credentials as the platform mints them: the real `turnpike-relay credentials --port`,
 * the tunnel key (TURNPIKE_KEY) it prints.
 */
export function mintTunnelKey(token: string, user: string, port: number): string {
  const r = spawnSync(
    process.execPath,
    [RELAY_BIN, "credentials", "--user", user, "--port", String(port), "--ttl", "3600"],
    { env: { PATH: process.env.PATH, TURNPIKE_TOKEN: token }, encoding: "utf8", timeout: 20_000 },
  );
  if (r.status !== 0) throw new Error(`credentials failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { key: string }).key;
}

export type UdpEcho = Awaited<ReturnType<typeof udpEcho>>;
export type TcpEcho = Awaited<ReturnType<typeof tcpEcho>>;

export interface TunnelFixtureOptions {
  /** The relay's shared secret (TURNPIKE_TOKEN, or coturn's --static-auth-secret). */
  readonly token: string;
  /** turnpike-relay (default), or coturn in REST secret mode (needs `turnserver`). */
  readonly relay?: "turnpike" | "coturn";
  /** One turnpike-relay per address, all on one port number (default ["127.0.0.1"]). */
  readonly relayIps?: readonly string[];
  /** Relay ports to reserve, split evenly over the relays (default 100). */
  readonly relayPorts?: number;
  /** The last this many reserved ports are --pinned-ports (one relay only). */
  readonly pinnedPorts?: number;
  /** More turnpike-relay flags and environment (every start). */
  readonly relayArgs?: () => string[];
  readonly relayEnv?: Record<string, string>;
  /** Echo servers to start as private targets (default both). */
  readonly echo?: readonly ("udp" | "tcp")[];
  /**
   * The tunnel's flags (default: `u` and `t`, the two echo services, through the first relay,
   * loopback peers allowed, plus `tunnelArgs`); false: the suite starts its own tunnels.
   */
  readonly tunnel?: false | ((f: TunnelFixture) => string[]);
  /** Appended to the default tunnel flags (a function: read when the tunnel starts). */
  readonly tunnelArgs?: readonly string[] | (() => readonly string[]);
  /** The tunnel's environment (default TURNPIKE_TOKEN = token). */
  readonly tunnelEnv?: () => Record<string, string>;
  readonly adminToken?: string;
  /** Tunnels that must be ready before the tests run (default 2; 0 = no wait). */
  readonly ready?: number;
  readonly readyTimeoutMs?: number;
}

export interface TunnelFixture {
  readonly range: PortRange;
  /** Relay ports only pinned credentials get (with `pinnedPorts`). */
  readonly pinned: { readonly min: number; readonly max: number };
  /** The port every relay listens on (UDP and TCP). */
  readonly relayPort: number;
  /** turn:<first relay>:<port> */
  readonly relayUri: string;
  /** The first turnpike-relay. */
  readonly relay: RelayProcess;
  readonly relays: readonly RelayProcess[];
  readonly coturn: CoturnHandle;
  readonly udp: UdpEcho;
  readonly tcp: TcpEcho;
  readonly tunnel: TunnelProcess;
  /** kill -9 turnpike-relay `i` (default the first). */
  stopRelay(i?: number): Promise<void>;
  /** Start turnpike-relay `i` again: same address, ports, health port and flags. */
  startRelay(i?: number): Promise<void>;
}

/**
 * The relay + echo targets + tunnel most tunnel suites run, started in a beforeAll and stopped
 * (whatever happened) in an afterAll of the calling describe block. Register hooks the fixture
 * depends on (a certificate, a credentials server) before calling it: vitest runs beforeAll
 * hooks in order.
 */
export function useTunnelFixture(o: TunnelFixtureOptions): TunnelFixture {
  const ips = o.relayIps ?? ["127.0.0.1"];
  let range: PortRange | undefined;
  let relayPort: number | undefined;
  const relays: (RelayProcess | undefined)[] = [];
  const healthPorts: number[] = [];
  let coturn: CoturnHandle | undefined;
  let udp: UdpEcho | undefined;
  let tcp: TcpEcho | undefined;
  let tunnel: TunnelProcess | undefined;
  const set = <T>(value: T | undefined, what: string): T => {
    if (value === undefined) throw new Error(`tunnel fixture: no ${what} (not started yet?)`);
    return value;
  };
  const pinned = () => {
    const r = set(range, "port range");
    return { min: r.max + 1 - (o.pinnedPorts ?? 0), max: r.max };
  };
  const startOne = async (i: number) => {
    const r = set(range, "port range");
    const ordinary = r.max - r.min + 1 - (o.pinnedPorts ?? 0);
    const share = Math.floor(ordinary / ips.length);
    const p = pinned();
    relays[i] = await startRelay({
      ip: ips[i]!,
      port: set(relayPort, "relay port"),
      minPort: r.min + i * share,
      maxPort: r.min + (i + 1) * share - 1,
      token: o.token,
      healthPort: healthPorts[i]!,
      ...(o.relayEnv !== undefined ? { env: o.relayEnv } : {}),
      extraArgs: [
        ...(o.pinnedPorts ? ["--pinned-ports", `${p.min}-${p.max}`] : []),
        ...(o.relayArgs?.() ?? []),
      ],
    });
  };
  const f: TunnelFixture = {
    get range() {
      return set(range, "port range");
    },
    get pinned() {
      return pinned();
    },
    get relayPort() {
      return set(relayPort, "relay port");
    },
    get relayUri() {
      return `turn:${ips[0]}:${set(relayPort, "relay port")}`;
    },
    get relay() {
      return set(relays[0], "turnpike-relay");
    },
    get relays() {
      return relays.map((r) => set(r, "turnpike-relay"));
    },
    get coturn() {
      return set(coturn, "coturn");
    },
    get udp() {
      return set(udp, "UDP echo");
    },
    get tcp() {
      return set(tcp, "TCP echo");
    },
    get tunnel() {
      return set(tunnel, "tunnel");
    },
    async stopRelay(i = 0) {
      await relays[i]?.stop();
    },
    startRelay: (i = 0) => startOne(i),
  };

  beforeAll(async () => {
    if (o.relay === "coturn") requireTools("turnserver");
    range = reservePortRange(o.relayPorts ?? 100);
    relayPort = await freePort();
    const echo = o.echo ?? ["udp", "tcp"];
    if (echo.includes("udp")) udp = await udpEcho();
    if (echo.includes("tcp")) tcp = await tcpEcho();
    if (o.relay === "coturn") {
      coturn = await startCoturn({
        port: relayPort,
        mode: "rest",
        secret: o.token,
        minPort: range.min,
        maxPort: range.max,
      });
    } else {
      for (let i = 0; i < ips.length; i++) {
        healthPorts[i] = await freePort();
        await startOne(i);
      }
    }
    if (o.tunnel === false) return;
    const args = o.tunnel?.(f) ?? [
      ...exposeEchoArgs(f.relayUri, f.udp.port, f.tcp.port),
      ...(typeof o.tunnelArgs === "function" ? o.tunnelArgs() : (o.tunnelArgs ?? [])),
    ];
    tunnel = await startTunnel(args, o.tunnelEnv?.() ?? { TURNPIKE_TOKEN: o.token }, o.adminToken);
    const n = o.ready ?? 2;
    if (n > 0) {
      await tunnel.waitFor(
        (rows) => rows.filter((r) => r.state === "ready").length === n,
        o.readyTimeoutMs ?? (o.relay === "coturn" ? 20_000 : 15_000),
        `${n} ready tunnel(s)`,
      );
    }
  });

  afterAll(async () => {
    await tunnel?.stop();
    for (const r of relays) await r?.stop();
    await coturn?.stop();
    udp?.close();
    await tcp?.close();
    range?.release();
  });

  return f;
}
