// turnpike-tunnel exposing the iperf3 server through a relay (RFC 6062 TCP relaying), started
// the way a user would: the CLI, TURNPIKE_TOKEN, and the admin API's GET /list for readiness.
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { launcherNodeFlags } from "@turnpike/test-support/turnpike";
import { type Child, startChild } from "../children.js";
import { freeTcpPort } from "../ports.js";
import { type RunningServer, repoRoot } from "../servers.js";

export const tunnelBin = path.join(repoRoot, "packages/tunnel-client/bin/turnpike-tunnel.js");
const tunnelDist = path.join(repoRoot, "packages/tunnel-client/dist/cli.js");

/** Why turnpike-tunnel cannot run here, or undefined when it can. */
export function tunnelUnavailable(): string | undefined {
  if (!existsSync(tunnelBin) || !existsSync(tunnelDist))
    return `turnpike-tunnel is not built (${path.relative(process.cwd(), tunnelDist)} missing): run pnpm exec tsc -b`;
  return undefined;
}

export interface RunningTunnel {
  child: Child;
  /** host and port of the allocation's relayed address: what the platform connects to */
  relayedHost: string;
  relayedPort: number;
  command: string;
}

interface ListRow {
  state?: string;
  relayedAddress?: string | null;
  lastError?: string | null;
}

/** Splits "1.2.3.4:5" or "[::1]:5". */
function splitHostPort(s: string): [string, number] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`turnpike-tunnel: unexpected relayedAddress ${s}`);
  return [m[1]!, Number(m[2])];
}

export async function startTunnel(
  relay: RunningServer,
  targetPort: number,
  timeoutMs = 15000,
): Promise<RunningTunnel> {
  const adminPort = await freeTcpPort();
  const adminToken = randomBytes(16).toString("hex");
  const args = [
    tunnelBin,
    "--relay",
    `turn:${relay.host}:${relay.port}?transport=tcp`,
    "--expose",
    `iperf=tcp://127.0.0.1:${targetPort}`,
    "--allow-peer",
    "127.0.0.1",
    "--admin-listen",
    `127.0.0.1:${adminPort}`,
    "--name",
    "bench",
    "--log-level",
    "warn",
  ];
  const child = startChild(
    "turnpike-tunnel",
    process.execPath,
    [...launcherNodeFlags(tunnelBin), ...args],
    {
      cwd: repoRoot,
      // A TCP admin API needs a token (turnpike-tunnel refuses to start without one).
      env: { ...process.env, TURNPIKE_TOKEN: relay.token, TURNPIKE_ADMIN_TOKEN: adminToken },
    },
  );
  const command = `TURNPIKE_TOKEN=*** TURNPIKE_ADMIN_TOKEN=*** node ${[...launcherNodeFlags(tunnelBin), ...args].map((a) => path.relative(repoRoot, a) || a).join(" ")}`;
  const deadline = Date.now() + timeoutMs;
  let last: ListRow | undefined;
  try {
    while (Date.now() < deadline) {
      await Promise.race([new Promise((r) => setTimeout(r, 100)), child.exited]);
      try {
        const res = await fetch(`http://127.0.0.1:${adminPort}/list`, {
          headers: { authorization: `Bearer ${adminToken}` },
          signal: AbortSignal.timeout(2000),
        });
        if (!res.ok) continue;
        const rows = (await res.json()) as ListRow[];
        last = rows[0];
        if (last?.state === "ready" && last.relayedAddress) {
          const [relayedHost, relayedPort] = splitHostPort(last.relayedAddress);
          return { child, relayedHost, relayedPort, command };
        }
      } catch {
        // admin API not listening yet
      }
    }
    throw new Error(
      `turnpike-tunnel not ready within ${timeoutMs} ms (state ${last?.state ?? "unknown"}${last?.lastError ? `, ${last.lastError}` : ""}): ${child.out.slice(-5).join(" / ")}`,
    );
  } catch (e) {
    await child.stop();
    throw e;
  }
}
