// The tunnel README's "Try it on one machine", run as written: its shell block, taken from the
// README itself, in one shell whose background commands (`cmd &`) are the relay, the service
// and the tunnel. Only the ports are moved (so that it runs next to other suites), and the
// background commands' output goes to a log (a terminal would show it). It must end with the
// service's answer, fetched through the relay's pinned port.

import { randomInt } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "@turnpike/test-support/ports";
import { type ManagedProcess, sleep, spawnManaged } from "@turnpike/test-support/process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandLines, markdownSection, repoText, shellBlocks } from "./docs.js";
import { cleanEnv, REPO } from "./launch.js";

const README = "packages/tunnel-client/README.md";

/** The walkthrough's commands, as a reader types them. */
function walkthrough(): string[] {
  const blocks = shellBlocks(markdownSection(repoText(README), "Try it on one machine"));
  expect(blocks).toHaveLength(1);
  return commandLines(blocks[0]!);
}

describe("the tunnel README's walkthrough on one machine", () => {
  let scratch: string;
  let shell: ManagedProcess | undefined;

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), "turnpike-walkthrough-"));
  });
  afterAll(async () => {
    // Everything the walkthrough started in the background (the relay, the service, the
    // tunnel) is in the shell's process group, as a terminal's jobs are.
    if (shell !== undefined) {
      for (const signal of ["SIGTERM", "SIGKILL"] as const) {
        try {
          process.kill(-shell.pid, signal);
        } catch {
          // the group is gone
        }
        await sleep(500);
      }
    }
    if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
  });

  it("mentions the relay's --allow-loopback-peers, and serves the private service through the pinned port", async () => {
    const lines = walkthrough();
    expect(
      lines.some((l) => l.includes("turnpike-relay ") && l.includes("--allow-loopback-peers")),
    ).toBe(true);
    // The pinned range stays below the relay's default range (49152-65535), as in the README:
    // another block of 100 whose port 7 is free now.
    const base = await pinnedBlock();
    const ports: Record<string, string> = {
      "127.0.0.1:3478": `127.0.0.1:${await freePort()}`,
      "127.0.0.1:8080": `127.0.0.1:${await freePort()}`,
      "40000-40099": `${base}-${base + 99}`,
      "40007": String(base + 7),
    };
    const service = await freePort();
    ports["127.0.0.1:8000"] = `127.0.0.1:${service}`;
    ports["listen(8000,"] = `listen(${service},`;
    let script = lines
      .map((l) => (l.endsWith(" &") ? `${l.slice(0, -2)} >>walkthrough.log 2>&1 &` : l))
      .join("\n");
    for (const [from, to] of Object.entries(ports)) {
      expect(script, from).toContain(from);
      script = script.replaceAll(from, to);
    }
    shell = spawnManaged("sh", ["-e", "-c", script], {
      cwd: scratch,
      detached: true,
      env: cleanEnv({
        PATH: `${join(REPO, "node_modules/.bin")}:${process.env.PATH}`,
        // The tunnel's default admin socket, and where `turnpike-tunnel list` looks for it.
        XDG_RUNTIME_DIR: scratch,
      }),
    });
    const exited = await Promise.race([shell.waitExit(), sleep(60_000).then(() => undefined)]);
    const log = () => readFileSync(join(scratch, "walkthrough.log"), "utf8");
    expect(exited, `${shell.stdout}${shell.stderr}\n--- background ---\n${log()}`).toEqual({
      code: 0,
      signal: null,
    });
    // `turnpike-tunnel list`, then the service's answer through the relay.
    expect(shell.stdout).toMatch(new RegExp(`\\bweb\\b.*127\\.0\\.0\\.1:${base + 7} +ready\\b`));
    expect(shell.stdout.trimEnd().endsWith("hello from the private service")).toBe(true);
    expect(log()).toContain("INFO tunnel ready");
  });
});

/** The first port of a block of 100 in 40000-48999 whose port 7 takes a TCP bind now. */
async function pinnedBlock(): Promise<number> {
  for (let tries = 0; tries < 20; tries++) {
    const base = 40_000 + 100 * randomInt(0, 90);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(false));
      s.listen(base + 7, "127.0.0.1", () => s.close(() => resolve(true)));
    });
    if (free) return base;
  }
  throw new Error("no free pinned port block below 49152");
}
