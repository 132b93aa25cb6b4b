// `turnpike-relay allocations`: the client of the discovery API (discovery.ts) that the
// operator runs next to a relay: GET the live allocations and print them as a table (or
// --json), or DELETE a user's or one by id.

import { nodeHttp, nodeHttps, renderTextTable, type TextColumn } from "@turnpike/runtime-kit";
import { PROGRAM_NAME } from "./config/options.js";
import type { AllocationsCommand } from "./config/types.js";
import { type AllocationRow, DISCOVERY_PATH, type EndAllocations } from "./discovery.js";

/** Runs the command: what it prints goes to `stdout`, why it failed to `stderr`; the exit code. */
export async function runAllocationsCommand(
  command: AllocationsCommand,
  stdout: (text: string) => void,
  stderr: (line: string) => void,
): Promise<number> {
  try {
    if (command.end !== undefined) {
      const ended = await deleteAllocations(command.url, command.adminToken, command.end);
      stdout(
        command.json
          ? `${JSON.stringify({ ended })}\n`
          : `ended ${ended} allocation${ended === 1 ? "" : "s"}\n`,
      );
      return 0;
    }
    const rows = await fetchAllocations(command.url, command.adminToken, command.user);
    stdout(
      command.json
        ? `${JSON.stringify({ allocations: rows }, null, 2)}\n`
        : renderAllocationsTable(rows),
    );
    return 0;
  } catch (err) {
    stderr(`${PROGRAM_NAME} allocations: ${(err as Error).message}`);
    return 1;
  }
}

/** GET `base`/v1/allocations[?user=] with the bearer token; bounded (10 s, 16 MiB). */
export async function fetchAllocations(
  base: string,
  token: string,
  user: string | undefined,
  timeoutMs = 10_000,
): Promise<AllocationRow[]> {
  const url = new URL(DISCOVERY_PATH, base);
  if (user !== undefined) url.searchParams.set("user", user);
  const body = await adminCall("GET", url, token, timeoutMs);
  if (!Array.isArray(body.allocations))
    throw new Error(`${shownUrl(url)}: no allocations in the answer`);
  return body.allocations as AllocationRow[];
}

/** DELETE a user's allocations or one by id; resolves with how many ended. */
export async function deleteAllocations(
  base: string,
  token: string,
  which: EndAllocations,
  timeoutMs = 10_000,
): Promise<number> {
  const url =
    "id" in which
      ? new URL(`${DISCOVERY_PATH}/${encodeURIComponent(which.id)}`, base)
      : new URL(DISCOVERY_PATH, base);
  if ("user" in which) url.searchParams.set("user", which.user);
  const body = await adminCall("DELETE", url, token, timeoutMs);
  if (typeof body.ended !== "number") throw new Error(`${shownUrl(url)}: no count in the answer`);
  return body.ended;
}

function shownUrl(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

/** One request to the discovery API with the bearer token: its JSON answer, or why not. */
function adminCall(
  method: "GET" | "DELETE",
  url: URL,
  token: string,
  timeoutMs: number,
): Promise<{ allocations?: unknown; ended?: unknown }> {
  const shown = shownUrl(url);
  return new Promise((resolve, reject) => {
    const call = url.protocol === "https:" ? nodeHttps().request : nodeHttp().request;
    const headers = { accept: "application/json", authorization: `Bearer ${token}` };
    const req = call(url, { method, headers, timeout: timeoutMs }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => {
        body += c;
        if (body.length > 16 << 20) req.destroy(new Error(`${shown}: answer too large`));
      });
      res.on("end", () => {
        let parsed: { allocations?: unknown; ended?: unknown; error?: unknown } | undefined;
        try {
          parsed = JSON.parse(body);
        } catch {
          parsed = undefined;
        }
        if (res.statusCode !== 200 || parsed === undefined) {
          const why = typeof parsed?.error === "string" ? `: ${parsed.error}` : "";
          return reject(new Error(`${shown}: HTTP ${res.statusCode}${why}`));
        }
        resolve(parsed);
      });
    });
    req.on("timeout", () => req.destroy(new Error(`${shown}: timed out`)));
    req.on("error", (err) => reject(new Error(`${shown}: ${err.message}`)));
    req.end();
  });
}

const COLUMNS: readonly TextColumn<AllocationRow>[] = [
  ["ID", (r) => r.id],
  ["USER", (r) => r.user || "-"],
  ["PIN", (r) => (r.pinnedPort === null ? "-" : String(r.pinnedPort))],
  ["TRANSPORT", (r) => r.transport],
  ["RELAYED ADDRESS", (r) => (r.relayedAddresses.length ? r.relayedAddresses.join(",") : "-")],
  ["CLIENT", (r) => `${r.clientTransport}:${r.clientAddress}`],
  ["PEERS", (r) => (r.peers.length === 0 ? "-" : r.peers.join(","))],
  ["CREATED", (r) => r.createdAt],
  ["EXPIRES", (r) => r.expiresAt],
];

export function renderAllocationsTable(rows: readonly AllocationRow[]): string {
  return renderTextTable(COLUMNS, rows, "no allocations");
}
