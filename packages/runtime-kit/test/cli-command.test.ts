import { describe, expect, it } from "vitest";
import { cliCommand } from "../src/cli-command.js";

/** A file system holding only `files`. */
const holding =
  (...files: string[]) =>
  (path: string) =>
    files.includes(path);

describe("the command a CLI prints for running it again", () => {
  it("is `pnpm exec` in a clone of the repository (a pnpm workspace)", () => {
    const exists = holding("/src/turnpike/pnpm-workspace.yaml");
    for (const script of [
      "/src/turnpike/node_modules/@turnpike/relay-server/bin/turnpike-relay.js",
      "/src/turnpike/packages/relay-server/bin/turnpike-relay.js",
    ]) {
      expect(cliCommand("turnpike-relay", script, exists)).toBe("pnpm exec turnpike-relay");
    }
  });

  it("is the prefix's bin after an npm install, local or global", () => {
    const exists = holding(
      "/opt/turnpike/node_modules/.bin/turnpike-relay",
      "/usr/local/bin/turnpike-relay",
    );
    for (const script of [
      "/opt/turnpike/node_modules/.bin/turnpike-relay",
      "/opt/turnpike/node_modules/@turnpike/relay-server/bin/turnpike-relay.js",
    ]) {
      expect(cliCommand("turnpike-relay", script, exists)).toBe(
        "/opt/turnpike/node_modules/.bin/turnpike-relay",
      );
    }
    expect(
      cliCommand(
        "turnpike-relay",
        "/usr/local/lib/node_modules/@turnpike/relay-server/bin/turnpike-relay.js",
        exists,
      ),
    ).toBe("/usr/local/bin/turnpike-relay");
  });

  it("is node and the script elsewhere (the container's /app), the name without a script", () => {
    expect(cliCommand("turnpike-relay", "/app/bin/turnpike-relay.js", holding())).toBe(
      "node /app/bin/turnpike-relay.js",
    );
    expect(cliCommand("turnpike-relay", undefined, holding())).toBe("turnpike-relay");
  });

  it("finds this workspace for a script in it", () => {
    expect(cliCommand("turnpike-relay", new URL(import.meta.url).pathname)).toBe(
      "pnpm exec turnpike-relay",
    );
  });
});
