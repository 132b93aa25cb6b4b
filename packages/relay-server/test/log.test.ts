import { createLogger } from "@turnpike/runtime-kit";
import { describe, expect, it } from "vitest";

const fixedNow = () => new Date("2026-11-23T10:00:00.000Z");

function capture(level: "error" | "warn" | "info" | "debug", format: "json" | "text") {
  const lines: string[] = [];
  const logger = createLogger({ level, format, now: fixedNow, write: (l) => lines.push(l) });
  return { lines, logger };
}

describe("logger", () => {
  it("writes one JSON object per line with time, level, msg and fields", () => {
    const { lines, logger } = capture("info", "json");
    logger.info("listening", { udp: "127.0.0.1:3478", count: 2 });
    expect(lines).toEqual([
      '{"time":"2026-11-23T10:00:00.000Z","level":"info","msg":"listening","udp":"127.0.0.1:3478","count":2}',
    ]);
  });

  it("writes text lines as `time LEVEL msg key=value`, quoting values with spaces", () => {
    const { lines, logger } = capture("info", "text");
    logger.warn("peer denied", {
      peer: "10.0.0.1:9",
      reason: "private address",
      n: 3,
      skip: undefined,
    });
    expect(lines).toEqual([
      '2026-11-23T10:00:00.000Z WARN peer denied peer=10.0.0.1:9 reason="private address" n=3',
    ]);
  });

  it("keeps every line on one line even when a field holds a newline or an Error", () => {
    const { lines, logger } = capture("debug", "text");
    logger.error("failed", { err: new Error("boom\nsecond line"), note: "a\nb" });
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("\n");
    expect(lines[0]).toContain('err="boom\\nsecond line"');
  });

  it("serializes an Error in JSON with its message and stack", () => {
    const { lines, logger } = capture("info", "json");
    logger.error("failed", { err: new Error("boom") });
    const record = JSON.parse(lines[0] ?? "{}");
    expect(record.err.message).toBe("boom");
    expect(record.err.stack).toContain("Error: boom");
  });

  it("drops lines below the configured level", () => {
    const { lines, logger } = capture("warn", "text");
    logger.debug("d");
    logger.info("i");
    logger.warn("w");
    logger.error("e");
    expect(lines.map((l) => l.split(" ")[1])).toEqual(["WARN", "ERROR"]);
    expect(logger.enabled("info")).toBe(false);
    expect(logger.enabled("error")).toBe(true);
  });

  it("adds a child's fields to every line and lets the call's fields win", () => {
    const { lines, logger } = capture("info", "json");
    const child = logger.child({ component: "udp", listener: "a" });
    child.info("bound", { listener: "b" });
    expect(JSON.parse(lines[0] ?? "{}")).toMatchObject({
      component: "udp",
      listener: "b",
      msg: "bound",
    });
  });

  it("rate-limits per key and reports how many lines it suppressed", () => {
    const { lines, logger } = capture("info", "text");
    let clock = 0;
    const limited = logger.rateLimited({ perWindow: 2, windowMs: 60_000, clock: () => clock });
    for (let i = 0; i < 5; i++) limited.warn("malformed", "malformed datagram", { i });
    limited.warn("other-key", "another event");
    expect(lines).toHaveLength(3);
    clock = 60_001;
    limited.warn("malformed", "malformed datagram", { i: 99 });
    expect(lines).toHaveLength(5);
    expect(lines[3]).toContain("suppressed repeated log lines key=malformed suppressed=3");
    expect(lines[4]).toContain("malformed datagram i=99");
  });

  it("emits pending suppression summaries on flush", () => {
    const { lines, logger } = capture("info", "json");
    const limited = logger.rateLimited({ perWindow: 1, clock: () => 0 });
    limited.warn("k", "m");
    limited.warn("k", "m");
    limited.warn("k", "m");
    limited.flush();
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ msg: "m" }),
      expect.objectContaining({ msg: "suppressed repeated log lines", key: "k", suppressed: 2 }),
    ]);
  });
});
