// The admin API against the real turnpike-tunnel process: only the tunnel's owner may use it
// (a unix socket of mode 0600 by default, TCP only with a token), and a target is judged on the
// address the socket layer will dial, whatever its spelling. The attacks come from the
// hardening issue: any local process listing, exposing tcp://127.0.0.1:22 to a peer of its
// choosing and deleting services through a token-less API; `[::ffff:169.254.169.254%lo]` and
// `[fe80::1%lo]` accepted with 201. No relay is needed: the API answers while the tunnel backs
// off, so the relay URI names a closed port.
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, lstatSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@turnpike/test-support/ports";
import {
  type ManagedProcess,
  sleep,
  spawnManaged,
  withTimeout,
} from "@turnpike/test-support/process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  adminRequest,
  cleanEnv,
  httpRequest,
  startTunnel,
  TUNNEL_BIN,
  type TunnelProcess,
  tcpEcho,
} from "./harness.js";

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** turnpike-tunnel exposing one service (`ssh`, the attacker's favourite) through a dead relay. */
async function spawnTunnel(extra: string[], env: Record<string, string> = {}) {
  const closed = await freePort();
  return spawnManaged(
    process.execPath,
    [
      TUNNEL_BIN,
      "--relay",
      `turn:127.0.0.1:${closed}`,
      "--expose",
      "ssh=tcp://127.0.0.1:22",
      "--allow-peer",
      "127.0.0.1",
      ...extra,
    ],
    { env: cleanEnv({ TURNPIKE_TOKEN: "relay-secret", ...env }) },
  );
}

/** Waits (bounded) until `path` is a listening socket, or the process exits. */
async function socketAt(path: string, proc: ManagedProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!existsSync(path) || !lstatSync(path).isSocket()) {
    if (proc.exited) throw new Error(`turnpike-tunnel exited:\n${proc.stderr}`);
    if (Date.now() > deadline) throw new Error(`no socket at ${path}:\n${proc.stderr}`);
    await sleep(50);
  }
}

/** One request over the unix socket; an error is answered as its code. */
function overSocket(
  path: string,
  method: string,
  url: string,
): Promise<{ status: number; body: string } | string> {
  return httpRequest({ socketPath: path }, method, url, {}).catch(
    (err: NodeJS.ErrnoException) => err.code ?? err.message,
  );
}

/** What another local user gets from the socket: each request's status or error code. */
function asAnotherUser(path: string): Promise<string> {
  const script = `
    const http = require("node:http");
    const ask = (method, url, body) => new Promise((done) => {
      const req = http.request({ socketPath: ${JSON.stringify(path)}, method, path: url,
        headers: { "content-type": "application/json" } }, (res) => { res.resume(); done(res.statusCode); });
      req.on("error", (e) => done(e.code));
      req.end(body && JSON.stringify(body));
    });
    (async () => {
      const out = [
        await ask("GET", "/list"),
        await ask("POST", "/expose", { name: "ssh2", target: "tcp://127.0.0.1:22", allowPeers: ["203.0.113.7"] }),
        await ask("DELETE", "/expose/x"),
      ];
      console.log(out.join(","));
    })();`;
  const proc = spawnManaged(process.execPath, ["-e", script], {
    uid: NOBODY,
    gid: NOBODY,
    cwd: "/",
    env: { PATH: process.env.PATH ?? "" },
  });
  return withTimeout(proc.waitExit(), 10_000, "the other user's requests").then(() =>
    proc.stdout.trim(),
  );
}

describe("turnpike-tunnel's admin API: only the tunnel's owner can use it", () => {
  const dirs: string[] = [];
  const procs: ManagedProcess[] = [];
  const scratch = () => {
    const d = mkdtempSync(join(tmpdir(), "tunnel-admin-"));
    dirs.push(d);
    return d;
  };
  const started = async (extra: string[], env?: Record<string, string>) => {
    const p = await spawnTunnel(extra, env);
    procs.push(p);
    return p;
  };

  afterAll(async () => {
    for (const p of procs) await p.stop("SIGKILL", 1000);
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it("refuses to start a TCP admin listener without --admin-token, in one line naming the option", async () => {
    const port = await freePort();
    const proc = await started(["--admin-listen", `127.0.0.1:${port}`]);
    const exit = await withTimeout(proc.waitExit(), 10_000, "turnpike-tunnel to refuse");
    expect(exit.code).toBe(2);
    const lines = proc.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(
      `--admin-listen 127.0.0.1:${port} is TCP, which every local process can reach: set --admin-token (TURNPIKE_ADMIN_TOKEN), or use --admin-listen unix:PATH`,
    );
  });

  it("listens by default on a socket of mode 0600 in a 0700 directory, where `turnpike-tunnel list` finds it", async () => {
    const runtime = scratch();
    const socket = join(runtime, "turnpike-tunnel", "admin.sock");
    const proc = await started([], { XDG_RUNTIME_DIR: runtime });
    await socketAt(socket, proc);
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(join(runtime, "turnpike-tunnel")).mode & 0o777).toBe(0o700);
    const list = await overSocket(socket, "GET", "/list");
    expect(typeof list === "object" && list.status).toBe(200);
    const listed = spawnSync(process.execPath, [TUNNEL_BIN, "list", "--json"], {
      encoding: "utf8",
      timeout: 10_000,
      env: { PATH: process.env.PATH ?? "", XDG_RUNTIME_DIR: runtime },
    });
    expect(listed.status, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { name: string }[]).map((r) => r.name)).toEqual(["ssh"]);
    await proc.stop("SIGTERM", 3000);
    expect(existsSync(socket)).toBe(false);
  });

  it.skipIf(!isRoot)(
    "refuses every other local user: they can neither list, nor expose 127.0.0.1:22, nor delete",
    async () => {
      // A directory others may enter, so what refuses them is the socket's own mode.
      const dir = scratch();
      chmodSync(dir, 0o755);
      const socket = join(dir, "admin.sock");
      const proc = await started(["--admin-listen", `unix:${socket}`]);
      await socketAt(socket, proc);
      expect(await asAnotherUser(socket)).toBe("EACCES,EACCES,EACCES");
      const rows = await overSocket(socket, "GET", "/list");
      if (typeof rows === "string") throw new Error(rows);
      expect((JSON.parse(rows.body) as { name: string }[]).map((r) => r.name)).toEqual(["ssh"]);
    },
  );

  it("takes over the socket a killed tunnel left behind, and refuses one another tunnel serves", async () => {
    const socket = join(scratch(), "admin.sock");
    const first = await started(["--admin-listen", `unix:${socket}`]);
    await socketAt(socket, first);
    const second = await started(["--admin-listen", `unix:${socket}`]);
    expect((await withTimeout(second.waitExit(), 10_000, "the second tunnel")).code).toBe(1);
    expect(second.stderr).toMatch(
      /--admin-listen unix:.*admin\.sock: the admin API could not listen.*in use by another process/,
    );
    await first.stop("SIGKILL", 1000);
    expect(lstatSync(socket).isSocket()).toBe(true);
    const third = await started(["--admin-listen", `unix:${socket}`]);
    const deadline = Date.now() + 10_000;
    let answer = await overSocket(socket, "GET", "/health");
    while (typeof answer === "string" && Date.now() < deadline && !third.exited) {
      await sleep(50);
      answer = await overSocket(socket, "GET", "/health");
    }
    expect(typeof answer === "object" && answer.status, third.stderr).toBe(200);
  });

  it("refuses a socket in a directory other users can write (they could swap the socket)", async () => {
    const dir = scratch();
    chmodSync(dir, 0o777);
    const proc = await started(["--admin-listen", `unix:${join(dir, "admin.sock")}`]);
    expect((await withTimeout(proc.waitExit(), 10_000, "turnpike-tunnel to refuse")).code).toBe(1);
    expect(proc.stderr).toMatch(/is writable by other users \(mode 777\)/);
  });
});

describe("targets the socket layer reads as metadata or link-local addresses", () => {
  let tunnel: TunnelProcess;
  let echo: Awaited<ReturnType<typeof tcpEcho>>;

  beforeAll(async () => {
    echo = await tcpEcho();
    const closed = await freePort();
    tunnel = await startTunnel(
      [
        "--relay",
        `turn:127.0.0.1:${closed}`,
        "--expose",
        `echo=tcp://127.0.0.1:${echo.port}`,
        "--allow-peer",
        "127.0.0.1",
      ],
      { TURNPIKE_TOKEN: "relay-secret" },
    );
    await tunnel.waitFor((rows) => rows.length === 1, 10_000, "the admin API");
  });

  afterAll(async () => {
    await tunnel?.stop();
    await echo?.close();
  });

  it("answers 403 to a zone id, an IPv4-mapped or NAT64 spelling and every numeric form, and exposes nothing", async () => {
    for (const target of [
      // From the issue: accepted with 201 before.
      "tcp://[::ffff:169.254.169.254%lo]:80",
      "tcp://[fe80::1%lo]:80",
      `tcp://[::ffff:127.0.0.1%lo]:${echo.port}`,
      // What getaddrinfo reads as 169.254.169.254, and other IPv6 spellings of it.
      "udp://169.254.43518:53",
      "tcp://2852039166:80",
      "tcp://0xa9.0xfe.0xa9.0xfe:80",
      "tcp://0251.0376.0251.0376:80",
      "tcp://[64:ff9b::a9fe:a9fe]:80",
      "udp://[fd00:ec2::254%eth0]:53",
    ]) {
      const r = await adminRequest(tunnel.adminPort, "POST", "/expose", {
        name: "imds",
        target,
        allowPeers: ["127.0.0.1"],
      });
      expect(r.status, `${target}: ${r.body}`).toBe(403);
      expect(JSON.parse(r.body).error, target).toMatch(/--allow-metadata-targets|zone id/);
    }
    expect((await tunnel.list()).map((r) => r.name)).toEqual(["echo"]);
    // The same reading accepts a private target in short form, dialled as 127.0.0.1.
    const short = await adminRequest(tunnel.adminPort, "POST", "/expose", {
      name: "short",
      target: `tcp://127.1:${echo.port}`,
      allowPeers: ["127.0.0.1"],
    });
    expect(short.status, short.body).toBe(201);
    const { id } = JSON.parse(short.body) as { id: string };
    expect((await adminRequest(tunnel.adminPort, "DELETE", `/expose/${id}`)).status).toBe(204);
  });

  it("refuses such a target in --expose at start-up, naming the service", async () => {
    const closed = await freePort();
    const proc = spawnManaged(
      process.execPath,
      [
        TUNNEL_BIN,
        "--relay",
        `turn:127.0.0.1:${closed}`,
        "--expose",
        "imds=tcp://[::ffff:169.254.169.254%lo]:80",
        "--admin-listen",
        "off",
      ],
      { env: cleanEnv({ TURNPIKE_TOKEN: "relay-secret" }) },
    );
    const exit = await withTimeout(proc.waitExit(), 10_000, "turnpike-tunnel to refuse");
    expect(exit.code).toBe(2);
    expect(proc.stderr).toMatch(/--expose imds: target ::ffff:169\.254\.169\.254%lo is link-local/);
  });
});
