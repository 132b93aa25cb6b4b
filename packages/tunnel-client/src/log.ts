// A small structured logger: one line per event on stderr, JSON (for log shippers) or text (for
// people). Nothing logs per packet; per-connection lines are debug.
import type { LogFormat, LogLevel } from "./config.js";

export type LogFields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(
  options: { level?: LogLevel; format?: LogFormat; write?: (line: string) => void } = {},
): Logger {
  const rank = RANK[options.level ?? "info"];
  const format = options.format ?? "text";
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const make = (base: LogFields): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
      if (RANK[level] > rank) return;
      const all = fields === undefined ? base : { ...base, ...fields };
      const time = new Date().toISOString();
      write(format === "json" ? json(time, level, msg, all) : text(time, level, msg, all));
    };
    return {
      error: (m, f) => emit("error", m, f),
      warn: (m, f) => emit("warn", m, f),
      info: (m, f) => emit("info", m, f),
      debug: (m, f) => emit("debug", m, f),
      child: (f) => make({ ...base, ...f }),
    };
  };
  return make({});
}

function plain(v: unknown): unknown {
  return v instanceof Error ? v.message : v;
}

function json(time: string, level: string, msg: string, fields: LogFields): string {
  const rec: Record<string, unknown> = { time, level, msg };
  for (const [k, v] of Object.entries(fields)) if (!(k in rec)) rec[k] = plain(v);
  try {
    return JSON.stringify(rec);
  } catch {
    return JSON.stringify({ time, level, msg });
  }
}

function text(time: string, level: string, msg: string, fields: LogFields): string {
  let line = `${time} ${level.toUpperCase()} ${msg}`;
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue;
    const p = plain(v);
    const s = typeof p === "string" ? p : (JSON.stringify(p) ?? String(p));
    line += ` ${k}=${s === "" || /[\s"=]/.test(s) ? JSON.stringify(s) : s}`;
  }
  return line;
}
