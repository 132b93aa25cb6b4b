// The admin HTTP API (node:http, no framework): the shape people already script against in the
// gRPC connector (POST /expose, DELETE /expose/{id}, GET /list, GET /health), but authenticated:
// with --admin-token every request needs `Authorization: Bearer <token>` (compared in constant
// time), else 401. Without a token the API should stay on loopback (the default 127.0.0.1:7070).
//
// Browsers: a web page the operator visits can send requests to 127.0.0.1 too. So, before
// anything else (RFC 6454 §7, RFC 9110 §15.5.20):
//   - a request carrying an Origin header (browsers add it to cross-origin fetches and to
//     every POST/DELETE) -> 403; curl, scripts and `turnpike-tunnel list` send none;
//   - POST needs Content-Type: application/json (-> 415): a page can POST text/plain without
//     a CORS preflight, but not JSON;
//   - without --admin-token, Host must be a loopback literal or localhost with the listening
//     port (-> 421): a DNS-rebound name pointing at 127.0.0.1 carries the attacker's Host.
//
// What the token is for: without it, any process on this host (any local user, any container
// sharing its network namespace) can expose any target the tunnel can reach, 127.0.0.1:22
// included, to peers of its choosing. Cloud metadata targets are refused either way unless
// --allow-metadata-targets (targets.ts; 403 here).
//
//   GET    /health        200 {"status":"ok","tunnels":N,"ready":N}
//   GET    /list          200 [ListEntry...]
//   POST   /expose        {name, target:"tcp://HOST:PORT", allowPeers:[..], windows?:[..]}
//                         -> 201 {id, name, protocol, target, allowedPeers, windows, tunnels:[ListEntry...]}
//   DELETE /expose/:id    204, or 404

import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "@turnpike/runtime-kit";
import { type HostPort, parseExpose, type ServiceSpec } from "./config/index.js";
import { expandAllowList } from "./peers.js";
import type { TunnelSupervisor } from "./supervisor.js";
import { targetRefusal } from "./targets.js";
import { type AccessWindow, parseWindow } from "./windows.js";

export interface AdminServer {
  readonly address: HostPort;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;

export async function startAdminServer(options: {
  listen: HostPort;
  token: string | undefined;
  supervisor: TunnelSupervisor;
  maxPermissions: number;
  allowMetadataTargets: boolean;
  logger: Logger;
}): Promise<AdminServer> {
  const { supervisor, logger } = options;
  const expected = options.token === undefined ? undefined : digest(options.token);

  const authorized = (req: IncomingMessage): boolean => {
    if (expected === undefined) return true;
    const header = req.headers.authorization ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header);
    // Hash both sides: equal-length buffers for timingSafeEqual, and no length leak.
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), expected);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.warn("admin request failed", {
        err: err instanceof Error ? err.message : String(err),
      });
      if (!res.headersSent) send(res, 500, { error: "internal error" });
      else res.destroy();
    });
  });

  let listeningPort = 0;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? "/").split("?")[0]!.replace(/\/+$/, "") || "/";
    if (req.headers.origin !== undefined) {
      return send(res, 403, { error: "requests from web pages (Origin header) are refused" });
    }
    if (expected === undefined && !loopbackHost(req.headers.host, listeningPort)) {
      return send(res, 421, {
        error: "without --admin-token only a loopback Host (127.0.0.1, [::1], localhost) is served",
      });
    }
    if (!authorized(req)) {
      res.setHeader("www-authenticate", 'Bearer realm="turnpike-tunnel"');
      return send(res, 401, { error: "unauthorized" });
    }
    if (req.method === "GET" && path === "/health") {
      const rows = supervisor.list();
      return send(res, 200, {
        status: "ok",
        tunnels: rows.length,
        ready: rows.filter((r) => r.state === "ready").length,
      });
    }
    if (req.method === "GET" && path === "/list") return send(res, 200, supervisor.list());
    if (req.method === "POST" && path === "/expose") {
      if (!isJson(req.headers["content-type"])) {
        return send(res, 415, { error: "Content-Type must be application/json" });
      }
      const body = await readJson(req);
      if ("error" in body) return send(res, 400, { error: body.error });
      const spec = serviceFromJson(body.value, options.maxPermissions);
      if ("error" in spec) return send(res, 400, { error: spec.error });
      const refusal = targetRefusal(spec.target.host, options.allowMetadataTargets);
      if (refusal !== undefined) return send(res, 403, { error: refusal });
      if (supervisor.services().some((s) => s.spec.name === spec.name)) {
        return send(res, 409, { error: `a service named "${spec.name}" is already exposed` });
      }
      const service = supervisor.addService(spec);
      logger.info("service exposed", { id: service.id, name: spec.name, via: "admin" });
      return send(res, 201, supervisor.describe(service.id));
    }
    const del = /^\/expose\/([A-Za-z0-9_-]+)$/.exec(path);
    if (req.method === "DELETE" && del) {
      const ok = await supervisor.removeService(del[1]!);
      if (!ok) return send(res, 404, { error: "no such service" });
      logger.info("service removed", { id: del[1], via: "admin" });
      res.statusCode = 204;
      res.end();
      return;
    }
    return send(res, path === "/list" || path === "/health" || path === "/expose" ? 405 : 404, {
      error: "not found",
    });
  };

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host: options.listen.host, port: options.listen.port }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (err) => logger.warn("admin server error", { err: err.message }));
  const a = server.address() as AddressInfo;
  listeningPort = a.port;
  return {
    address: { host: a.address, port: a.port },
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** `Content-Type: application/json` (parameters such as charset allowed). */
function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  return contentType.split(";")[0]!.trim().toLowerCase() === "application/json";
}

/** Host is 127.x.x.x, [::1] or localhost, with exactly the port the API listens on. */
export function loopbackHost(host: string | undefined, port: number): boolean {
  if (host === undefined) return false;
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(host.trim().toLowerCase());
  if (m === null || Number(m[2]) !== port) return false;
  const name = m[1]!.replace(/\.$/, "");
  return name === "localhost" || name === "[::1]" || /^127(\.\d{1,3}){3}$/.test(name);
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("content-length", Buffer.byteLength(text));
  res.end(text);
}

function readJson(req: IncomingMessage): Promise<{ value: unknown } | { error: string }> {
  return new Promise((resolve) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        resolve({ error: "body too large" });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      try {
        resolve({ value: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
      } catch {
        resolve({ error: "body is not JSON" });
      }
    });
    req.on("error", () => resolve({ error: "body not readable" }));
  });
}

/** {name, target:"tcp://HOST:PORT", allowPeers:[..], windows?:[..]} -> ServiceSpec or error. */
export function serviceFromJson(
  value: unknown,
  maxPermissions: number,
): ServiceSpec | { error: string } {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { error: 'expected {"name","target","allowPeers"}' };
  }
  const v = value as Record<string, unknown>;
  if (typeof v.name !== "string" || typeof v.target !== "string") {
    return {
      error: 'name and target ("tcp://HOST:PORT" or "udp://HOST:PORT") are required strings',
    };
  }
  const e = parseExpose(`${v.name}=${v.target}`);
  if ("error" in e) return { error: `name/target: ${e.error}` };
  const peers = v.allowPeers ?? v.allowedPeers ?? [];
  if (!Array.isArray(peers) || !peers.every((p) => typeof p === "string")) {
    return { error: "allowPeers must be an array of IP/CIDR strings" };
  }
  const allow = expandAllowList(peers as string[], maxPermissions);
  if ("error" in allow) return { error: `allowPeers: ${allow.error}` };
  const windowsRaw = v.windows ?? [];
  if (!Array.isArray(windowsRaw) || !windowsRaw.every((w) => typeof w === "string")) {
    return { error: "windows must be an array of strings" };
  }
  const windows: AccessWindow[] = [];
  for (const text of windowsRaw as string[]) {
    const w = parseWindow(text);
    if ("error" in w) return { error: `windows: ${w.error}` };
    windows.push(w);
  }
  return { ...e, allowPeers: allow, windows };
}
