// Which kernel data path runs: --kernel-path auto|tc|xdp|off, chosen once at start like the
// UDP data path (udp/select.ts), and not instead of it: the kernel path relays bound
// ChannelData only, everything else still arrives on the UDP path's sockets.
//
//   off    nothing is loaded.
//   tc     the program is loaded and attached (TCX ingress) on the interfaces carrying the
//          listen and relay addresses (interfaces.ts), or the relay does not start: one line
//          naming --kernel-path and why. Explicitly asked, the relay sets the loopback's
//          forwarding sysctls the program's route lookups need, when it may (and says so).
//   auto   tc where it loads; otherwise off, with the reason in the ready line
//          (kernelPathFallback). It changes no sysctl.
//   xdp    the same program at the driver's XDP hook, native mode only, on the same
//          interfaces: for relays on a NIC whose driver runs XDP (not the loopback, which has
//          no native XDP: the relay does not start, naming --kernel-path). Never chosen by
//          auto: generic XDP saves nothing over TC, and whether a driver is native only the
//          attach can tell.
//
// The process attaches once: the engine on the main thread (--workers 1) or the workers'
// supervisor, which hands each worker the maps (shared/context.ts, KernelPathShare). The
// links are file descriptors of this process: when it ends, however it ends, the kernel
// detaches the program.

import { existsSync, writeFileSync } from "node:fs";
import { KernelPath, kernelPathAvailability, missingForwarding } from "@turnpike/kernel-path";
import type { RelayConfig } from "../config/types.js";
import { isUnspecified } from "../config/values.js";
import type { KernelAttachMode, KernelPathPlacement } from "../shared/context.js";
import { KERNEL_MAX_BUCKETS } from "./buckets.js";
import { HOST_LINKS, type HostLinks, interfacesFor, isLocalAddress } from "./interfaces.js";

/** Channel bindings the maps hold (the kernel-path default); more stay in userspace. */
export const KERNEL_MAX_BINDINGS = 65536;
/** Links one process makes (kernel-path's native MAX_INTERFACES). */
const MAX_INTERFACES = 16;
/** The loopback's link type (include/uapi/linux/if_arp.h). */
const ARPHRD_LOOPBACK = 772;

export type KernelPathChoice =
  | ({
      readonly mode: KernelAttachMode;
      /** The opening handle: closing it (or the process ending) detaches the program. */
      readonly path: KernelPath;
    } & KernelPathPlacement)
  | {
      readonly mode: "off";
      /** Why `auto` fell back (undefined when asked off). */
      readonly fallbackReason: string | undefined;
    };

/**
 * For relay sockets bound on 0.0.0.0 or :: (--relay-ip 0.0.0.0), the address peers reach them
 * at, which is what the kernel matches: --public-ip4/6 when it is one of this host's addresses,
 * else none (that family's bindings stay in userspace: with 1:1 NAT the host's own address
 * behind it is not known here; set --relay-ip to it).
 */
export interface WildcardRelayed {
  readonly 4: string | undefined;
  readonly 6: string | undefined;
}

/** The addresses the program must see arrive: UDP listeners and relay addresses. */
function carriedAddresses(config: RelayConfig): string[] {
  const out = config.listen.map((a) => a.ip);
  for (const ip of [config.relayIp4, config.relayIp6]) if (ip !== undefined) out.push(ip);
  return out;
}

function wildcardRelayed(config: RelayConfig, host: HostLinks, notes: string[]): WildcardRelayed {
  const pick = (family: 4 | 6): string | undefined => {
    const bind = family === 4 ? config.relayIp4 : config.relayIp6;
    if (bind === undefined || !isUnspecified(bind)) return undefined;
    const pub = family === 4 ? config.publicIp4 : config.publicIp6;
    if (pub !== undefined && isLocalAddress(pub, host)) return pub;
    notes.push(
      `relay sockets bind ${bind} and --public-ip${family} is not an address of this host: IPv${family} bindings stay in userspace (set --relay-ip)`,
    );
    return undefined;
  };
  return { 4: pick(4), 6: pick(6) };
}

/** The loopback's forwarding flags the program's route lookups need, set if we may. */
function enableForwarding(missing: string, notes: string[]): string | undefined {
  for (const name of missing.split(" and ")) {
    const file = `/proc/sys/${name.replaceAll(".", "/")}`;
    if (!existsSync(file)) continue;
    try {
      writeFileSync(file, "1");
    } catch (err) {
      return `${missing} is 0 and could not be set (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): sysctl -w ${name}=1 (deploy/sysctl)`;
    }
  }
  notes.push(`set ${missing}=1 (the program's route lookups need it)`);
  return undefined;
}

/**
 * Chooses and, for tc and xdp, opens the kernel data path. Throws (one line naming --kernel-path) when
 * tc or xdp was asked for and cannot run.
 */
export function openKernelPath(
  config: RelayConfig,
  host: HostLinks = HOST_LINKS,
): KernelPathChoice {
  const asked = config.kernelPath;
  if (asked === "off") return { mode: "off", fallbackReason: undefined };
  const fail = (reason: string): KernelPathChoice => {
    if (asked === "auto") return { mode: "off", fallbackReason: reason };
    throw new Error(`--kernel-path ${asked}: ${reason}`);
  };
  const plan = interfacesFor(carriedAddresses(config), host);
  if (!plan.ok) return fail(plan.reason);
  if (plan.interfaces.length > MAX_INTERFACES) {
    return fail(
      `the listen and relay addresses span ${plan.interfaces.length} interfaces, at most ${MAX_INTERFACES} are attached (listen on specific addresses)`,
    );
  }
  const mode: KernelAttachMode = asked === "xdp" ? "xdp" : "tc";
  const notes: string[] = [];
  if (plan.skipped.length > 0) {
    notes.push(`not attached to ${plan.skipped.join(",")} (no Ethernet framing)`);
  }
  let interfaces = plan.interfaces;
  if (mode === "xdp") {
    // Decided before anything changes (the forwarding sysctls below). The loopback has no
    // native XDP (generic XDP would cost more than TC): what arrives there stays in userspace.
    const isLoopback = (name: string) =>
      host.links().find((l) => l.name === name)?.type === ARPHRD_LOOPBACK;
    const loopback = interfaces.filter(isLoopback);
    interfaces = interfaces.filter((name) => !isLoopback(name));
    if (interfaces.length === 0) {
      return fail(`${loopback.join(",")} is the loopback, which has no native XDP (use tc)`);
    }
    if (loopback.length > 0) {
      notes.push(`not attached to ${loopback.join(",")} (no native XDP on the loopback)`);
    }
  }
  const forwarding = missingForwarding();
  if (forwarding !== undefined && asked !== "auto") {
    const refused = enableForwarding(forwarding, notes);
    if (refused !== undefined) return fail(refused);
  }
  // verify: the load below is the verifier's check.
  const available = kernelPathAvailability({ interfaces, mode, verify: false });
  if (!available.available) return fail(available.reason);
  const relayed = wildcardRelayed(config, host, notes);
  try {
    const path = KernelPath.open({
      interfaces,
      mode,
      maxBindings: KERNEL_MAX_BINDINGS,
      maxBuckets: KERNEL_MAX_BUCKETS,
    });
    return { mode, path, interfaces, relayed, notes };
  } catch (err) {
    return fail((err as Error).message);
  }
}
