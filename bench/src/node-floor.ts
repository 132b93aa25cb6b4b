// The runtime's own floor: what a bare node of the same binary holds while idle, measured in
// the same run as the servers. Turnpike's idle RSS is this floor plus what the relay adds, and
// most of the floor is the executable's file pages (shared, and counted by how the binary sits in
// the page cache: written there by the package manager that installed it, in 2 MB folios that
// the kernel maps whole, 72 MB on this machine after `pnpm install`; read in from disk, in small
// ones, 43 MB), so an idle-RSS figure means little without the floor of the same moment beside it.
import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { launcherNodeFlags } from "@turnpike/test-support/turnpike";
import { killByPid, trackPid } from "./children.js";
import { type ResidentMemory, residentMemory } from "./proc.js";

/** Long enough for node's start-up work (bootstrap, the first GC) to settle. */
const SETTLE_MS = 1500;

export async function measureNodeFloor(): Promise<ResidentMemory | undefined> {
  // With the relay launcher's node flags (its bin/ shebang; the tunnel's are the same).
  const flags = launcherNodeFlags();
  const child = spawn(process.execPath, [...flags, "-e", "setTimeout(() => {}, 30000)"], {
    stdio: "ignore",
  });
  child.on("error", () => {}); // no figure then: residentMemory finds no process
  trackPid(child);
  try {
    await sleep(SETTLE_MS);
    return child.pid === undefined ? undefined : residentMemory(child.pid);
  } finally {
    await killByPid(child, 1000);
  }
}
