// A tiny structured logger with no dependency: one line per event on stderr, either JSON
// (one object per line, for log shippers) or text (for people). It serves turnpike-relay and
// turnpike-tunnel alike. Nothing logs per packet at info; per-event warnings that bad traffic
// can trigger go through a rate-limited logger so a flood cannot turn into a log flood.

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["json", "text"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type LogFields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  /** True when a line at `level` would be written (guard for costly field building). */
  enabled(level: LogLevel): boolean;
  /** A logger that adds `fields` to every line (the child's own fields win on conflict). */
  child(fields: LogFields): Logger;
  /**
   * Change the least severe level written, for this logger, its children and its parent alike
   * (they share one sink): a configuration reload (turnpike-relay's SIGHUP).
   */
  setLevel(level: LogLevel): void;
  /** A logger for per-event warnings: at most `perWindow` lines per key per window, then a summary. */
  rateLimited(options?: RateLimitOptions): RateLimitedLogger;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Where a finished line goes (without the trailing newline). Default: process.stderr. */
  write?: (line: string) => void;
  /** Wall clock, injectable for tests. */
  now?: () => Date;
  fields?: LogFields;
}

export interface RateLimitOptions {
  /** Lines per key per window before suppression. Default 10. */
  perWindow?: number;
  /** Window length in ms. Default 60000 (a minute). */
  windowMs?: number;
  /** Monotonic clock in ms. Default performance.now. */
  clock?: () => number;
}

export interface RateLimitedLogger {
  /**
   * Log under `key` (e.g. "malformed-stun") unless that key already used its lines in the current
   * window; suppressed lines are counted and reported as one `suppressed` line later.
   */
  warn(key: string, msg: string, fields?: LogFields): void;
  info(key: string, msg: string, fields?: LogFields): void;
  debug(key: string, msg: string, fields?: LogFields): void;
  /** Emit the pending "suppressed K" summaries now (e.g. at shutdown). */
  flush(): void;
}

const LEVEL_RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(options: LoggerOptions = {}): Logger {
  const sink: Sink = {
    rank: LEVEL_RANK[options.level ?? "info"],
    format: options.format ?? "text",
    write: options.write ?? ((line) => process.stderr.write(`${line}\n`)),
    now: options.now ?? (() => new Date()),
  };
  return makeLogger(sink, options.fields ?? {});
}

/**
 * `date.toISOString()`, spelled out from its UTC fields. V8's own toISOString pages in ~8 MB of
 * the node binary on its first call (measured on Node 22.23: a bare node goes from 73 to 81 MB
 * RSS), and every log line has a timestamp (bench/README.md, "Footprint").
 */
export function isoTime(date: Date): string {
  const year = date.getUTCFullYear();
  // Years toISOString writes with six digits and a sign: as it does.
  if (year < 0 || year > 9999) return date.toISOString();
  return `${pad(year, 4)}-${pad(date.getUTCMonth() + 1, 2)}-${pad(date.getUTCDate(), 2)}T${pad(date.getUTCHours(), 2)}:${pad(date.getUTCMinutes(), 2)}:${pad(date.getUTCSeconds(), 2)}.${pad(date.getUTCMilliseconds(), 3)}Z`;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, "0");
}

interface Sink {
  rank: number;
  format: LogFormat;
  write: (line: string) => void;
  now: () => Date;
}

function makeLogger(sink: Sink, base: LogFields): Logger {
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVEL_RANK[level] > sink.rank) return;
    const all = fields === undefined ? base : { ...base, ...fields };
    const time = isoTime(sink.now());
    sink.write(
      sink.format === "json"
        ? formatJson(time, level, msg, all)
        : formatText(time, level, msg, all),
    );
  };
  const logger: Logger = {
    error: (msg, fields) => emit("error", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    debug: (msg, fields) => emit("debug", msg, fields),
    enabled: (level) => LEVEL_RANK[level] <= sink.rank,
    child: (fields) => makeLogger(sink, { ...base, ...fields }),
    setLevel: (level) => {
      sink.rank = LEVEL_RANK[level];
    },
    rateLimited: (rateOptions) => createRateLimited(logger, rateOptions),
  };
  return logger;
}

function formatJson(time: string, level: LogLevel, msg: string, fields: LogFields): string {
  const record: Record<string, unknown> = { time, level, msg };
  for (const [key, value] of Object.entries(fields)) {
    // The three envelope keys stay authoritative.
    if (key === "time" || key === "level" || key === "msg") continue;
    record[key] = jsonValue(value);
  }
  try {
    return JSON.stringify(record);
  } catch {
    // A circular structure or a BigInt must not kill the process that is trying to log.
    return JSON.stringify({ time, level, msg, logError: "fields not serializable" });
  }
}

function jsonValue(value: unknown): unknown {
  if (value instanceof Error) {
    return { name: value.name, message: value.message, stack: value.stack };
  }
  if (typeof value === "bigint") return value.toString();
  return value;
}

function formatText(time: string, level: LogLevel, msg: string, fields: LogFields): string {
  let line = `${time} ${level.toUpperCase()} ${msg}`;
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    line += ` ${key}=${textValue(value)}`;
  }
  return line;
}

function textValue(value: unknown): string {
  let text: string;
  if (value instanceof Error) text = value.message;
  else if (typeof value === "string") text = value;
  else if (typeof value === "bigint") text = value.toString();
  else if (Array.isArray(value) && value.every(isListItem)) {
    // `relayed=192.0.2.1:5000,192.0.2.1:5001`, as TURNPIKE_* lists are written; `[]` if empty.
    text = value.length === 0 ? "[]" : value.join(",");
  } else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  // Quote anything that would break `key=value` splitting or the one-line rule.
  return text === "" || /[\s"=]/.test(text) ? JSON.stringify(text) : text;
}

/** An array item that reads unambiguously in a comma-separated list (else: JSON). */
function isListItem(item: unknown): boolean {
  const t = typeof item;
  if (t !== "string" && t !== "number" && t !== "boolean" && t !== "bigint") return false;
  const text = String(item);
  return text !== "" && !/[\s"=,]/.test(text);
}

interface KeyWindow {
  windowStart: number;
  emitted: number;
  suppressed: number;
  level: "warn" | "info" | "debug";
  msg: string;
}

const MAX_KEYS = 1024;

function createRateLimited(logger: Logger, options: RateLimitOptions = {}): RateLimitedLogger {
  const perWindow = options.perWindow ?? 10;
  const windowMs = options.windowMs ?? 60_000;
  const clock = options.clock ?? (() => performance.now());
  const windows = new Map<string, KeyWindow>();
  let timer: NodeJS.Timeout | undefined;

  const summarize = (key: string, w: KeyWindow): void => {
    if (w.suppressed === 0) return;
    logger[w.level]("suppressed repeated log lines", {
      key,
      suppressed: w.suppressed,
      lastMsg: w.msg,
      windowSeconds: windowMs / 1000,
    });
    w.suppressed = 0;
  };

  const flush = (): void => {
    for (const [key, w] of windows) summarize(key, w);
    windows.clear();
    if (timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  // Summaries of a burst that stopped must still appear, so while something is suppressed a
  // timer (unref'd: it never keeps the process alive) rolls the windows over.
  const armTimer = (): void => {
    if (timer !== undefined) return;
    timer = setInterval(() => {
      const now = clock();
      for (const [key, w] of windows) {
        if (now - w.windowStart >= windowMs) {
          summarize(key, w);
          windows.delete(key);
        }
      }
      if (windows.size === 0 && timer !== undefined) {
        clearInterval(timer);
        timer = undefined;
      }
    }, windowMs);
    timer.unref();
  };

  const log = (level: KeyWindow["level"], key: string, msg: string, fields?: LogFields): void => {
    if (!logger.enabled(level)) return;
    const now = clock();
    // Keys should be a small fixed set; if a caller derives them from traffic, cap the table
    // rather than let an attacker grow it.
    if (windows.size >= MAX_KEYS && !windows.has(key)) key = "(other)";
    let w = windows.get(key);
    if (w !== undefined && now - w.windowStart >= windowMs) {
      summarize(key, w);
      w = undefined;
    }
    if (w === undefined) {
      w = { windowStart: now, emitted: 0, suppressed: 0, level, msg };
      windows.set(key, w);
    }
    if (w.emitted < perWindow) {
      w.emitted++;
      logger[level](msg, fields);
      return;
    }
    w.suppressed++;
    w.msg = msg;
    armTimer();
  };

  return {
    warn: (key, msg, fields) => log("warn", key, msg, fields),
    info: (key, msg, fields) => log("info", key, msg, fields),
    debug: (key, msg, fields) => log("debug", key, msg, fields),
    flush,
  };
}
