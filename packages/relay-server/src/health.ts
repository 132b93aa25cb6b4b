// Health endpoints for orchestrators (Kubernetes probes, load balancers):
//   GET /healthz  200 {"status":"ok","uptimeSeconds":N}          the process is alive
//   GET /readyz   200 {"status":"ready","uptimeSeconds":N,"udpIo":"batch"|"dgram",
//                      "kernelPath":"tc"|"xdp"|"off","workers":N,"configGeneration":N,
//                      "lastReload":"applied"|"refused"}
//                                                                 listeners bound, not draining
//                 503 {"status":"starting"|"draining",...}       take me out of rotation
//   GET, DELETE /v1/allocations                                  the discovery API (discovery.ts),
//                                                                 with the admin token only
// Anything else is 404 JSON. node:http only; nothing here touches the relay's data path.
//
// This is the port Kubernetes probes, so it must not be a way to starve the relay: it holds at
// most --health-max-connections at once (config/fd-budget.ts keeps it within the open-file
// limit; beyond it Node closes a new connection at once), and a connection gets REQUEST_MS for
// its request, whether it sends half a request or nothing at all, and as long between requests.
// Node checks its request and header timeouts only every connectionsCheckingInterval (30 s by
// default: a half-sent request was held ~29 s), so that runs every second here.

import type { ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { nodeHttp } from "@turnpike/runtime-kit";
import type { SocketAddress } from "./config/types.js";
import { createDiscoveryHandler, type DiscoveryOptions } from "./discovery.js";
import { listenFailure } from "./preflight.js";

/** How long a connection has for a request (headers and body), or between two. */
const REQUEST_MS = 5_000;
/** How often Node looks for requests past REQUEST_MS. */
const CHECK_MS = 1_000;

export interface RelayState {
  readonly ready: boolean;
  readonly draining: boolean;
  /** The UDP data path ("batch" or "dgram"), reported by /readyz once known. */
  readonly udpIo?: string;
  /** The kernel data path ("tc", "xdp" or "off"), once known. */
  readonly kernelPath?: string;
  /** Relay engines (engine 0 on the main thread, the others in worker threads). */
  readonly workers?: number;
  /** A worker is being restarted: still serving (200), but say so. */
  readonly degraded?: boolean;
  /** The configuration generation in force: 1 at start, one more per applied reload. */
  readonly configGeneration?: number;
  /** How the last reload (SIGHUP) ended; absent before the first. */
  readonly lastReload?: "applied" | "refused" | undefined;
}

export interface HealthServer {
  /** The bound address (real port when asked for port 0). */
  address(): SocketAddress;
  close(): Promise<void>;
}

export interface HealthOptions {
  /** Monotonic clock in ms, for uptime. Default performance.now. */
  clock?: () => number;
  /** GET /v1/allocations (answers 404 when absent or without a token). */
  discovery?: DiscoveryOptions;
  /** Connections held at once (--health-max-connections). Default 64. */
  maxConnections?: number;
}

export async function startHealthServer(
  at: SocketAddress,
  state: () => RelayState,
  options: HealthOptions = {},
): Promise<HealthServer> {
  const clock = options.clock ?? (() => performance.now());
  const started = clock();
  const uptimeSeconds = (): number => Math.floor((clock() - started) / 1000);

  const discovery = createDiscoveryHandler(
    options.discovery ?? { token: undefined, allocations: () => [] },
    () => {
      const a = server.address() as AddressInfo;
      return { ip: a.address, port: a.port };
    },
  );
  // node:http without its ES namespace (runtime-kit node-builtins.ts: 11 MB less at idle).
  const server = nodeHttp().createServer({ connectionsCheckingInterval: CHECK_MS }, (req, res) => {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    // The discovery API answers its own paths, DELETE included (discovery.ts).
    if (discovery(req, res, path, q < 0 ? "" : url.slice(q + 1))) return;
    const method = req.method ?? "GET";
    if (method !== "GET" && method !== "HEAD") {
      send(res, 405, { status: "method not allowed" }, { allow: "GET, HEAD" });
      return;
    }
    if (path === "/healthz") {
      send(res, 200, { status: "ok", uptimeSeconds: uptimeSeconds() });
      return;
    }
    if (path === "/readyz") {
      let s: RelayState;
      try {
        s = state();
      } catch {
        // A broken state callback must not crash the process; report not ready.
        s = { ready: false, draining: false };
      }
      const io = {
        ...(s.udpIo !== undefined ? { udpIo: s.udpIo } : {}),
        ...(s.kernelPath !== undefined ? { kernelPath: s.kernelPath } : {}),
        ...(s.workers !== undefined ? { workers: s.workers } : {}),
        ...(s.configGeneration !== undefined ? { configGeneration: s.configGeneration } : {}),
        ...(s.lastReload !== undefined ? { lastReload: s.lastReload } : {}),
      };
      if (s.ready && !s.draining) {
        send(res, 200, {
          status: s.degraded ? "degraded" : "ready",
          uptimeSeconds: uptimeSeconds(),
          ...io,
        });
      } else {
        send(res, 503, {
          status: s.draining ? "draining" : "starting",
          uptimeSeconds: uptimeSeconds(),
          ...io,
        });
      }
      return;
    }
    send(res, 404, { status: "not found", path });
  });
  // Probes are short; do not let a slow or idle client hold sockets open. `timeout` (socket
  // inactivity) ends a connection that never sends a byte, whatever the parser's clocks say.
  server.requestTimeout = REQUEST_MS;
  server.headersTimeout = REQUEST_MS;
  server.keepAliveTimeout = REQUEST_MS;
  server.timeout = REQUEST_MS;
  server.maxConnections = options.maxConnections ?? 64;

  await new Promise<void>((resolve, reject) => {
    // An address that cannot be bound is one line naming --health-listen (exit 2).
    const failed = (err: Error) => reject(listenFailure("--health-listen", at, err));
    server.once("error", failed);
    server.listen({ host: at.ip, port: at.port }, () => {
      server.off("error", failed);
      resolve();
    });
  });

  let closing: Promise<void> | undefined;
  return {
    address: () => {
      const a = server.address() as AddressInfo;
      return { ip: a.address, port: a.port, family: a.family === "IPv6" ? 6 : 4 };
    },
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function send(
  res: ServerResponse,
  status: number,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : text);
}
