// Whether the kernel data path can run here, and if not, why, in one line (the runtime logs
// it once and relays everything in userspace). Checked in the order an operator would fix
// things: platform, build, privileges, kernel, interfaces, sysctls, and last the verifier.
import { existsSync, readFileSync } from "node:fs";
import { loadNative, OBJECT_PATH, objectPresent } from "./native.js";

export type AttachMode = "tc" | "xdp";

export type KernelPathAvailability =
  | { readonly available: true }
  | { readonly available: false; readonly reason: string };

export interface AvailabilityOptions {
  /** The interfaces the program would attach to (checked to exist and to carry Ethernet). */
  readonly interfaces?: readonly string[];
  readonly mode?: AttachMode;
  /** Load the program once to have the verifier check it (default true; nothing is attached). */
  readonly verify?: boolean;
}

// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;
const CAP_BPF = 39;

/** ARPHRD_ETHER and ARPHRD_LOOPBACK: the program expects an Ethernet header in front. */
const LOOPBACK_TYPE = "772";
const ETHERNET_TYPES = new Set(["1", LOOPBACK_TYPE]);

function effectiveCapabilities(): bigint | undefined {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}

function has(caps: bigint, cap: number): boolean {
  return (caps & (1n << BigInt(cap))) !== 0n;
}

/** What is missing for loading BPF and attaching it to interfaces, or undefined. */
export function missingCapabilities(caps = effectiveCapabilities()): string | undefined {
  if (caps === undefined) return undefined; // cannot tell: the load will say
  const missing = [];
  // CAP_SYS_ADMIN stands in for both (bpf_capable(), and the kernel's checks for net admin).
  if (!has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN)) missing.push("CAP_BPF");
  if (!has(caps, CAP_NET_ADMIN) && !has(caps, CAP_SYS_ADMIN)) missing.push("CAP_NET_ADMIN");
  return missing.length > 0 ? missing.join(" and ") : undefined;
}

function sysctl(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

/**
 * The sysctls the FIB lookups need: the program looks routes up as for a datagram this host
 * sends (input interface: the loopback), and the kernel answers only where forwarding is
 * enabled on that interface. Nothing else depends on the loopback's forwarding flag.
 */
export function missingForwarding(): string | undefined {
  const off = [];
  if (sysctl("/proc/sys/net/ipv4/conf/lo/forwarding") === "0") {
    off.push("net.ipv4.conf.lo.forwarding");
  }
  if (existsSync("/proc/sys/net/ipv6") && sysctl("/proc/sys/net/ipv6/conf/lo/forwarding") === "0") {
    off.push("net.ipv6.conf.lo.forwarding");
  }
  return off.length > 0 ? off.join(" and ") : undefined;
}

/** Why `name` cannot carry the program in `mode`, or undefined. */
export function interfaceProblem(name: string, mode: AttachMode = "tc"): string | undefined {
  const l = loadNative();
  if (l.ok && l.binding.ifindex(name) === 0) return `interface ${name} not found`;
  const type = sysctl(`/sys/class/net/${name}/type`);
  if (type === undefined) return `interface ${name} not found`;
  if (!ETHERNET_TYPES.has(type)) return `interface ${name} does not carry Ethernet (type ${type})`;
  // The loopback has no driver hook: XDP there is the generic (skb) kind, which saves nothing
  // over TC. Whether another driver runs XDP natively only the attach can tell (open()).
  if (mode === "xdp" && type === LOOPBACK_TYPE) {
    return `${name} is the loopback, which has no native XDP (use tc)`;
  }
  return undefined;
}

export function kernelPathAvailability(options: AvailabilityOptions = {}): KernelPathAvailability {
  const no = (reason: string): KernelPathAvailability => ({ available: false, reason });
  const mode = options.mode ?? "tc";
  if (process.platform !== "linux") return no(`${process.platform} is not Linux`);
  const l = loadNative();
  if (!l.ok) return no(l.reason);
  if (!objectPresent()) {
    return no(`the BPF object ${OBJECT_PATH} is missing (clang was not there at install)`);
  }
  const caps = missingCapabilities();
  if (caps) return no(`the process lacks ${caps} (needed to load the program and attach it)`);
  const interfaces = options.interfaces ?? [];
  for (const name of interfaces) {
    const problem = interfaceProblem(name, mode);
    if (problem) return no(problem);
  }
  if (mode === "tc") {
    const tcx = l.binding.tcxSupport(interfaces[0] ? l.binding.ifindex(interfaces[0]) : 1);
    if (tcx) return no(tcx);
  }
  const forwarding = missingForwarding();
  if (forwarding) {
    const set = forwarding
      .split(" and ")
      .map((name) => `${name}=1`)
      .join(" ");
    return no(
      `${forwarding} is 0: the program's route lookups need it (sysctl -w ${set}; nothing else uses the loopback's forwarding flag)`,
    );
  }
  if (options.verify !== false) {
    const rejected = l.binding.verify(OBJECT_PATH, mode === "xdp" ? "turnpike_xdp" : "turnpike_tc");
    if (rejected) return no(rejected);
  }
  return { available: true };
}

/**
 * How many BPF programs are attached at `name`'s TCX ingress (ours or anyone's), for checks
 * that nothing was left behind. Undefined when it cannot be asked.
 */
export function tcxIngressPrograms(name: string): number | undefined {
  const l = loadNative();
  if (!l.ok) return undefined;
  const ifindex = l.binding.ifindex(name);
  const n = ifindex === 0 ? -1 : l.binding.tcxPrograms(ifindex);
  return n < 0 ? undefined : n;
}
