// Value parsers for the tunnel's own option shapes (the generic ones, integers, booleans and
// lists, are runtime-kit's). Each either returns the value or throws a ConfigError whose one
// line names where the value came from (`where`: a flag, an environment variable, the file).

import { readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { ConfigError, fail, one, type RawValue } from "@turnpike/runtime-kit";
import type { HostPort } from "./types.js";

export function parseSeconds(raw: RawValue, where: string, min: number, max: number): number {
  const text = one(raw, where).replace(/s$/, "");
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= max)) fail(where, `seconds ${min}..${max}`, text);
  return n;
}

/** HOST:PORT where HOST is an IPv4 address, [IPv6] or a name ("localhost"). */
function parseHostPort(text: string): HostPort | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  let host = m[1]!;
  if (host.startsWith("[")) {
    host = host.slice(1, -1);
    if (!isIPv6(host)) return undefined;
  } else if (!isIPv4(host) && !/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(host)) {
    return undefined;
  }
  const port = Number(m[2]);
  if (!(port >= 1 && port <= 65535)) return undefined;
  return { host, port };
}

export function parseListen(text: string, where: string): HostPort {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  const host = m?.[1]?.replace(/^\[|\]$/g, "");
  const port = Number(m?.[2]);
  if (
    !m ||
    host === undefined ||
    (!isIPv4(host) && !isIPv6(host)) ||
    !(port >= 0 && port <= 65535)
  ) {
    fail(where, "IP:PORT or [IPv6]:PORT", text);
  }
  return { host, port };
}

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** NAME=tcp://HOST:PORT or NAME=udp://HOST:PORT. */
export function parseExpose(
  text: string,
): { name: string; protocol: "tcp" | "udp"; target: HostPort } | { error: string } {
  const eq = text.indexOf("=");
  const name = eq < 0 ? "" : text.slice(0, eq).trim();
  const m = /^(tcp|udp):\/\/(.+?)\/?$/i.exec(eq < 0 ? "" : text.slice(eq + 1).trim());
  if (!SERVICE_NAME.test(name) || !m) {
    return { error: "NAME=tcp://HOST:PORT or NAME=udp://HOST:PORT (NAME: letters, digits, . _ -)" };
  }
  const target = parseHostPort(m[2]!);
  if (target === undefined) return { error: "a target HOST:PORT (IPv6 in brackets)" };
  return { name, protocol: m[1]!.toLowerCase() as "tcp" | "udp", target };
}

export function parseResolve(items: readonly string[], where: string): Map<string, string[]> {
  // Items arrive comma-split (env lists, or one flag "a=1.1.1.1,1.1.1.2"): an item without "="
  // adds an address to the name before it.
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const item of items.flatMap((i) => i.split(","))) {
    const eq = item.indexOf("=");
    let ip = item.trim();
    if (eq >= 0) {
      const name = item.slice(0, eq).trim().toLowerCase();
      if (name === "") fail(where, "NAME=IP[,IP...]", item);
      current = out.get(name) ?? [];
      out.set(name, current);
      ip = item.slice(eq + 1).trim();
    }
    if (current === undefined || (!isIPv4(ip) && !isIPv6(ip))) fail(where, "NAME=IP[,IP...]", item);
    current.push(ip);
  }
  return out;
}

/** The config file as JSON; any failure is one "not readable JSON" line. */
export function readConfigJson(path: string, where: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code ?? (err as Error).message.split("\n")[0];
    throw new ConfigError(`${where} file ${JSON.stringify(path)} is not readable JSON (${reason})`);
  }
}
