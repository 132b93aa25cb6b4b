// The process's open-file limit (RLIMIT_NOFILE), which both CLIs share out: turnpike-relay
// among relay sockets, client and health connections and spliced pipes (relay-server
// config/fd-budget.ts), turnpike-tunnel among its spliced TCP pipes (tunnel-client
// tunnel/spliced-pipe.ts). Node has no getrlimit; Linux prints the limits in /proc/self/limits
// (proc(5)). Node raises the soft limit to the hard one when it starts (node.cc, PlatformInit),
// so the soft limit read here is what the process may really open.

import { readFileSync } from "node:fs";

/**
 * The soft RLIMIT_NOFILE of this process, or undefined where there is none to respect:
 * "unlimited", or /proc/self/limits not readable (not Linux) or without the line.
 */
export function openFilesLimit(
  read: () => string = () => readFileSync("/proc/self/limits", "utf8"),
): number | undefined {
  let text: string;
  try {
    text = read();
  } catch {
    return undefined;
  }
  // "Max open files            1024                 4096                 files"
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (m === null || m[1] === "unlimited") return undefined;
  return Number(m[1]);
}
