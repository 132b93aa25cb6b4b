// The commands the documentation gives operators, taken from the documents themselves so that
// the tests run (or check) exactly what a reader would type: Markdown sections and their fenced
// shell blocks, and the commented command lines in a systemd unit's header.
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { REPO } from "./launch.js";

const run = promisify(execFile);

/** A file of the repository as text. */
export function repoText(path: string): string {
  return readFileSync(join(REPO, path), "utf8");
}

/**
 * The part of a Markdown document under the heading whose text is `title` (`## Title` or any
 * level), up to the next heading of the same or a higher level.
 */
export function markdownSection(markdown: string, title: string): string {
  const lines = markdown.split("\n");
  let fenced = false;
  let level = 0;
  const out: string[] = [];
  for (const line of lines) {
    if (/^\s*```/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^(#+)\s+(.*)$/.exec(line);
    if (level > 0 && heading && heading[1]!.length <= level) break;
    if (level > 0) out.push(line);
    if (level === 0 && heading && heading[2]!.trim() === title) level = heading[1]!.length;
  }
  if (level === 0) throw new Error(`no section "${title}"`);
  return out.join("\n");
}

/** The ```sh blocks of a Markdown text, each as its lines (list indentation removed). */
export function shellBlocks(markdown: string): string[][] {
  const blocks: string[][] = [];
  let current: string[] | undefined;
  let indent = 0;
  for (const line of markdown.split("\n")) {
    const fence = /^(\s*)```(\w*)\s*$/.exec(line);
    if (fence && current === undefined) {
      if (fence[2] === "sh") {
        current = [];
        indent = fence[1]!.length;
      }
      continue;
    }
    if (fence && current !== undefined) {
      blocks.push(current);
      current = undefined;
      continue;
    }
    current?.push(line.slice(indent));
  }
  return blocks;
}

/**
 * The commands in the leading comment of a systemd unit or drop-in: comment lines indented by
 * three spaces after the `#` (`#   npm install ...`).
 */
export function unitHeaderCommands(unitText: string): string[] {
  const out: string[] = [];
  for (const line of unitText.split("\n")) {
    if (!line.startsWith("#")) break;
    const command = /^# {3}(\S.*)$/.exec(line);
    if (command) out.push(command[1]!);
  }
  return out;
}

/** Lines of a shell block without comments (`# ...` to the end) and blank lines. */
export function commandLines(block: readonly string[]): string[] {
  return block
    .map((l) => l.replace(/\s+#\s.*$/, "").trim())
    .filter((l) => l !== "" && !l.startsWith("#"));
}

/**
 * Runs `lines` as one `sh -e` script in `cwd` with every occurrence of each `paths` key
 * replaced by its value (the only substitution: where /opt or /etc is on this machine).
 * Resolves with the exit code and everything printed.
 */
export async function runShell(
  lines: readonly string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; paths: Record<string, string>; timeoutMs?: number },
): Promise<{ code: number; output: string }> {
  let script = lines.join("\n");
  for (const [from, to] of Object.entries(opts.paths)) script = script.replaceAll(from, to);
  return run("sh", ["-e", "-c", script], {
    cwd: opts.cwd,
    env: opts.env,
    timeout: opts.timeoutMs ?? 300_000,
    maxBuffer: 16 << 20,
  }).then(
    (r) => ({ code: 0, output: `${r.stdout}${r.stderr}` }),
    (e: { code?: number; stdout?: string; stderr?: string }) => ({
      code: typeof e.code === "number" ? e.code : -1,
      output: `${e.stdout ?? ""}${e.stderr ?? ""}`,
    }),
  );
}
