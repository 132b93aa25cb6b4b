// External tools (coturn, Chromium, iperf3, sshd) for the interop suites.
//
// Policy: outside CI a missing tool SKIPS the suite with a visible warning (a developer without
// coturn can still run the unit tests); under CI=true a missing tool FAILS the suite, because
// scripts/ensure-tools.sh is supposed to have installed it and a silent skip would hide that.
//
//   const skip = skipUnlessTools("turnserver", "turnutils_uclient");
//   describe.skipIf(skip)("coturn interop", () => {
//     beforeAll(() => requireTools("turnserver", "turnutils_uclient"));
//     ...
//   });
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** Where Debian's chromium lives; override with CHROMIUM_PATH. */
export const chromiumPath = (): string => process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

const isCi = (): boolean => process.env.CI === "true";

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Absolute path of `name` (PATH, then /usr/sbin and /sbin for daemons like sshd), or undefined. */
export function findTool(name: string): string | undefined {
  if (name === "chromium") return executable(chromiumPath()) ? chromiumPath() : undefined;
  if (name.includes("/")) return executable(name) ? name : undefined;
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/sbin"];
  for (const dir of dirs) {
    if (dir && executable(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

export function toolAvailable(name: string): boolean {
  return findTool(name) !== undefined;
}

export function missingTools(...names: string[]): string[] {
  return names.filter((n) => !toolAvailable(n));
}

/**
 * For `describe.skipIf(...)`: true (skip) only when a tool is missing AND we are not in CI.
 * Under CI=true it returns false so the suite runs and `requireTools` in its beforeAll fails it.
 */
export function skipUnlessTools(...names: string[]): boolean {
  const missing = missingTools(...names);
  if (missing.length === 0) return false;
  if (isCi()) return false;
  console.warn(
    `[interop] SKIPPED: missing tool(s) ${missing.join(", ")}; run \`bash scripts/ensure-tools.sh\` as root to install them`,
  );
  return true;
}

/** Throws (failing the suite) when any tool is missing. Call it in beforeAll. */
export function requireTools(...names: string[]): void {
  const missing = missingTools(...names);
  if (missing.length > 0) {
    throw new Error(
      `required tool(s) missing: ${missing.join(", ")}${isCi() ? " (CI=true: interop suites must not skip)" : ""}; run \`bash scripts/ensure-tools.sh\``,
    );
  }
}

/** Single-tool forms of the above. */
export const requireTool = (name: string): void => requireTools(name);
