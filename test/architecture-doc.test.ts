// ARCHITECTURE.md describes the code as it is: every file or directory it names in backticks
// exists, and every method or function it names as `name()` (or `name(args)`) is defined in
// some source file. Newcomers are sent there first; a name that no longer exists sends them
// nowhere. Checked against a made-up document too, so the check cannot pass vacuously.
//
// Paths: `packages/...`, `test/...`, `test-support/...`, `bench/...`, `deploy/...` and `docs/...` are
// from the repository root; `relay-server/src/...` and the like name a package under
// packages/; anything else (`udp/batch-path.ts`, `pool.ts`) is relative to the last such full
// path the document named before it in the same section, or to a directory above it up to its
// package's root or src/ (in the RFC table, each row starts at relay-core/src/, as the table
// says). Definitions are found with the TypeScript parser: functions, methods (in classes and
// interfaces), accessors, and variables or properties holding a function.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = join(import.meta.dirname, "..");
const PACKAGES = readdirSync(join(ROOT, "packages"));
const ROOT_DIRS = [
  "packages",
  "test",
  "test-support",
  "bench",
  "deploy",
  "scripts",
  "tools",
  "docs",
];
/** Where definitions are looked for: every package's and helper's sources. */
const SOURCE_DIRS = [...PACKAGES.map((p) => `packages/${p}/src`), "test-support/src", "bench/src"];
/** The RFC table's rows start here ("Paths below `relay-core/src/` unless ..."). */
const RFC_TABLE_BASE = "packages/relay-core/src";

/** A backticked span: its line, its section, and whether it opens a table row. */
interface Span {
  readonly text: string;
  readonly line: number;
  readonly section: string;
  readonly row: boolean;
}

function spans(doc: string): Span[] {
  const out: Span[] = [];
  let section = "";
  let inFence = false;
  doc.split("\n").forEach((l, i) => {
    if (l.startsWith("```")) inFence = !inFence;
    if (inFence) return;
    if (l.startsWith("## ")) section = l.slice(3);
    let first = true;
    for (const m of l.matchAll(/`([^`]+)`/g)) {
      out.push({ text: m[1]!, line: i + 1, section, row: first && l.startsWith("|") });
      first = false;
    }
  });
  return out;
}

const PATH = /^[\w.-]+(\/[\w.-]+)*\/?$/;
const FILE = /\.(ts|js|c|h|md|json|ya?ml|service|sh)$/;

function isPath(text: string): boolean {
  return PATH.test(text) && (text.includes("/") || FILE.test(text));
}

/** A path from the root, or one naming a package (`relay-server/src/...`): not relative. */
function isFull(text: string): boolean {
  const first = text.split("/")[0]!;
  return ROOT_DIRS.includes(first) || PACKAGES.includes(first);
}

/** Where a path the document names is, relative to the root; undefined when nowhere. */
function resolvePath(text: string, context: string | undefined): string | undefined {
  const clean = text.replace(/\/$/, "");
  const first = clean.split("/")[0]!;
  if (ROOT_DIRS.includes(first)) return exists(clean) ? clean : undefined;
  if (PACKAGES.includes(first))
    return exists(`packages/${clean}`) ? `packages/${clean}` : undefined;
  // Relative: the context directory, then each directory above it within its package.
  for (let dir = context; dir !== undefined; dir = parent(dir)) {
    for (const base of [dir, `${dir}/src`]) {
      if (exists(`${base}/${clean}`)) return `${base}/${clean}`;
    }
  }
  return undefined;
}

function exists(path: string): boolean {
  return existsSync(join(ROOT, path));
}

/** The directory above `dir`, stopping at a package's root (packages/x, test-support, ...). */
function parent(dir: string): string | undefined {
  const parts = dir.split("/");
  const packageRoot = parts[0] === "packages" ? 2 : 1;
  return parts.length > packageRoot ? parts.slice(0, -1).join("/") : undefined;
}

function isDirectory(path: string): boolean {
  return statSync(join(ROOT, path)).isDirectory();
}

/** What the document names that does not exist: paths, then methods (as messages). */
function missing(doc: string, defined: ReadonlySet<string>): string[] {
  const out: string[] = [];
  let context: string | undefined;
  let section = "";
  for (const s of spans(doc)) {
    if (s.section !== section) {
      section = s.section;
      context = undefined;
    }
    if (s.row && section.startsWith("Where each RFC section lives")) context = RFC_TABLE_BASE;
    if (isPath(s.text)) {
      const found = resolvePath(s.text, context);
      if (found === undefined) out.push(`line ${s.line}: no file or directory \`${s.text}\``);
      else if (isFull(s.text)) context = isDirectory(found) ? found : dirname(found);
      continue;
    }
    const call = /^(?:[\w$]+\.)*([A-Za-z_$][\w$]*)\([^()]*\)$/.exec(s.text);
    if (call && !defined.has(call[1]!)) {
      out.push(`line ${s.line}: no source defines \`${s.text}\``);
    }
  }
  return out;
}

function sourceFiles(dir: string): string[] {
  const full = join(ROOT, dir);
  if (!existsSync(full)) return [];
  return readdirSync(full).flatMap((name) => {
    const path = join(full, name);
    if (statSync(path).isDirectory()) return sourceFiles(relative(ROOT, path));
    return name.endsWith(".ts") && !name.endsWith(".d.ts") ? [path] : [];
  });
}

/** Names of functions and methods the sources define. */
function definitions(files: readonly string[]): Set<string> {
  const names = new Set<string>();
  const isFunction = (e: ts.Node | undefined) =>
    e !== undefined && (ts.isArrowFunction(e) || ts.isFunctionExpression(e));
  const visit = (node: ts.Node): void => {
    const named = node as ts.Node & { name?: ts.Node };
    const nameOf = () =>
      named.name && (ts.isIdentifier(named.name) || ts.isPrivateIdentifier(named.name))
        ? named.name.text.replace(/^#/, "")
        : undefined;
    if (
      ts.isFunctionDeclaration(node) ||
      ts.isMethodDeclaration(node) ||
      ts.isMethodSignature(node) ||
      ts.isGetAccessorDeclaration(node) ||
      ts.isSetAccessorDeclaration(node) ||
      ((ts.isVariableDeclaration(node) ||
        ts.isPropertyDeclaration(node) ||
        ts.isPropertyAssignment(node)) &&
        isFunction(node.initializer)) ||
      (ts.isPropertySignature(node) && node.type !== undefined && ts.isFunctionTypeNode(node.type))
    ) {
      const name = nameOf();
      if (name !== undefined) names.add(name);
    }
    ts.forEachChild(node, visit);
  };
  for (const file of files) {
    visit(ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true));
  }
  return names;
}

describe("ARCHITECTURE.md names what exists", () => {
  const doc = readFileSync(join(ROOT, "ARCHITECTURE.md"), "utf8");
  const defined = definitions(SOURCE_DIRS.flatMap(sourceFiles));

  it("finds the paths and method names it checks", () => {
    const all = spans(doc).map((s) => s.text);
    expect(all.filter(isPath).length).toBeGreaterThan(40);
    expect(all).toContain("afterInput()");
    expect(defined.has("afterInput")).toBe(true);
    expect(defined.has("pollOutput")).toBe(true);
  });

  it("names no file, directory, method or function that does not exist", () => {
    expect(missing(doc, defined)).toEqual([]);
  });

  it("catches a made-up file, a made-up relative file and a made-up method", () => {
    const madeUp = [
      "## The call order",
      "The loop is in `relay-server/src/engine/driver.ts` and `outputs.ts`, not in",
      "`relay-server/src/relay.ts` nor `loop.ts`; it calls `pollOutput()`, not `pollCommand()`.",
      "",
      "## Where each RFC section lives",
      "| RFC | what | `server/server.ts`, `server/no-such-module.ts` |",
    ].join("\n");
    expect(missing(madeUp, defined)).toEqual([
      "line 3: no file or directory `relay-server/src/relay.ts`",
      "line 3: no file or directory `loop.ts`",
      "line 3: no source defines `pollCommand()`",
      "line 6: no file or directory `server/no-such-module.ts`",
    ]);
  });
});
