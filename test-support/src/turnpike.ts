// Our own relay as a real process, started exactly as an operator would: the committed bin
// launcher (which loads packages/relay-server/dist/cli.js, so run `pnpm exec tsc -b` first), the
// token in TURNPIKE_TOKEN, readiness from GET /readyz on the health listener.
import { existsSync, readFileSync } from "node:fs";
import { get } from "node:http";
import { fileURLToPath } from "node:url";
import { freePort } from "./ports.js";
import {
  type ExitInfo,
  type ManagedProcess,
  sleep,
  spawnManaged,
  spawnNamespace,
} from "./process.js";

export const TURNPIKE_BIN = fileURLToPath(
  new URL("../../packages/relay-server/bin/turnpike-relay.js", import.meta.url),
);
const TURNPIKE_CLI = fileURLToPath(
  new URL("../../packages/relay-server/dist/cli.js", import.meta.url),
);

/**
 * The node flags a launcher script (bin/*.js) asks for on its `#!/usr/bin/env -S node FLAGS`
 * line (the relay's and the tunnel's young generation and compiler hold), which an executable
 * bin, npm's and pnpm's bin links and the systemd unit honour and the container's ENTRYPOINT
 * repeats; none where it has no such line. A test or the bench that starts `node BIN` itself
 * passes them to run what an operator runs.
 */
export function launcherNodeFlags(bin: string = TURNPIKE_BIN): string[] {
  const first = readFileSync(bin, "utf8").split("\n", 1)[0] ?? "";
  const m = /^#!\s*\/usr\/bin\/env\s+-S\s+node\s+(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/) : [];
}

/** True once the relay has been built (the bin launcher needs dist/cli.js). */
export const turnpikeBuilt = (): boolean => existsSync(TURNPIKE_CLI);

export interface TurnpikeOptions {
  /** UDP+TCP listening port on 127.0.0.1 (default: a free one). */
  port?: number;
  minPort: number;
  maxPort: number;
  /**
   * Shared secret, passed as TURNPIKE_TOKEN (never on the command line); undefined: none (the
   * secrets come from elsewhere, e.g. --token-file in extraArgs).
   */
  token: string | undefined;
  /** Health listener port on 127.0.0.1 (default: a free one). */
  healthPort?: number;
  /** Default "warn"; null: no --log-level flag (the level comes from a config file or env). */
  logLevel?: "error" | "warn" | "info" | "debug" | null;
  /** Default true: tests relay to peers on loopback. */
  allowLoopbackPeers?: boolean;
  /**
   * --legacy-channel-numbers: ChannelBind accepts RFC 5766's 0x5000-0x7FFF too. Suites that
   * drive coturn's turnutils_uclient need it (it binds channel numbers above 0x4FFF).
   */
  legacyChannelNumbers?: boolean;
  extraArgs?: string[];
  /** Merged over process.env (TURNPIKE_* variables of the test runner are removed first). */
  env?: Record<string, string>;
  /** Bound on waiting for /readyz == 200 (default 15 s). */
  readyTimeoutMs?: number;
  /** Another launcher script (default: the repo's bin/turnpike-relay.js, which needs dist/). */
  bin?: string;
  /** node's own flags, before the launcher (e.g. V8's --trace-opt). */
  nodeFlags?: string[];
}

export interface TurnpikeHandle {
  pid: number;
  port: number;
  healthPort: number;
  args: string[];
  process: ManagedProcess;
  readonly stdout: string;
  readonly stderr: string;
  /** Sends `signal` (default SIGTERM; SIGTERM drains) and SIGKILLs after `graceMs` (default 10 s). */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitInfo>;
  waitExit(): Promise<ExitInfo>;
}

/** GET http://127.0.0.1:port/path -> status code and body (bounded by timeoutMs). */
export function httpGet(
  port: number,
  path: string,
  timeoutMs = 1000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: "127.0.0.1", port, path, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on("error", reject);
  });
}

/** Starts of a relay whose free port was taken before it bound it, tried again. */
const PORT_RACE_ATTEMPTS = 3;

export async function startTurnpike(opts: TurnpikeOptions): Promise<TurnpikeHandle> {
  if (opts.bin === undefined && !turnpikeBuilt()) {
    throw new Error(`${TURNPIKE_CLI} is missing: build first with \`pnpm exec tsc -b\``);
  }
  // freePort() finds a port free now; on a shared machine another program (an outgoing
  // connection's ephemeral port) can take it before the relay binds it, and the relay then
  // refuses to start, as it must. Only a port chosen here is chosen again: a port the caller
  // named is its own to keep free.
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const healthPort = opts.healthPort ?? (await freePort());
    try {
      return await startOnPorts(opts, port, healthPort);
    } catch (err) {
      const taken = (err as Error).message.match(/127\.0\.0\.1:(\d+): address already in use/)?.[1];
      const ours =
        (taken === String(port) && opts.port === undefined) ||
        (taken === String(healthPort) && opts.healthPort === undefined);
      if (!ours || attempt >= PORT_RACE_ATTEMPTS) throw err;
    }
  }
}

async function startOnPorts(
  opts: TurnpikeOptions,
  port: number,
  healthPort: number,
): Promise<TurnpikeHandle> {
  const args = [
    ...(opts.nodeFlags ?? []),
    opts.bin ?? TURNPIKE_BIN,
    "--listen",
    `127.0.0.1:${port}`,
    "--min-port",
    String(opts.minPort),
    "--max-port",
    String(opts.maxPort),
    "--health-listen",
    `127.0.0.1:${healthPort}`,
  ];
  // Inside a namespace (spawnInNamespace) readiness is the "listening" line (INFO): this
  // process cannot reach the health listener there.
  const inNamespace = spawnNamespace() !== undefined;
  if (opts.logLevel !== null) {
    args.push("--log-level", opts.logLevel ?? (inNamespace ? "info" : "warn"));
  }
  if (opts.allowLoopbackPeers ?? true) args.push("--allow-loopback-peers");
  if (opts.legacyChannelNumbers) args.push("--legacy-channel-numbers");
  args.push(...(opts.extraArgs ?? []));
  // The suites run once per UDP data path and worker count (vitest.config.ts sets TEST_UDP_IO
  // and TEST_WORKERS per project).
  const udpIo = process.env.TEST_UDP_IO;
  if (udpIo !== undefined && !args.includes("--udp-io")) args.push("--udp-io", udpIo);
  const workers = process.env.TEST_WORKERS;
  if (workers !== undefined && !args.includes("--workers")) args.push("--workers", workers);
  // The kernel data path attaches a BPF program to the interfaces of the listen address: on
  // the host's loopback never (a suite that wants it runs the relay in a namespace of its own
  // and says --kernel-path itself).
  if (!args.includes("--kernel-path")) args.push("--kernel-path", "off");

  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("TURNPIKE_")) env[k] = v;
  }
  Object.assign(env, opts.env, opts.token === undefined ? {} : { TURNPIKE_TOKEN: opts.token });

  const proc = spawnManaged(process.execPath, args, { env });
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 15_000);
  let lastError = "";
  while (true) {
    if (proc.exited) {
      const e = await proc.waitExit();
      throw new Error(
        `turnpike-relay exited before ready (code ${e.code}, signal ${e.signal})\n${tail(proc)}`,
      );
    }
    if (spawnNamespace() !== undefined) {
      if (/ INFO listening /.test(proc.stderr)) break;
      lastError = `no "listening" line yet in namespace ${spawnNamespace()}`;
    } else {
      try {
        const r = await httpGet(healthPort, "/readyz", 500);
        if (r.status === 200) break;
        lastError = `status ${r.status} ${r.body}`;
      } catch (e) {
        lastError = (e as Error).message;
      }
    }
    if (Date.now() > deadline) {
      await proc.stop("SIGKILL");
      throw new Error(`turnpike-relay not ready: /readyz ${lastError}\n${tail(proc)}`);
    }
    await sleep(100);
  }

  return {
    pid: proc.pid,
    port,
    healthPort,
    args,
    process: proc,
    get stdout() {
      return proc.stdout;
    },
    get stderr() {
      return proc.stderr;
    },
    stop: (signal: NodeJS.Signals = "SIGTERM", graceMs = 10_000) => proc.stop(signal, graceMs),
    waitExit: () => proc.waitExit(),
  };
}

function tail(proc: ManagedProcess): string {
  const lines = `${proc.stdout}\n${proc.stderr}`.trim().split("\n");
  return `--- turnpike-relay output (tail) ---\n${lines.slice(-20).join("\n")}`;
}
