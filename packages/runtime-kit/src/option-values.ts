// Option values: the ConfigError every bad value becomes, and the parsers an option table's
// specs are written with. Each throws ConfigError with a single line naming `where` (the flag,
// the environment variable or the config file key the value came from).

import { readFileSync } from "node:fs";

/** A configuration error; `message` is one line naming the option. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export type Scalar = string | number | boolean;
/** What a source holds for one option: a scalar, or an array (repeated flag, env list, JSON). */
export type RawValue = Scalar | readonly Scalar[];

export function fail(where: string, expectation: string, raw: unknown): never {
  const shown = typeof raw === "string" ? raw : JSON.stringify(raw);
  throw new ConfigError(`${where} must be ${expectation}, got ${JSON.stringify(shown)}`);
}

/** The single value of a scalar option, trimmed. */
export function one(raw: RawValue, where: string): string {
  if (Array.isArray(raw)) {
    // A scalar option given twice on the command line: the last one wins, as usual for CLIs.
    const last = raw[raw.length - 1];
    if (last === undefined) fail(where, "a value", "");
    return one(last as Scalar, where);
  }
  return String(raw).trim();
}

/** The items of a repeatable option, trimmed; empty items are kept (and rejected by parse). */
export function list(raw: RawValue): string[] {
  const items = Array.isArray(raw) ? raw : [raw];
  return items.map((v) => String(v).trim());
}

/** The items of a repeatable option, trimmed, empty items dropped. */
export function listNonEmpty(raw: RawValue): string[] {
  return list(raw).filter((v) => v !== "");
}

export function nonEmpty(raw: RawValue, where: string): string {
  const text = one(raw, where);
  if (text === "") fail(where, "a non-empty string", text);
  return text;
}

/** A decimal integer in min..max (no sign, no exponent, no fraction). */
export function parseInteger(raw: RawValue, where: string, min: number, max: number): number {
  const text = one(raw, where);
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) fail(where, `${min}..${max}`, text);
  return n;
}

export function parseBoolean(raw: RawValue, where: string): boolean {
  if (typeof raw === "boolean") return raw;
  const text = one(raw, where).toLowerCase();
  if (text === "true" || text === "1" || text === "yes") return true;
  if (text === "false" || text === "0" || text === "no") return false;
  return fail(where, "true or false", text);
}

export function parseEnum<T extends string>(raw: RawValue, where: string, values: readonly T[]): T {
  const text = one(raw, where);
  if (!(values as readonly string[]).includes(text))
    fail(where, `one of ${values.join("|")}`, text);
  return text as T;
}

/** Reads a JSON config file; unreadable and unparsable files are told apart. */
export function readJsonFile(path: string, where: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "unreadable";
    throw new ConfigError(
      `${where} must be a readable file, got ${JSON.stringify(path)} (${code})`,
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    const reason = (err as Error).message.split("\n")[0];
    throw new ConfigError(`${where} file ${JSON.stringify(path)} is not valid JSON: ${reason}`);
  }
}
