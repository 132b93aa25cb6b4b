// Value parsers for the relay's own shapes (the generic ones are runtime-kit's), and their
// formatting. Each parser throws ConfigError with a single line naming `where` the value came
// from (`--listen must be IP:PORT ..., got "x"`); none of them knows about other options.

import { accessSync, constants as fsConstants, readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { ConfigError, fail, nonEmpty, type RawValue } from "@turnpike/runtime-kit";
import type { PortRange, SocketAddress, StaticUser } from "./types.js";

export function readablePath(raw: RawValue, where: string): string {
  const path = nonEmpty(raw, where);
  try {
    accessSync(path, fsConstants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(
      `${where} must be a readable file, got ${JSON.stringify(path)} (${code})`,
    );
  }
  return path;
}

export function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || (ip.includes(":") && /^[0:]+$/.test(ip));
}

export function parseIp(
  text: string,
  where: string,
  opts: { family?: 4 | 6; allowUnspecified?: boolean },
): string {
  const ip = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const family = isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  if (family === 0 || (opts.family !== undefined && family !== opts.family)) {
    fail(where, opts.family === undefined ? "an IP address" : `an IPv${opts.family} address`, text);
  }
  if (opts.allowUnspecified === false && isUnspecified(ip)) {
    fail(where, "a specific (not unspecified) IP address", text);
  }
  return family === 6 ? ip.toLowerCase() : ip;
}

/** Parses `IP:PORT` or `[IPv6]:PORT`. */
export function parseSocketAddress(text: string, where: string, minPort: 0 | 1): SocketAddress {
  const expectation = `IP:PORT or [IPv6]:PORT with port ${minPort}..65535`;
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") fail(where, expectation, text);
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6(host)) fail(where, expectation, text);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) fail(where, expectation, text);
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    // A bare IPv6 address with a port is ambiguous ("::1:3478"); insist on brackets.
    if (!isIPv4(host)) fail(where, expectation, text);
  }
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
  if (!(port >= minPort && port <= 65535)) fail(where, expectation, text);
  return isIPv4(host) ? { ip: host, port, family: 4 } : { ip: host.toLowerCase(), port, family: 6 };
}

/** A local sanity check only: relay-core's PeerAddressPolicy parses the CIDR again. */
export function parseCidr(text: string, where: string): string {
  const slash = text.lastIndexOf("/");
  const ipText = slash < 0 ? text : text.slice(0, slash);
  const ip = ipText.startsWith("[") && ipText.endsWith("]") ? ipText.slice(1, -1) : ipText;
  const family = isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  const prefixText = slash < 0 ? undefined : text.slice(slash + 1);
  const max = family === 4 ? 32 : 128;
  const prefixOk =
    prefixText === undefined ||
    (/^(0|[1-9]\d{0,2})$/.test(prefixText) && Number(prefixText) <= max);
  if (family === 0 || !prefixOk) fail(where, "a CIDR like 10.0.0.0/8 or fd00::/8", text);
  return text;
}

export function parsePortRange(text: string, where: string, lowest = 1): PortRange {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text.trim());
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (m === null || !(min >= lowest && max <= 65535 && min <= max)) {
    fail(where, `MIN-MAX with ${lowest} <= MIN <= MAX <= 65535`, text);
  }
  return { min, max };
}

/**
 * The users in a --revoke-file: one per line, surrounding blanks trimmed, empty lines and lines
 * starting with '#' skipped. Throws ConfigError when the file cannot be read.
 */
export function readRevokeFile(path: string): string[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`--revoke-file ${JSON.stringify(path)} is not readable (${code})`);
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

export function parseUser(text: string, where: string): StaticUser {
  const colon = text.indexOf(":");
  if (colon <= 0 || colon === text.length - 1) fail(where, "NAME:PASSWORD", redactUser(text));
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

// Never echo a password back into logs or terminals.
function redactUser(text: string): string {
  const colon = text.indexOf(":");
  return colon < 0 ? text : `${text.slice(0, colon)}:***`;
}

export function formatSocketAddress(a: { ip: string; port: number; family?: 4 | 6 }): string {
  return a.ip.includes(":") ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/** A row's id: the engine's allocation id qualified by its worker's index ("0-17"). */
export function allocationRowId(worker: number, allocation: number): string {
  return `${worker}-${allocation}`;
}

/** The worker and allocation a row id names, or undefined when it names none. */
export function parseAllocationRowId(
  id: string,
): { readonly worker: number; readonly allocation: number } | undefined {
  const m = /^(\d{1,3})-(\d{1,15})$/.exec(id);
  return m === null ? undefined : { worker: Number(m[1]), allocation: Number(m[2]) };
}
