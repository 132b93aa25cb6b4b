import { createLogger, type Logger } from "../src/log.js";

/** A text-format logger at a fixed time whose lines are collected in `lines`. */
export function textLines(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const logger = createLogger({
    format: "text",
    now: () => new Date("2026-11-23T10:00:00.000Z"),
    write: (l) => lines.push(l),
  });
  return { lines, logger };
}
