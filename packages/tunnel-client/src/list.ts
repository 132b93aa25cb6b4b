// `turnpike-tunnel list`: GET /list from a running client's admin API, printed as a table.
import type { RequestOptions } from "node:http";
import { nodeHttp, nodeHttps, renderTextTable, type TextColumn } from "@turnpike/runtime-kit";
import type { ListEntry } from "./supervisor.js";

/** GET /list from `admin`: unix:/PATH (the default socket), or an http(s) base URL. */
export function fetchList(
  admin: string,
  token: string | undefined,
  timeoutMs = 5000,
): Promise<unknown> {
  const socketPath = admin.startsWith("unix:") ? admin.slice(5) : undefined;
  // Over a unix socket the Host header is a formality: the socket is the address.
  const url = new URL("/list", socketPath === undefined ? admin : "http://localhost");
  const where = socketPath === undefined ? String(url) : `${admin} (GET /list)`;
  return new Promise((resolve, reject) => {
    const get = url.protocol === "https:" ? nodeHttps().get : nodeHttp().get;
    const headers: Record<string, string> = { accept: "application/json" };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const options: RequestOptions = { headers, timeout: timeoutMs };
    if (socketPath !== undefined) options.socketPath = socketPath;
    const req = get(url, options, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        if (res.statusCode === 401)
          return reject(
            new Error(`${where}: 401 unauthorized (set --admin-token or TURNPIKE_ADMIN_TOKEN)`),
          );
        if (res.statusCode !== 200) return reject(new Error(`${where}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${where}: answer is not JSON`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${where}: timed out`)));
    req.on("error", (err: NodeJS.ErrnoException) => {
      const hint =
        socketPath !== undefined && (err.code === "ENOENT" || err.code === "ECONNREFUSED")
          ? " (no turnpike-tunnel listens there: is it running, with this --admin-listen?)"
          : "";
      reject(new Error(`${where}: ${err.message}${hint}`));
    });
  });
}

const COLUMNS: readonly TextColumn<ListEntry>[] = [
  ["ID", (r) => r.id],
  ["NAME", (r) => r.name],
  ["TARGET", (r) => r.target],
  ["RELAY", (r) => r.relay],
  ["RELAYED ADDRESS", (r) => r.relayedAddress ?? "-"],
  ["STATE", (r) => r.state],
  ["CONNS", (r) => String(r.openConnections)],
  ["IN", (r) => bytes(r.bytesIn)],
  ["OUT", (r) => bytes(r.bytesOut)],
  ["PEERS", (r) => (r.allowedPeers.length === 0 ? "-" : r.allowedPeers.join(","))],
  ["LAST ERROR", (r) => r.lastError ?? ""],
];

function bytes(n: number): string {
  if (n < 1024) return `${n}B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)}${units[i]}`;
}

export function renderTable(rows: readonly ListEntry[]): string {
  return renderTextTable(COLUMNS, rows, "no exposed services");
}
