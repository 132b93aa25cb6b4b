// coturn (the reference TURN server) on loopback, for the interop suites and for the bench (the
// one place that knows how to start it). Flags verified with coturn 4.6.1 (Debian 12): -n
// ignores /etc/turnserver.conf; --db points at a private sqlite file (the default
// /var/lib/turn/turndb may be unwritable or shared); --allow-loopback-peers because 4.6.1 denies
// 127.x/::1 peers by default; no CLI, TLS or DTLS listeners so nothing but the one UDP+TCP port
// is opened besides relay ports. Ready once it answers a STUN Binding (stun.ts).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ManagedProcess, spawnManaged } from "./process.js";
import { waitForStun } from "./stun.js";

export interface CoturnOptions {
  port: number;
  mode: "rest" | "lt" | "noauth";
  /** Shared secret for mode "rest" (coturn --static-auth-secret). Default "s3cr3t". */
  secret?: string;
  /** "name:password" for mode "lt". Default "alice:alicepw". */
  user?: string;
  realm?: string;
  minPort: number;
  maxPort: number;
  /**
   * "stdout" (default): coturn logs to stdout, kept for `log()`. "off": no log at all (under
   * load coturn logs every session, which would cost it CPU and us memory).
   */
  log?: "stdout" | "off";
  /** Appended as is, e.g. ["-v"] to log every session. */
  extraArgs?: string[];
  /** Bound on waiting for the first Binding answer (default 10 s). */
  readyTimeoutMs?: number;
}

export interface CoturnHandle {
  pid: number;
  port: number;
  /** turnserver's command line (for reports; it holds the shared secret). */
  args: readonly string[];
  process: ManagedProcess;
  /** coturn's log so far (it logs to stdout). */
  log(): string;
  /** SIGTERM, SIGKILL after 3 s; removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

export async function startCoturn(opts: CoturnOptions): Promise<CoturnHandle> {
  const dir = mkdtempSync(join(tmpdir(), "turnpike-coturn-"));
  const args = [
    "-n",
    "--listening-ip=127.0.0.1",
    `--listening-port=${opts.port}`,
    "--relay-ip=127.0.0.1",
    `--min-port=${opts.minPort}`,
    `--max-port=${opts.maxPort}`,
    `--realm=${opts.realm ?? "example.test"}`,
    "--allow-loopback-peers",
    "--no-cli",
    "--no-tls",
    "--no-dtls",
    "--fingerprint",
    ...(opts.log === "off"
      ? ["--no-stdout-log", "--log-file=/dev/null", "--simple-log"]
      : ["--log-file=stdout"]),
    `--pidfile=${join(dir, "turnserver.pid")}`,
    `--db=${join(dir, "turndb")}`,
  ];
  switch (opts.mode) {
    case "rest":
      args.push("--use-auth-secret", `--static-auth-secret=${opts.secret ?? "s3cr3t"}`);
      break;
    case "lt":
      args.push("--lt-cred-mech", `--user=${opts.user ?? "alice:alicepw"}`);
      break;
    case "noauth":
      args.push("--no-auth");
      break;
  }
  args.push(...(opts.extraArgs ?? []));

  const proc = spawnManaged("turnserver", args);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await proc.stop("SIGTERM", 3000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await Promise.race([
      waitForStun({ host: "127.0.0.1", port: opts.port, totalMs: opts.readyTimeoutMs ?? 10_000 }),
      proc.waitExit().then((e) => {
        throw new Error(`turnserver exited early (code ${e.code}, signal ${e.signal})`);
      }),
    ]);
  } catch (e) {
    await stop();
    const tail = `${proc.stdout}\n${proc.stderr}`.trim().split("\n").slice(-15).join("\n");
    throw new Error(`${(e as Error).message}\n--- turnserver output (tail) ---\n${tail}`);
  }
  return { pid: proc.pid, port: opts.port, args, process: proc, log: () => proc.stdout, stop };
}
