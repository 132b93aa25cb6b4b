// The discovery API: where each tunnel's endpoint lives, asked of the relay by the platform, and
// the operator's way to end allocations.
//
//   GET /v1/allocations[?user=NAME]   on the health listener
//   Authorization: Bearer <TURNPIKE_ADMIN_TOKEN>
//   200 {"allocations":[{id, user, pinnedPort, transport, relayedAddress, relayedAddresses,
//                        clientTransport, clientAddress, peers, createdAt, expiresAt}]}
//
//   DELETE /v1/allocations?user=NAME  ends every allocation of NAME, named as the revocation
//                                     list names users (NAME, static:NAME, rest:USER[;port=P],
//                                     rest-expiry:E): 200 {"ended": N}
//   DELETE /v1/allocations/ID         ends that one (`id` of a row): 200 {"ended": 1}, or 404
//   Ending is not revoking: the credentials stay valid and the client may allocate again.
//
// Off (404) when no admin token is configured; 401 for a missing or wrong token (compared in
// constant time over SHA-256 digests, so neither content nor length leaks). No row carries a
// password, a key or the REST username (whose signature is the credential): only the user.
//
// Browsers: a page the operator visits can reach the health listener too, so like the tunnel's
// admin API the endpoint refuses what a browser sends: any request with an Origin header or a
// Fetch Metadata Sec-Fetch-Site header other than "none" (403; a page's fetch carries one, while
// curl and Node's fetch send neither), and, when the listener is on loopback, a Host that is
// not a loopback literal or localhost with the listening port (421; DNS rebinding). The bearer
// token itself is never sent by a browser on its own, which is the main defence.
//
// `turnpike-relay allocations` is the client (discovery-client.ts).

import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

export const DISCOVERY_PATH = "/v1/allocations";

/** One live allocation as the discovery API shows it. */
export interface AllocationRow {
  /** Unique in the relay process: the worker's index and the engine's allocation id ("0-17"). */
  readonly id: string;
  /** The REST <user> part without its pin, or the static user name. */
  readonly user: string;
  readonly pinnedPort: number | null;
  /** What the allocation relays: "udp" (RFC 8656) or "tcp" (RFC 6062). */
  readonly transport: "udp" | "tcp";
  /** The address the platform connects to (the first of relayedAddresses: IPv4 when both). */
  readonly relayedAddress: string | null;
  readonly relayedAddresses: readonly string[];
  /** How the tunnel reaches the relay: "udp", "tcp" or "tls". */
  readonly clientTransport: "udp" | "tcp" | "tls";
  readonly clientAddress: string;
  /** Peer IPs with a live permission: who may connect. */
  readonly peers: readonly string[];
  /** ISO 8601. */
  readonly createdAt: string;
  readonly expiresAt: string;
}

// Row ids ("0-17") are a value the CLI parses too (--end): config/values.ts.
export { allocationRowId, parseAllocationRowId } from "./config/values.js";

/** Which allocations DELETE ends: a user's (revocation-list names) or one by its row id. */
export type EndAllocations = { readonly user: string } | { readonly id: string };

export interface DiscoveryOptions {
  /** The admin token; the endpoint answers 404 without one. */
  readonly token: string | undefined;
  readonly allocations: () => readonly AllocationRow[] | Promise<readonly AllocationRow[]>;
  /** Ends allocations now; resolves with how many ended. */
  readonly end?: (which: EndAllocations) => number | Promise<number>;
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Serves GET /v1/allocations on an HTTP server that also answers other paths (health). Returns
 * false when `path` is not the discovery API's, so the caller answers it.
 */
export function createDiscoveryHandler(
  options: DiscoveryOptions,
  listening: () => { ip: string; port: number },
): (req: IncomingMessage, res: ServerResponse, path: string, query: string) => boolean {
  const expected = options.token === undefined ? undefined : digest(options.token);
  return (req, res, path, query) => {
    if (path !== DISCOVERY_PATH && !path.startsWith(`${DISCOVERY_PATH}/`)) return false;
    if (expected === undefined) {
      send(res, 404, { error: "the discovery API is off: set TURNPIKE_ADMIN_TOKEN to enable it" });
      return true;
    }
    if (req.headers.origin !== undefined || fromWebPage(req)) {
      send(res, 403, { error: "requests from web pages (Origin, Sec-Fetch-Site) are refused" });
      return true;
    }
    const at = listening();
    if (isLoopbackIp(at.ip) && !loopbackHost(req.headers.host, at.port)) {
      send(res, 421, {
        error:
          "on a loopback listener only a loopback Host (127.0.0.1, [::1], localhost) is served",
      });
      return true;
    }
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? "");
    if (m === null || !timingSafeEqual(digest(m[1]!.trim()), expected)) {
      send(res, 401, { error: "unauthorized" }, { "www-authenticate": 'Bearer realm="turnpike"' });
      return true;
    }
    const user = new URLSearchParams(query).get("user");
    const id =
      path === DISCOVERY_PATH
        ? undefined
        : decodeURIComponent(path.slice(DISCOVERY_PATH.length + 1));
    if (req.method === "DELETE") {
      endAllocations(
        res,
        options,
        id !== undefined ? { id } : user !== null ? { user } : undefined,
      );
      return true;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(res, 405, { error: "GET, HEAD or DELETE" }, { allow: "GET, HEAD, DELETE" });
      return true;
    }
    if (id !== undefined) {
      send(res, 404, { error: `no such path: ${path}` });
      return true;
    }
    // With workers the rows come from every engine, so they may arrive asynchronously.
    Promise.resolve(options.allocations()).then(
      (all) =>
        send(res, 200, { allocations: user === null ? all : all.filter((r) => r.user === user) }),
      () => send(res, 500, { error: "allocations unavailable" }),
    );
    return true;
  };
}

/** DELETE: a user's allocations or one by id, never all of them by an empty query. */
function endAllocations(
  res: ServerResponse,
  options: DiscoveryOptions,
  which: EndAllocations | undefined,
): void {
  if (which === undefined || ("user" in which && which.user.trim() === "")) {
    send(res, 400, {
      error: `say which: DELETE ${DISCOVERY_PATH}?user=NAME or ${DISCOVERY_PATH}/ID`,
    });
    return;
  }
  if (options.end === undefined) {
    send(res, 405, { error: "ending allocations is not available here" }, { allow: "GET, HEAD" });
    return;
  }
  Promise.resolve(options.end(which)).then(
    (ended) => {
      if ("id" in which && ended === 0) send(res, 404, { error: `no live allocation ${which.id}` });
      else send(res, 200, { ended });
    },
    () => send(res, 500, { error: "allocations unavailable" }),
  );
}

/** Fetch Metadata: "none" is a user typing the URL; anything else was issued by a page. */
function fromWebPage(req: IncomingMessage): boolean {
  const site = req.headers["sec-fetch-site"];
  return site !== undefined && site !== "none";
}

function isLoopbackIp(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1";
}

/** Host is 127.x.x.x, [::1] or localhost, with exactly the listening port. */
function loopbackHost(host: string | undefined, port: number): boolean {
  if (host === undefined) return false;
  const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(host.trim().toLowerCase());
  if (m === null || Number(m[2]) !== port) return false;
  const name = m[1]!.replace(/\.$/, "");
  return name === "localhost" || name === "[::1]" || /^127(\.\d{1,3}){3}$/.test(name);
}

function send(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : text);
}
