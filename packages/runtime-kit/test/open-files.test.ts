import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { openFilesLimit } from "../src/open-files.js";

const LIMITS = [
  "Limit                     Soft Limit           Hard Limit           Units     ",
  "Max processes             63412                63412                processes ",
  "Max open files            1024                 4096                 files     ",
].join("\n");

describe("the open-file limit", () => {
  it("reads the soft limit from /proc/self/limits' text", () => {
    expect(openFilesLimit(() => LIMITS)).toBe(1024);
  });

  it("has no limit where it is unlimited, unreadable or not printed", () => {
    expect(openFilesLimit(() => LIMITS.replace("1024 ", "unlimited "))).toBeUndefined();
    expect(
      openFilesLimit(() => {
        throw new Error("ENOENT");
      }),
    ).toBeUndefined();
    expect(openFilesLimit(() => LIMITS.split("\n").slice(0, 2).join("\n"))).toBeUndefined();
  });

  it.runIf(process.platform === "linux")(
    "reads this process's limit as the kernel reports it (prlimit(1))",
    () => {
      const soft = execFileSync(
        "prlimit",
        ["--pid", String(process.pid), "--nofile", "--noheadings", "--raw", "-o", "SOFT"],
        { encoding: "utf8" },
      ).trim();
      expect(openFilesLimit()).toBe(soft === "unlimited" ? undefined : Number(soft));
    },
  );
});
