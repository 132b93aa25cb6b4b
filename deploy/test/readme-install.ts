// The README's npm install commands ("Installing the npm packages"), run as written against
// freshly packed tarballs: the only substitution is where /opt is on this machine. npm runs on
// the Node line under test (first on PATH in outsideEnv) and talks to the usual registry for
// the public dependencies only: the commands themselves point the @turnpike scope at a closed
// port, which checkScopePinned verifies before anything runs.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { commandLines, markdownSection, repoText, runShell, shellBlocks } from "./docs.js";
import { outsideEnv } from "./launch.js";
import { pack, withWorkspaceDependencies } from "./pack.js";

export type Cli = "turnpike-relay" | "turnpike-tunnel";

/** Where the README installs each CLI. */
export const INSTALL_PREFIX: Record<Cli, string> = {
  "turnpike-relay": "/opt/turnpike",
  "turnpike-tunnel": "/opt/turnpike-tunnel",
};

/** The README's install block for `cli`: the sh block that runs its installed bin. */
export function readmeInstallBlock(cli: Cli): string[] {
  const section = markdownSection(repoText("README.md"), "Installing the npm packages");
  const block = shellBlocks(section).find((b) =>
    b.some((l) => l.includes(`${INSTALL_PREFIX[cli]}/node_modules/.bin/${cli}`)),
  );
  if (block === undefined) throw new Error(`README: no install block for ${cli}`);
  return commandLines(block);
}

/** The lines of a block (or unit header) that install: the prefix, its .npmrc, npm install. */
export function installLines(lines: readonly string[]): string[] {
  return lines.filter(
    (l) => /^install -d \/opt\//.test(l) || /\.npmrc\b/.test(l) || /^npm install /.test(l),
  );
}

/**
 * Throws unless `lines` write `@turnpike:registry=<loopback URL>` into the prefix's .npmrc
 * before the first npm install: otherwise running them could fetch @turnpike packages from
 * the public registry, which is the risk they exist to rule out.
 */
export function checkScopePinned(lines: readonly string[], prefix: string): void {
  const pin = lines.findIndex((l) =>
    new RegExp(
      `^echo '@turnpike:registry=http://127\\.0\\.0\\.1:\\d+/' > ${prefix}/\\.npmrc$`,
    ).test(l),
  );
  const firstInstall = lines.findIndex((l) => l.startsWith("npm install"));
  if (pin < 0 || pin > firstInstall) {
    throw new Error(`the install commands do not pin @turnpike to loopback in ${prefix}/.npmrc`);
  }
}

/** Packs relay-server, tunnel-client and their workspace dependencies into `dir`. */
export async function packAll(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await pack(withWorkspaceDependencies(["@turnpike/relay-server", "@turnpike/tunnel-client"]), dir);
}

/**
 * Runs `lines` in `tarballs` with /opt mapped under `root`. The environment only makes npm
 * quiet and quick (no audit or fund requests, the cache first, no retries: a failure shows at
 * once); what gets installed from where is the commands' business.
 */
export function runInstall(
  lines: readonly string[],
  tarballs: string,
  root: string,
): Promise<{ code: number; output: string }> {
  return runShell(lines, {
    cwd: tarballs,
    env: outsideEnv({
      npm_config_audit: "false",
      npm_config_fund: "false",
      npm_config_prefer_offline: "true",
      npm_config_fetch_retries: "0",
      npm_config_update_notifier: "false",
    }),
    paths: { "/opt/": `${join(root, "opt")}/` },
  });
}
