// Whether the kernel may give a relay's ports to someone else. Linux picks the local port of
// every outgoing connection and of every socket bound to port 0 from
// net.ipv4.ip_local_port_range (IPv6 too), skipping net.ipv4.ip_local_reserved_ports. A relay
// port inside that range and not reserved can be held by any connection the host opens: a
// dynamic allocation then gets another port, a pinned one is refused. Explicit binds (the
// relay's) still work on reserved ports, so reserving the relay's ranges is the fix
// (README, "Relay ports and the kernel's ephemeral ports"). Pure but for readPortSysctls.

import type { LogFields } from "./log.js";
import { readSysctls } from "./sysctls.js";

export interface PortRange {
  readonly min: number;
  readonly max: number;
}

/** A range of the relay's, named for the warning ("relay ports", "pinned ports"). */
export interface NamedPortRange {
  readonly name: string;
  readonly range: PortRange;
}

/** The two sysctls as the kernel prints them; undefined where they could not be read. */
export interface PortSysctls {
  /** net.ipv4.ip_local_port_range: "32768\t60999\n". */
  readonly localPortRange?: string;
  /** net.ipv4.ip_local_reserved_ports: "", "8080\n", "40000-40999,49152-65535\n". */
  readonly reservedPorts?: string;
}

const PROC = {
  localPortRange: "/proc/sys/net/ipv4/ip_local_port_range",
  reservedPorts: "/proc/sys/net/ipv4/ip_local_reserved_ports",
} as const;

/** Reads both sysctls from /proc; what cannot be read (not Linux, no /proc) is left out. */
export function readPortSysctls(read?: (path: string) => string): PortSysctls {
  return readSysctls(PROC, read);
}

/** ip_local_port_range's two numbers, or undefined if the text is not that. */
export function parseLocalPortRange(text: string): PortRange | undefined {
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  if (!m) return undefined;
  const min = Number(m[1]);
  const max = Number(m[2]);
  return min <= max && max <= 65535 ? { min, max } : undefined;
}

/** ip_local_reserved_ports' list (ports and ranges, comma-separated); malformed items skipped. */
export function parseReservedPorts(text: string): PortRange[] {
  const out: PortRange[] = [];
  for (const item of text.trim().split(",")) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(item);
    if (!m) continue;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : Number(m[2]);
    if (min <= max && max <= 65535) out.push({ min, max });
  }
  return mergeRanges(out);
}

/** Sorted, with overlapping and adjacent ranges joined. */
export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.min - b.min);
  const out: { min: number; max: number }[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last !== undefined && r.min <= last.max + 1) last.max = Math.max(last.max, r.max);
    else out.push({ min: r.min, max: r.max });
  }
  return out;
}

/** The ports of `range` the kernel may pick on its own: inside `local`, outside `reserved`. */
export function unreservedEphemeral(
  range: PortRange,
  local: PortRange,
  reserved: readonly PortRange[],
): PortRange[] {
  const min = Math.max(range.min, local.min);
  const max = Math.min(range.max, local.max);
  if (min > max) return [];
  const out: PortRange[] = [];
  let next = min;
  for (const r of mergeRanges(reserved)) {
    if (r.max < next || r.min > max) continue;
    if (r.min > next) out.push({ min: next, max: r.min - 1 });
    next = r.max + 1;
  }
  if (next <= max) out.push({ min: next, max });
  return out;
}

export interface PortWarning {
  readonly msg: string;
  readonly fields: LogFields;
}

/**
 * One warning per range of `ranges` that the kernel may hand out as an ephemeral port, naming
 * the sysctls and the command that reserves all of them (on top of what is reserved already).
 * None when the sysctls could not be read.
 */
export function ephemeralPortWarnings(
  ranges: readonly NamedPortRange[],
  sysctls: PortSysctls,
): PortWarning[] {
  const local =
    sysctls.localPortRange === undefined ? undefined : parseLocalPortRange(sysctls.localPortRange);
  if (local === undefined) return [];
  const reserved = parseReservedPorts(sysctls.reservedPorts ?? "");
  const fix = mergeRanges([...reserved, ...ranges.map((r) => r.range)])
    .map(rangeText)
    .join(",");
  const warnings: PortWarning[] = [];
  for (const { name, range } of ranges) {
    const exposed = unreservedEphemeral(range, local, reserved);
    if (exposed.length === 0) continue;
    warnings.push({
      msg: `${name} overlap the kernel's ephemeral ports (net.ipv4.ip_local_port_range): an outgoing connection on this host can take one`,
      fields: {
        ports: rangeText(range),
        ephemeral: rangeText(local),
        unreserved: exposed.map(rangeText).join(","),
        reserve: `sysctl -w net.ipv4.ip_local_reserved_ports=${fix}`,
      },
    });
  }
  return warnings;
}

function rangeText(r: PortRange): string {
  return r.min === r.max ? String(r.min) : `${r.min}-${r.max}`;
}
