// pion's TURN client (github.com/pion/turn/v2) as a third independent client next to coturn's
// turnutils and Chromium: pion/turn-echo.go, built at test time from Debian's packages
// (golang-go, golang-github-pion-turn.v2-dev: scripts/ensure-tools.sh) with the Go toolchain
// offline (GOPATH mode over /usr/share/gocode, GOPROXY=off: never a module download), once per
// test process into a temporary directory.
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { spawnManaged } from "./process.js";

const SOURCE = fileURLToPath(new URL("../pion/turn-echo.go", import.meta.url));
/** Where Debian puts Go sources (pion/turn, pion/stun, ... and their dependencies). */
export const GOPATH = "/usr/share/gocode";
const PION_TURN = `${GOPATH}/src/github.com/pion/turn/v2`;

/** Why pion's client cannot be built here, or undefined. */
export function pionUnavailable(): string | undefined {
  if (!existsSync(PION_TURN)) {
    return `${PION_TURN} missing (apt-get install golang-github-pion-turn.v2-dev)`;
  }
  return undefined;
}

let built: Promise<string> | undefined;

/** Builds turn-echo once per process; resolves with the binary's path. */
export function buildPionClient(): Promise<string> {
  built ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "turnpike-pion-"));
    const binary = join(dir, "turn-echo");
    const go = spawnManaged("go", ["build", "-o", binary, SOURCE], {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: dir,
        GOPATH,
        GO111MODULE: "off",
        GOPROXY: "off",
        GOFLAGS: "",
        GOCACHE: join(dir, "cache"),
      },
    });
    const exit = await go.waitExit();
    if (exit.code !== 0) throw new Error(`go build turn-echo failed:\n${go.stderr}`);
    return binary;
  })();
  return built;
}

export interface PionOptions {
  /** TURN server HOST:PORT (UDP). */
  server: string;
  username: string;
  password: string;
  realm?: string;
  /** Echo peer HOST:PORT. */
  peer: string;
  /** Local address of the client's socket (default any). */
  local?: string;
  count?: number;
  intervalMs?: number;
  size?: number;
  /** Hard kill after this many ms (default 30 000). */
  timeoutMs?: number;
}

export interface PionResult {
  relayed: string;
  sent: number;
  received: number;
  rttP50Ms: number;
  rttMaxMs: number;
  error?: string;
  exitCode: number | null;
  log: string;
}

/** Runs pion's client to completion: allocate, permission and channel, echoes counted. */
export async function runPionClient(o: PionOptions): Promise<PionResult> {
  const binary = await buildPionClient();
  const proc = spawnManaged(binary, [
    "-server",
    o.server,
    "-user",
    o.username,
    "-pass",
    o.password,
    "-realm",
    o.realm ?? "turnpike",
    "-peer",
    o.peer,
    "-local",
    o.local ?? "0.0.0.0",
    "-count",
    String(o.count ?? 200),
    "-interval",
    `${o.intervalMs ?? 5}ms`,
    "-size",
    String(o.size ?? 100),
  ]);
  const timer = setTimeout(() => proc.child.kill("SIGKILL"), o.timeoutMs ?? 30_000);
  const exit = await proc.waitExit();
  clearTimeout(timer);
  const line = proc.stdout.trim().split("\n").at(-1) ?? "";
  let parsed: Partial<PionResult> = {};
  try {
    parsed = JSON.parse(line) as Partial<PionResult>;
  } catch {
    parsed = { error: `no result line: ${line}` };
  }
  return {
    relayed: parsed.relayed ?? "",
    sent: parsed.sent ?? 0,
    received: parsed.received ?? 0,
    rttP50Ms: parsed.rttP50Ms ?? Number.NaN,
    rttMaxMs: parsed.rttMaxMs ?? Number.NaN,
    ...(parsed.error !== undefined ? { error: parsed.error } : {}),
    exitCode: exit.code,
    log: `${proc.stdout}\n${proc.stderr}`,
  };
}
