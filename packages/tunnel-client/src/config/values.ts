// Value parsers for the tunnel's own option shapes (the generic ones, integers, booleans and
// lists, are runtime-kit's). Each either returns the value or throws a ConfigError whose one
// line names where the value came from (`where`: a flag, an environment variable, the file).

import { readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { isAbsolute } from "node:path";
import { ConfigError, fail, one, type RawValue } from "@turnpike/runtime-kit";
import { parseTargetHost } from "../targets.js";
import type { AdminListen, HostPort } from "./types.js";

export function parseSeconds(raw: RawValue, where: string, min: number, max: number): number {
  const text = one(raw, where).replace(/s$/, "");
  const n = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= max)) fail(where, `seconds ${min}..${max}`, text);
  return n;
}

/**
 * HOST:PORT where HOST is an IPv4 address (any form getaddrinfo reads as one), [IPv6] (a zone id
 * included) or a DNS name, as the socket layer will read it (targets.ts).
 */
function parseHostPort(text: string): HostPort | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const bracketed = m[1]!.startsWith("[");
  const host = bracketed ? m[1]!.slice(1, -1) : m[1]!;
  const parsed = parseTargetHost(host);
  if (parsed === undefined) return undefined;
  // Brackets hold an IPv6 literal, and only brackets do (RFC 3986 §3.2.2).
  if (bracketed !== (parsed.kind === "address" && parsed.ip.family === 6)) return undefined;
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

/** --admin-listen: "off", unix:PATH (an absolute path), or IP:PORT / [IPv6]:PORT. */
export function parseAdminListen(text: string, where: string): AdminListen | null {
  if (text === "off") return null;
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (!isAbsolute(path)) fail(where, "unix:/ABSOLUTE/PATH", text);
    return { path };
  }
  return parseListen(text, where);
}

/** `text` as an http:// or https:// URL, or undefined. */
export function httpUrl(text: string): URL | undefined {
  try {
    const u = new URL(text);
    return u.protocol === "http:" || u.protocol === "https:" ? u : undefined;
  } catch {
    return undefined;
  }
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
