// Value parsers for the relay's own shapes (the generic ones are runtime-kit's), and their
// formatting. Each parser throws ConfigError with a single line naming `where` the value came
// from (`--listen must be IP:PORT ..., got "x"`); none of them knows about other options.

import { accessSync, constants as fsConstants, readFileSync } from "node:fs";
import { isIPv4, isIPv6 } from "node:net";
import { ConfigError, fail, list, nonEmpty, type RawValue } from "@turnpike/runtime-kit";
import {
  type PortRange,
  type SocketAddress,
  type StaticUser,
  TEST_LIFETIME_NAMES,
  type TestLifetimes,
} from "./types.js";

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

// Revocation entries (relay-core's auth/revocation.ts): "static:NAME", "rest:USER",
// "rest:USER;port=P", "rest-expiry:E", or a plain NAME for all three kinds.
const REVOCATION_PREFIXES = ["static:", "rest:", "rest-expiry:"] as const;
const PIN = /;port=([^;]*)$/;

/** Why `entry` cannot be a revocation entry, or undefined when it can. */
export function revocationEntryProblem(entry: string): string | undefined {
  if (entry === "") return "an entry must not be empty";
  if (/\s/.test(entry)) return "an entry has no blanks inside (a comment starts with ' #')";
  const prefix = REVOCATION_PREFIXES.find((p) => entry.startsWith(p));
  const name = prefix === undefined ? entry : entry.slice(prefix.length);
  if (name === "") return `"${prefix}" needs a name after it`;
  if (prefix === "rest-expiry:" && !/^\d+$/.test(name)) {
    return '"rest-expiry:" takes the expiry of a TURN REST username without a user part (digits)';
  }
  const pin = PIN.exec(name);
  if (pin !== null) {
    const port = /^[1-9]\d{0,4}$/.test(pin[1]!) ? Number(pin[1]) : 0;
    if (!(port >= 1 && port <= 65535)) return "a pinned port must be 1..65535 (no leading zero)";
    if (pin.index === 0) return "a pinned entry needs a user before ';port='";
  }
  return undefined;
}

/** --revoke: every entry usable (an error names the first that is not). */
export function parseRevocationEntries(raw: RawValue, where: string): string[] {
  const entries = list(raw).filter((e) => e !== "");
  for (const entry of entries) {
    const problem = revocationEntryProblem(entry);
    if (problem !== undefined) fail(where, `a revocation entry (${problem})`, entry);
  }
  return entries;
}

export interface RevokeFile {
  readonly entries: readonly string[];
  /** One per line that could not be used (and was skipped). */
  readonly warnings: readonly string[];
}

/**
 * The entries of a --revoke-file: one per line, surrounding blanks trimmed; '#' starts a comment
 * at the start of a line or after a blank (`acme-web   # leaked key` revokes acme-web, while
 * `team#2` is a name). A line that is no usable entry is skipped with a warning, so that one
 * typo cannot cost the rest of the list. Throws ConfigError when the file cannot be read.
 */
export function readRevokeFile(path: string): RevokeFile {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(`--revoke-file ${JSON.stringify(path)} is not readable (${code})`);
  }
  const entries: string[] = [];
  const warnings: string[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/(^|\s)#.*$/, "").trim();
    if (line === "") return;
    const problem = revocationEntryProblem(line);
    if (problem === undefined) entries.push(line);
    else {
      warnings.push(
        `--revoke-file ${JSON.stringify(path)} line ${i + 1} ignored: ${problem}, got ${JSON.stringify(line)}`,
      );
    }
  });
  return { entries, warnings };
}

/** The revocation list in force: --revoke and the --revoke-file entries, each once. */
export function revocationList(config: {
  readonly revoke: readonly string[];
  readonly revokeFileEntries: readonly string[];
}): string[] {
  return [...new Set([...config.revoke, ...config.revokeFileEntries])];
}

/**
 * An instant as an ISO 8601 date ("2027-01-31": its start, UTC) or date-time with a zone
 * ("2027-01-31T12:00:00Z", "...+01:00"), in Unix seconds. A date-time without a zone is
 * refused: whose midnight would it be?
 */
export function parseInstant(raw: RawValue, where: string): number {
  const text = nonEmpty(raw, where);
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/.test(
    text,
  );
  const ms = iso ? Date.parse(text) : Number.NaN;
  if (!Number.isFinite(ms)) {
    fail(where, "an ISO 8601 date (2027-01-31) or date-time with a zone (2027-01-31T12:00Z)", text);
  }
  return Math.floor(ms / 1000);
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

/** `defaultAllocation=2,permission=3`: relay-core lifetimes in seconds (the test hook). */
export function parseTestLifetimes(items: readonly string[], where: string): TestLifetimes {
  const out: Record<string, number> = {};
  for (const item of items) {
    const [name, value] = item.split("=");
    const seconds = Number(value);
    if (
      !(TEST_LIFETIME_NAMES as readonly (string | undefined)[]).includes(name) ||
      !Number.isInteger(seconds) ||
      seconds < 1
    ) {
      fail(where, `NAME=SECONDS with NAME one of ${TEST_LIFETIME_NAMES.join(", ")}`, item);
    }
    out[name!] = seconds;
  }
  return out;
}

/** The secrets of --token / TURNPIKE_TOKEN: no empty entry, none twice (by position only). */
export function parseSecretList(raw: RawValue, where: string): string[] {
  const items = list(raw);
  const empty = items.indexOf("");
  if (empty >= 0) {
    throw new ConfigError(
      `${where} has an empty entry (item ${empty + 1} of ${items.length}): remove the stray separator`,
    );
  }
  refuseRepeats(
    items,
    (first, again) => `${where} lists one secret twice (items ${first} and ${again})`,
  );
  return items;
}

/** Throws `message(first, again)` (1-based positions) for the first item seen twice. */
export function refuseRepeats(
  items: readonly string[],
  message: (first: number, again: number) => string,
) {
  const seen = new Map<string, number>();
  items.forEach((item, i) => {
    const first = seen.get(item);
    if (first !== undefined) throw new ConfigError(message(first + 1, i + 1));
    seen.set(item, i);
  });
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
