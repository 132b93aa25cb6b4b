// The workspace's publishable packages as npm users get them: `pnpm pack` tarballs (workspace:
// ranges replaced by versions) installed with the npm client into a directory outside the
// workspace. Which packages to pack follows the workspace dependency graph, so a new workspace
// dependency (a native addon with binding.gyp and an install script, say) is packed and
// installed, and its install script run, without changes here.
import { execFile } from "node:child_process";
import { readdirSync, readFileSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { findTool } from "@turnpike/test-support/tools";
import { outsideEnv, REPO } from "./launch.js";

const run = promisify(execFile);

export interface WorkspacePackage {
  readonly name: string;
  readonly dir: string;
  readonly manifest: {
    name: string;
    version: string;
    private?: boolean;
    engines?: { node?: string };
    files?: string[];
    bin?: Record<string, string>;
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
}

export function workspacePackages(): Map<string, WorkspacePackage> {
  const out = new Map<string, WorkspacePackage>();
  for (const entry of readdirSync(join(REPO, "packages"))) {
    const dir = join(REPO, "packages", entry);
    let manifest: WorkspacePackage["manifest"];
    try {
      manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    } catch {
      continue;
    }
    out.set(manifest.name, { name: manifest.name, dir, manifest });
  }
  return out;
}

/** `roots` and every workspace package they depend on at run time, dependencies first. */
export function withWorkspaceDependencies(roots: readonly string[]): WorkspacePackage[] {
  const all = workspacePackages();
  const seen = new Set<string>();
  const order: WorkspacePackage[] = [];
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    const pkg = all.get(name);
    if (pkg === undefined) throw new Error(`${name} is not a workspace package`);
    for (const [dep, range] of Object.entries(pkg.manifest.dependencies ?? {})) {
      if (range.startsWith("workspace:")) visit(dep);
    }
    order.push(pkg);
  };
  for (const r of roots) visit(r);
  return order;
}

/** Packs each package with `pnpm pack` into `dest`; returns the tarball paths in order. */
export async function pack(pkgs: readonly WorkspacePackage[], dest: string): Promise<string[]> {
  const out: string[] = [];
  for (const pkg of pkgs) {
    await run("pnpm", ["pack", "--pack-destination", dest], { cwd: pkg.dir });
    const base = pkg.name.replace(/^@/, "").replace("/", "-");
    out.push(join(dest, `${base}-${pkg.manifest.version}.tgz`));
  }
  return out;
}

export async function tarballFiles(tarball: string): Promise<string[]> {
  const { stdout } = await run("tar", ["tzf", tarball]);
  return stdout.split("\n").filter((l) => l !== "");
}

export async function tarballManifest(tarball: string): Promise<WorkspacePackage["manifest"]> {
  const { stdout } = await run("tar", ["xzOf", tarball, "package/package.json"]);
  return JSON.parse(stdout);
}

/** The npm client's CLI script, run with the Node line under test (not the system's node). */
function npmCli(): string {
  const npm = findTool("npm");
  if (npm === undefined) throw new Error("npm is not on PATH");
  return join(realpathSync(npm), "..", "npm-cli.js");
}

/** `npm install specs...` in `dir` (a project with its own package.json). */
export async function npmInstall(dir: string, specs: readonly string[]): Promise<string> {
  const { stdout, stderr } = await run(
    process.execPath,
    [
      npmCli(),
      "install",
      "--no-audit",
      "--no-fund",
      "--prefer-offline",
      "--loglevel=warn",
      ...specs,
    ],
    {
      cwd: dir,
      timeout: 300_000,
      maxBuffer: 16 << 20,
      env: outsideEnv(),
    },
  );
  return `${stdout}${stderr}`;
}
