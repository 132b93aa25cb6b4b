// The kernel's sysctls as /proc/sys shows them, for the checks a CLI makes at start (the relay's
// ephemeral ports, its UDP listeners' buffer caps, connection tracking). What cannot be read
// (not Linux, no /proc, a sandbox that hides it) is left out, so that a check built on them says
// nothing rather than guess.

import { readFileSync } from "node:fs";

/** The text of each sysctl file of `paths` (by key) that could be read. */
export function readSysctls<K extends string>(
  paths: Readonly<Record<K, string>>,
  read: (path: string) => string = readText,
): Partial<Record<K, string>> {
  const out: Partial<Record<K, string>> = {};
  for (const key of Object.keys(paths) as K[]) {
    try {
      out[key] = read(paths[key]);
    } catch {
      // left out: see above
    }
  }
  return out;
}

/**
 * The sysctls of `paths` that hold one non-negative integer (net.core.rmem_max,
 * net.netfilter.nf_conntrack_count, ...), as numbers; what cannot be read or is not such a
 * number is left out, as above.
 */
export function readSysctlNumbers<K extends string>(
  paths: Readonly<Record<K, string>>,
  read?: (path: string) => string,
): Partial<Record<K, number>> {
  const text = readSysctls(paths, read);
  const out: Partial<Record<K, number>> = {};
  for (const key of Object.keys(text) as K[]) {
    const n = Number(text[key]!.trim());
    if (Number.isSafeInteger(n) && n >= 0) out[key] = n;
  }
  return out;
}

function readText(path: string): string {
  return readFileSync(path, "utf8");
}
