// `turnpike-tunnel list`: GET /list from a running client's admin API, printed as a table.
import { get as httpGet } from "node:http";
import { get as httpsGet } from "node:https";
import type { ListEntry } from "./supervisor.js";

export function fetchList(
  admin: string,
  token: string | undefined,
  timeoutMs = 5000,
): Promise<unknown> {
  const url = new URL("/list", admin);
  return new Promise((resolve, reject) => {
    const get = url.protocol === "https:" ? httpsGet : httpGet;
    const headers: Record<string, string> = { accept: "application/json" };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    const req = get(url, { headers, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
      });
      res.on("end", () => {
        if (res.statusCode === 401)
          return reject(
            new Error(`${url}: 401 unauthorized (set --admin-token or TURNPIKE_ADMIN_TOKEN)`),
          );
        if (res.statusCode !== 200) return reject(new Error(`${url}: HTTP ${res.statusCode}`));
        try {
          resolve(JSON.parse(body));
        } catch {
          reject(new Error(`${url}: answer is not JSON`));
        }
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${url}: timed out`)));
    req.on("error", (err) => reject(new Error(`${url}: ${err.message}`)));
  });
}

const COLUMNS: Array<[string, (r: ListEntry) => string]> = [
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
  if (rows.length === 0) return "no exposed services\n";
  const cells = [COLUMNS.map(([h]) => h), ...rows.map((r) => COLUMNS.map(([, f]) => f(r)))];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return `${cells
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")}\n`;
}
