// A real PostgreSQL for end-to-end tests (Debian's `postgresql` package, installed by
// scripts/ensure-tools.sh): initdb in a temporary directory, the server listening on 127.0.0.1
// only at a free port, password (SCRAM) authentication over TCP, and the real `psql` as the
// client. initdb and postgres refuse to run as root, so a root test runner starts them as the
// `postgres` user the package creates.
import { type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.js";
import { type ManagedProcess, sleep, spawnManaged } from "./process.js";

export interface PostgresTools {
  readonly initdb: string;
  readonly postgres: string;
  readonly psql: string;
}

/** Debian keeps the server binaries in /usr/lib/postgresql/<major>/bin: the newest major wins. */
export function postgresTools(): PostgresTools | undefined {
  const root = "/usr/lib/postgresql";
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((d) => /^\d+$/.test(d))
    .sort((a, b) => Number(b) - Number(a));
  for (const major of majors) {
    const bin = join(root, major, "bin");
    const tools = {
      initdb: join(bin, "initdb"),
      postgres: join(bin, "postgres"),
      psql: join(bin, "psql"),
    };
    if (Object.values(tools).every((p) => existsSync(p))) return tools;
  }
  return undefined;
}

/**
 * What a suite passes to skipUnlessTools / requireTools: initdb by its full path (Debian does
 * not put the server binaries on PATH), or a placeholder path that names what is missing.
 */
export function postgresProbe(): string {
  return postgresTools()?.initdb ?? "/usr/lib/postgresql/<major>/bin/initdb";
}

export interface PostgresHandle {
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  readonly process: ManagedProcess;
  /** Fast shutdown (SIGINT), then the data directory is removed. Safe to call twice. */
  stop(): Promise<void>;
}

/** uid/gid of the `postgres` user when running as root; undefined otherwise. */
function serverIdentity(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => {
    const r = spawnSync("id", [flag, "postgres"], { encoding: "utf8" });
    return r.status === 0 ? Number(r.stdout.trim()) : Number.NaN;
  };
  const uid = id("-u");
  const gid = id("-g");
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error("running as root and there is no `postgres` user (apt-get install postgresql)");
  }
  return { uid, gid };
}

export async function startPostgres(
  opts: { password?: string; readyTimeoutMs?: number } = {},
): Promise<PostgresHandle> {
  const tools = postgresTools();
  if (tools === undefined)
    throw new Error("PostgreSQL server binaries not found under /usr/lib/postgresql");
  const who = serverIdentity();
  const dir = mkdtempSync(join(tmpdir(), "turnpike-pg-"));
  const data = join(dir, "data");
  const password = opts.password ?? "turnpike-test-pw";
  const pwfile = join(dir, "pw");
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (who !== undefined) {
    chownSync(dir, who.uid, who.gid);
    chownSync(pwfile, who.uid, who.gid);
  }
  chmodSync(dir, 0o700);
  const init: SpawnSyncReturns<string> = spawnSync(
    tools.initdb,
    [
      "-D",
      data,
      "-U",
      "postgres",
      "--pwfile",
      pwfile,
      // Local socket for nobody but the server's user; TCP with the password only.
      "--auth-local=peer",
      "--auth-host=scram-sha-256",
      "-E",
      "UTF8",
      "--no-sync",
    ],
    { encoding: "utf8", timeout: 60_000, ...(who ?? {}) },
  );
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed (${init.status}): ${init.stderr || init.stdout}`);
  }
  const port = await freePort();
  const proc = spawnManaged(
    tools.postgres,
    [
      "-D",
      data,
      "-p",
      String(port),
      "-c",
      "listen_addresses=127.0.0.1",
      "-c",
      `unix_socket_directories=${dir}`,
      // A throwaway database: durability buys nothing here.
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=20",
    ],
    who ?? {},
  );
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await proc.stop("SIGINT", 10_000);
    rmSync(dir, { recursive: true, force: true });
  };
  const handle: PostgresHandle = {
    port,
    user: "postgres",
    password,
    database: "postgres",
    process: proc,
    stop,
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (proc.exited) {
      await stop();
      throw new Error(
        `postgres exited before ready:\n${proc.stderr.split("\n").slice(-15).join("\n")}`,
      );
    }
    const r = await psql({ host: "127.0.0.1", port }, handle, ["-c", "select 1"], 5000).catch(
      (e: Error) => ({ code: -1, stdout: "", stderr: e.message }),
    );
    if (r.code === 0) return handle;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`postgres not ready on 127.0.0.1:${port}: ${r.stderr}`);
    }
    await sleep(100);
  }
}

export interface PsqlResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the real psql against `at` (e.g. a tunnel's relayed address) with the server's
 * credentials: unaligned, tuples only, stop on the first error. Bounded by `timeoutMs`.
 */
export function psql(
  at: { host: string; port: number },
  server: Pick<PostgresHandle, "user" | "password" | "database">,
  args: readonly string[],
  timeoutMs = 60_000,
): Promise<PsqlResult> {
  const tools = postgresTools();
  if (tools === undefined) return Promise.reject(new Error("psql not found"));
  return new Promise((resolve) => {
    const child = spawn(
      tools.psql,
      [
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        at.host,
        "-p",
        String(at.port),
        "-U",
        server.user,
        "-d",
        server.database,
        ...args,
      ],
      {
        env: {
          PATH: process.env.PATH,
          PGPASSWORD: server.password,
          PGCONNECT_TIMEOUT: "10",
          PGSSLMODE: "disable",
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    const timer = setTimeout(() => {
      stderr += `\n(psql killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${err.message}` });
    });
  });
}
