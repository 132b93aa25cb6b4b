// The admin HTTP API (node:http, no framework): the shape people already script against in the
// gRPC connector (POST /expose, DELETE /expose/{id}, GET /list, GET /health).
//
// What it guarantees. The API can expose any target the tunnel host reaches (127.0.0.1:22, a
// database on the private network) to peers of the caller's choosing, and delete the operator's
// services, so it is never open to every process of the host:
//   - by default it listens on a unix socket only the tunnel's user (and root) can use: mode
//     0600 in a directory nobody else can write (admin-socket.ts); the kernel checks the caller;
//   - over TCP (--admin-listen IP:PORT) it needs --admin-token: the process refuses to start
//     without one, and so does startAdminServer. Every request then needs
//     `Authorization: Bearer <token>`, compared in constant time (both sides hashed, then
//     timingSafeEqual), else 401. A token on a unix socket is required the same way.
//   - Targets are judged on the address the socket layer will dial (targets.ts): cloud
//     metadata and link-local targets are refused (403) whatever the caller, unless
//     --allow-metadata-targets.
//
// Browsers: a web page cannot reach a unix socket, and cannot send the bearer token it does not
// know, but it can fire requests at loopback. So, before anything else (RFC 6454 §7,
// RFC 9110 §15.5.20):
//   - a request carrying an Origin header (browsers add it to cross-origin fetches and to
//     every POST/DELETE) -> 403; curl, scripts and `turnpike-tunnel list` send none;
//   - POST needs Content-Type: application/json (-> 415): a page can POST text/plain without
//     a CORS preflight, but not JSON.
//
//   GET    /health        200 {"status":"ok","tunnels":N,"ready":N}
//   GET    /list          200 [ListEntry...]
//   POST   /expose        {name, target:"tcp://HOST:PORT", allowPeers:[..], windows?:[..]}
//                         -> 201 {id, name, protocol, target, allowedPeers, windows, tunnels:[ListEntry...]}
//   DELETE /expose/:id    204, or 404

import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { type Logger, nodeHttp } from "@turnpike/runtime-kit";
import { listenOwnerOnly } from "./admin-socket.js";
import { type AdminListen, parseExpose, type ServiceSpec } from "./config/index.js";
import { expandAllowList } from "./peers.js";
import type { TunnelSupervisor } from "./supervisor.js";
import { targetRefusal } from "./targets.js";
import { type AccessWindow, parseWindow } from "./windows.js";

export interface AdminServer {
  /** The socket's path, or the TCP address (the port chosen when 0 was asked for). */
  readonly address: AdminListen;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;

export async function startAdminServer(options: {
  /** A unix socket (created owner-only), or TCP, which needs `token`. */
  listen: AdminListen;
  token: string | undefined;
  supervisor: TunnelSupervisor;
  maxPermissions: number;
  allowMetadataTargets: boolean;
  logger: Logger;
}): Promise<AdminServer> {
  const { supervisor, logger, listen } = options;
  if ("host" in listen && options.token === undefined) {
    throw new Error(
      "a TCP admin listener needs a token (--admin-token): every local process can reach it",
    );
  }
  const expected = options.token === undefined ? undefined : digest(options.token);

  const authorized = (req: IncomingMessage): boolean => {
    if (expected === undefined) return true;
    const header = req.headers.authorization ?? "";
    const m = /^Bearer\s+(.+)$/i.exec(header);
    // Hash both sides: equal-length buffers for timingSafeEqual, and no length leak.
    return m !== null && timingSafeEqual(digest(m[1]!.trim()), expected);
  };

  // node:http without its ES namespace (runtime-kit node-builtins.ts).
  const server: Server = nodeHttp().createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.warn("admin request failed", {
        err: err instanceof Error ? err.message : String(err),
      });
      if (!res.headersSent) send(res, 500, { error: "internal error" });
      else res.destroy();
    });
  });

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? "/").split("?")[0]!.replace(/\/+$/, "") || "/";
    if (req.headers.origin !== undefined) {
      return send(res, 403, { error: "requests from web pages (Origin header) are refused" });
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

  if ("path" in listen) {
    await listenOwnerOnly(server, listen.path);
  } else {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host: listen.host, port: listen.port }, () => {
        server.off("error", reject);
        resolve();
      });
    });
  }
  server.on("error", (err) => logger.warn("admin server error", { err: err.message }));
  const a = server.address();
  return {
    address: typeof a === "string" || a === null ? listen : { host: a.address, port: a.port },
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
