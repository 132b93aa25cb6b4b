// Netfilter's connection tracking and the relay's flows, checked at start (preflight.ts).
//
// Where a firewall rule asks for a connection's state (the usual `ct state established,related
// accept`, NAT, Docker, kube-proxy), the kernel tracks every flow of the network namespace: each
// client 5-tuple on a listener and each relay port and peer pair of an allocation becomes an
// entry of one table, and a UDP entry stays net.netfilter.nf_conntrack_udp_timeout_stream
// seconds (120 by default) after its flow's last datagram. When the table holds
// nf_conntrack_max entries the kernel drops the first packet of every new flow ("nf_conntrack:
// table full, dropping packet" in its log): new clients and new peers no longer reach the relay
// while the flows it has keep working, and a flood of datagrams from spoofed sources fills it
// cheaply. Each tracked packet also costs a table lookup. A relay needs none of it (RFC 8656
// relays by its own state), so the advice is to exempt its ports (deploy/nftables/
// turnpike-notrack.nft) or, where the firewall must track, to size the table.
//
// Whether the relay's traffic is tracked depends on the ruleset, which a process without
// CAP_NET_ADMIN cannot read; so the preflight asks the kernel instead: it sends datagrams on
// the loopback from each port it probes (the UDP listeners' ports and one relay port, bound
// before the relay binds them) and looks for their flows in /proc/net/nf_conntrack, or, where
// that file is root's alone (the systemd unit's dynamic user), sees whether the table grew by
// as many entries. Sending is what makes an entry (the output hook), where the recipe's `udp
// sport` rule exempts it; the receiving side's prerouting rule cannot be probed on the
// loopback. Pure but for the readers and the probe.

import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import { closeSync, openSync, readSync } from "node:fs";
import { type PortWarning, readSysctlNumbers } from "@turnpike/runtime-kit";

/** The nftables file the warning points to: exempts the default ports from tracking. */
export const NOTRACK_RECIPE = "deploy/nftables/turnpike-notrack.nft";

/** The table's state, as the kernel reports it for this network namespace. */
export interface ConntrackSysctls {
  /** net.netfilter.nf_conntrack_count: entries now. */
  readonly count?: number;
  /** net.netfilter.nf_conntrack_max: the table's size. */
  readonly max?: number;
  /** net.netfilter.nf_conntrack_udp_timeout_stream: seconds an answered UDP flow is kept. */
  readonly udpTimeoutStream?: number;
}

const PROC = {
  count: "/proc/sys/net/netfilter/nf_conntrack_count",
  max: "/proc/sys/net/netfilter/nf_conntrack_max",
  udpTimeoutStream: "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
} as const;

/** The flow table as text (CONFIG_NF_CONNTRACK_PROCFS, which the distributions' kernels have). */
const FLOWS = "/proc/net/nf_conntrack";

/** Reads the three sysctls; none of them where the kernel has no connection tracking. */
export function readConntrackSysctls(read?: (path: string) => string): ConntrackSysctls {
  return readSysctlNumbers(PROC, read);
}

/** What the probe found: the ports whose datagram the kernel tracked, and the table then. */
export interface ConntrackFinding {
  readonly tracked: readonly number[];
  readonly sysctls: ConntrackSysctls;
}

/**
 * How /proc/net/nf_conntrack writes the UDP flow from 127.0.0.1:`from` to 127.0.0.1:`to`: the
 * line's original tuple (the reply's, which follows it, names the other direction).
 */
export function flowNeedle(from: number, to: number): string {
  return `src=127.0.0.1 dst=127.0.0.1 sport=${from} dport=${to} `;
}

/**
 * Scans /proc/net/nf_conntrack (or `path`) for any of `needles` without holding the file: a
 * busy host's table is tens of MB. Reads at most `limit` bytes; returns the needles found.
 */
export function scanFlows(
  needles: readonly string[],
  path: string = FLOWS,
  limit = 256 << 20,
): Set<string> {
  const found = new Set<string>();
  const fd = openSync(path, "r");
  try {
    const chunk = Buffer.allocUnsafe(64 << 10);
    const keep = Math.max(0, ...needles.map((n) => n.length)) - 1;
    let carry = "";
    for (let total = 0; total < limit && found.size < needles.length; ) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      total += n;
      const text = carry + chunk.toString("latin1", 0, n);
      for (const needle of needles) if (text.includes(needle)) found.add(needle);
      carry = text.slice(Math.max(0, text.length - keep));
    }
  } finally {
    closeSync(fd);
  }
  return found;
}

/** Flows one round of a port's probe makes: as many new entries where the kernel tracks them. */
export const PROBE_FLOWS = 32;
/** Rounds per port when the table's size must tell (the median round decides). */
const PROBE_ROUNDS = 3;
const PROBE_TIMEOUT_MS = 1000;

/**
 * Sends datagrams on the loopback from each of `ports` that is free and asks the kernel whether
 * it tracked them. Undefined where the kernel has no connection tracking or no port could be
 * probed (taken, no IPv4 loopback): the check then says nothing.
 */
export async function probeConntrack(
  ports: readonly number[],
): Promise<ConntrackFinding | undefined> {
  if (readConntrackSysctls().max === undefined) return undefined;
  const tracked: number[] = [];
  let answered = false;
  for (const port of ports) {
    const answer = await probePort(port).catch(() => undefined);
    if (answer === undefined) continue;
    answered = true;
    if (answer) tracked.push(port);
  }
  return answered ? { tracked, sysctls: readConntrackSysctls() } : undefined;
}

/**
 * Whether the kernel tracks datagrams sent from `port`. Where /proc/net/nf_conntrack can be read
 * (it is 0440 root) the first flow is looked up there. Else, as under the systemd unit's dynamic
 * user, the table's size tells: each round sends PROBE_FLOWS datagrams from the port, each to a
 * receiver of its own, which adds that many entries where they are tracked, and then waits as
 * long again without sending, to see what the host's other flows did to the count meanwhile
 * (trackedByCount).
 */
async function probePort(port: number): Promise<boolean | undefined> {
  const grew: number[] = [];
  for (let round = 0; round < PROBE_ROUNDS; round++) {
    const start = performance.now();
    const before = readConntrackSysctls().count;
    const receivers = await sendFlows(port, PROBE_FLOWS);
    const after = readConntrackSysctls().count;
    if (before === undefined || after === undefined) return undefined;
    if (round === 0) {
      // Nothing tracked in this namespace at all, these flows included.
      if (after === 0) return false;
      try {
        return scanFlows([flowNeedle(port, receivers[0]!)]).size > 0;
      } catch {
        // not readable by this user: counted instead
      }
    }
    await new Promise((r) => setTimeout(r, Math.ceil(performance.now() - start)));
    const later = readConntrackSysctls().count ?? after;
    grew.push(after - before - (later - after));
  }
  return trackedByCount(grew, PROBE_FLOWS);
}

/**
 * Whether rounds that each sent `flows` new flows were tracked, from how much the table grew in
 * each over what it grew by in as long a time without them: by the median round, at least
 * three quarters of them (entries the kernel expires in one window and not the other move a
 * round either way, but rarely every round).
 */
export function trackedByCount(grew: readonly number[], flows: number): boolean {
  const sorted = [...grew].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  return median !== undefined && median >= Math.ceil((flows * 3) / 4);
}

/**
 * One datagram from 127.0.0.1:`port` to each of `flows` sockets of the kernel's choosing, all
 * received before the sockets close (an entry, if any, is made by then). Resolves the
 * receivers' ports; rejects when `port` is taken or the loopback has no IPv4.
 */
async function sendFlows(port: number, flows: number): Promise<number[]> {
  const from = dgram.createSocket("udp4");
  const receivers = Array.from({ length: flows }, () => dgram.createSocket("udp4"));
  let timer: NodeJS.Timeout | undefined;
  try {
    await bindLoopback(from, port);
    await Promise.all(receivers.map((r) => bindLoopback(r, 0)));
    const arrived = Promise.all(
      receivers.map((r) => new Promise<void>((resolve) => r.once("message", () => resolve()))),
    );
    const ports = receivers.map((r) => r.address().port);
    for (const to of ports) from.send(PROBE_DATAGRAM, to, "127.0.0.1");
    await Promise.race([
      arrived,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error("probe datagrams not received")),
          PROBE_TIMEOUT_MS,
        );
      }),
    ]);
    return ports;
  } finally {
    clearTimeout(timer);
    for (const s of [from, ...receivers]) {
      try {
        s.close();
      } catch {
        // never bound
      }
    }
  }
}

const PROBE_DATAGRAM = Uint8Array.of(0);

function bindLoopback(socket: dgram.Socket, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.bind({ port, address: "127.0.0.1", exclusive: true }, () => {
      socket.off("error", reject);
      resolve();
    });
  });
}

/** A port of [min, max] to probe as the relay's: any one, the recipe names the range whole. */
export function relayPortToProbe(
  min: number,
  max: number,
  draw: (min: number, max: number) => number = randomInt,
): number {
  return min + draw(0, max - min + 1);
}

function sentFrom(ports: readonly number[]): string {
  return ports.length === 1
    ? `a datagram sent from port ${ports[0]} on the loopback was tracked`
    : `datagrams sent from ports ${ports.join(", ")} on the loopback were tracked`;
}

/**
 * One warning when the kernel tracked a probe: what that means for the relay and the two ways
 * out (the recipe, or a table sized for it); none when nothing was tracked or nothing known.
 */
export function conntrackWarnings(finding: ConntrackFinding | undefined): PortWarning[] {
  if (finding === undefined || finding.tracked.length === 0) return [];
  const { count, max, udpTimeoutStream } = finding.sysctls;
  return [
    {
      msg: `connection tracking follows the relay's traffic (${sentFrom(finding.tracked)}): every client and every peer of an allocation is an entry of the kernel's table${udpTimeoutStream !== undefined ? `, kept ${udpTimeoutStream} s after its last datagram` : ""}, and when the table is full the kernel drops new clients and peers: exempt the relay's ports from tracking or raise net.netfilter.nf_conntrack_max`,
      fields: {
        trackedPorts: finding.tracked.join(","),
        ...(count !== undefined ? { conntrackCount: count } : {}),
        ...(max !== undefined ? { conntrackMax: max } : {}),
        ...(udpTimeoutStream !== undefined ? { udpTimeoutStream } : {}),
        file: NOTRACK_RECIPE,
      },
    },
  ];
}
