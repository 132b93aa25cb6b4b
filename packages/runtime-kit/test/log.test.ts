import { describe, expect, it } from "vitest";
import { isoTime } from "../src/log.js";
import { textLines } from "./text-lines.js";

describe("text log lines", () => {
  it("render a list of plain values comma-separated, as TURNPIKE_* lists are written", () => {
    const { lines, logger } = textLines();
    logger.info("relayed", { relayed: ["192.0.2.1:5000", "192.0.2.1:5001"], ports: [3478, 5349] });
    expect(lines).toEqual([
      "2026-11-23T10:00:00.000Z INFO relayed relayed=192.0.2.1:5000,192.0.2.1:5001 ports=3478,5349",
    ]);
  });

  it("render an empty list as [] and IPv6 addresses as they are", () => {
    const { lines, logger } = textLines();
    logger.info("peers", { peers: [], v6: ["[2001:db8::1]:3478", "::1"] });
    expect(lines[0]).toBe("2026-11-23T10:00:00.000Z INFO peers peers=[] v6=[2001:db8::1]:3478,::1");
  });

  it("fall back to quoted JSON where commas would make a list ambiguous", () => {
    const { lines, logger } = textLines();
    logger.info("names", { names: ["a,b", "c"], mixed: [{ a: 1 }], spaced: ["x y"] });
    expect(lines[0]).toBe(
      '2026-11-23T10:00:00.000Z INFO names names="[\\"a,b\\",\\"c\\"]" mixed="[{\\"a\\":1}]" spaced="[\\"x y\\"]"',
    );
  });
});

describe("the log level", () => {
  it("changes at run time for the logger, its children and its parent alike", () => {
    const { lines, logger } = textLines();
    const child = logger.child({ worker: 1 });
    child.debug("hidden");
    logger.setLevel("debug");
    child.debug("shown");
    expect(logger.enabled("debug")).toBe(true);
    child.setLevel("warn");
    logger.info("hidden too");
    logger.warn("still shown");
    expect(lines.map((l) => l.split(" ").slice(1, 3).join(" "))).toEqual([
      "DEBUG shown",
      "WARN still",
    ]);
  });
});

describe("log timestamps", () => {
  it("are what toISOString writes, for every field width and outside four-digit years", () => {
    const samples = [
      0,
      Date.UTC(2026, 11, 7, 0, 5, 9, 7),
      Date.UTC(1999, 0, 1, 23, 59, 59, 999),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      Date.UTC(10000, 0, 1),
      Date.UTC(-1, 5, 15, 12),
      Date.UTC(45, 1, 3, 4, 5, 6, 80),
    ];
    for (const ms of samples) {
      const date = new Date(ms);
      expect(isoTime(date), String(ms)).toBe(date.toISOString());
    }
  });
});
