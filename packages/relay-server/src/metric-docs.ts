// The relay's metrics as data: one row per instrument metrics.ts registers (name, kind, unit,
// attributes, meaning), from which the README's metrics table is generated and against which
// the tests check what the exporters really export (metrics.test.ts; deploy's dashboard test).
// A data table.

import { PACKET_SIZE_BOUNDS } from "./stats.js";

export interface MetricDoc {
  readonly name: string;
  readonly instrument: string;
  readonly unit: string;
  readonly attributes: string;
  readonly description: string;
}

export const METRIC_DOCS: readonly MetricDoc[] = [
  {
    name: "turn.allocations.active",
    instrument: "UpDownCounter",
    unit: "{allocation}",
    attributes: "transport, family",
    description: "Allocations currently live",
  },
  {
    name: "turn.allocations.created",
    instrument: "Counter",
    unit: "{allocation}",
    attributes: "transport, family",
    description: "Allocations created (successful Allocate)",
  },
  {
    name: "turn.allocations.expired",
    instrument: "Counter",
    unit: "{allocation}",
    attributes: "transport, family",
    description: "Allocations that reached the end of their lifetime",
  },
  {
    name: "turn.allocations.deleted",
    instrument: "Counter",
    unit: "{allocation}",
    attributes: "transport, family",
    description: "Allocations deleted by the client (Refresh lifetime 0) or the relay",
  },
  {
    name: "turn.allocation.lifetime",
    instrument: "Histogram",
    unit: "s",
    attributes: "-",
    description: "How long ended allocations lived",
  },
  {
    name: "stun.responses",
    instrument: "Counter",
    unit: "{response}",
    attributes: "method, class, error_code",
    description: "STUN/TURN responses sent, by method, class (success/error) and error code",
  },
  {
    name: "turn.relayed.packets",
    instrument: "Counter",
    unit: "{packet}",
    attributes: "direction, transport, path",
    description:
      "Packets relayed (direction client_to_peer or peer_to_client; path userspace, or kernel: bound ChannelData the kernel data path relayed, read from its counters at collection)",
  },
  {
    name: "turn.relayed.bytes",
    instrument: "Counter",
    unit: "By",
    attributes: "direction, transport, path",
    description: "Payload bytes relayed (application data: without the ChannelData header)",
  },
  {
    name: "turn.packet.size",
    instrument: "Histogram",
    unit: "By",
    attributes: "-",
    description: `Relayed payload sizes (buckets ${PACKET_SIZE_BOUNDS.join(", ")}); the userspace path's only (the kernel counts packets and bytes, not sizes)`,
  },
  {
    name: "turn.permissions.active",
    instrument: "UpDownCounter",
    unit: "{permission}",
    attributes: "-",
    description: "Permissions installed across all allocations",
  },
  {
    name: "turn.channels.active",
    instrument: "UpDownCounter",
    unit: "{channel}",
    attributes: "-",
    description: "Channel bindings across all allocations",
  },
  {
    name: "turn.connections.active",
    instrument: "UpDownCounter",
    unit: "{connection}",
    attributes: "-",
    description: "Open TCP/TLS client connections",
  },
  {
    name: "turn.reservations.active",
    instrument: "UpDownCounter",
    unit: "{reservation}",
    attributes: "-",
    description:
      "EVEN-PORT reservations held (RFC 8656 §7.2), each counted as an allocation of the user that made it",
  },
  {
    name: "turn.relay.udp_io",
    instrument: "Gauge",
    unit: "1",
    attributes: "io",
    description: "The UDP data path in use (io: batch or dgram); always 1",
  },
  {
    name: "turn.relay.socket_pool.sockets",
    instrument: "Counter",
    unit: "{socket}",
    attributes: "source",
    description:
      "UDP sockets the batched path opened (relay sockets and listeners), by source: pool (made ahead of time on udp-batch's pool thread) or inline (made on the event loop: the pool was empty, or off with TURNPIKE_UDP_SOCKET_POOL=off); batch only",
  },
  {
    name: "turn.relay.socket_pool.held",
    instrument: "Gauge",
    unit: "{socket}",
    attributes: "family",
    description:
      "Unbound UDP sockets udp-batch's pool holds ready (at most 64 per family, one per 256 of RLIMIT_NOFILE); batch only",
  },
  {
    name: "turn.relay.splice_pool.pipes",
    instrument: "Gauge",
    unit: "{pipe}",
    attributes: "state",
    description:
      "Kernel pipes of the RFC 6062 pipes spliced in the kernel (--tcp-splice auto), by state: lent (a direction with bytes in flight holds one) or idle (kept for the next, at most 8 per engine). Each counts 16 pages against its user's pipe allowance while it exists: past fs.pipe-user-pages-soft (16384 pages, 1024 pipes) an unprivileged user's new pipes are 8 KiB and relay at half the throughput for 2.5x the CPU per byte; spliced pipes only",
  },
  {
    name: "turn.relay.splice_pool.made",
    instrument: "Counter",
    unit: "{pipe}",
    attributes: "-",
    description:
      "Kernel pipes made for spliced RFC 6062 pipes (the engines' pools lend them and take them back empty: a pipe made per transfer means the pool is too small for the traffic); spliced pipes only",
  },
  {
    name: "turn.relay.kernel_path",
    instrument: "Gauge",
    unit: "1",
    attributes: "path",
    description:
      "The kernel data path (path: tc, bound ChannelData relayed in the kernel, or off); always 1",
  },
  {
    name: "turn.relay.kernel_path.datagrams",
    instrument: "Counter",
    unit: "{datagram}",
    attributes: "outcome",
    description:
      "UDP datagrams the kernel data path's program saw, counted in the kernel, by outcome: relayed-to-peer, relayed-to-client, relayed-chained, rate-limited (dropped by a token bucket), error (dropped: a helper failed), or pass-* (left to the relay's sockets, and why: pass-no-entry is STUN and unbound traffic; pass-checksum-offload, pass-frag-needed, pass-vlan, pass-no-neighbour and the like say why bound ChannelData was not relayed in the kernel); kernel path only",
  },
  {
    name: "turn.auth.failures",
    instrument: "Counter",
    unit: "{failure}",
    attributes: "reason",
    description: "Requests rejected by authentication",
  },
  {
    name: "turn.dropped.packets",
    instrument: "Counter",
    unit: "{packet}",
    attributes: "reason",
    description:
      "Packets dropped (malformed, no permission, policy, backpressure, bandwidth-limit (the kernel data path's token buckets included), ...)",
  },
  {
    name: "turn.auth.legacy_pinned",
    instrument: "Counter",
    unit: "{request}",
    attributes: "-",
    description:
      "Requests accepted with pinned credentials of the old scheme (signed as plain REST ones) before --legacy-pinned-credentials-until: mint new ones before that date",
  },
  {
    name: "turn.bandwidth.pauses",
    instrument: "Counter",
    unit: "{pause}",
    attributes: "-",
    description:
      "Times an RFC 6062 pipe was paused for a bandwidth limit (--max-bps, --max-bps-per-user); over-limit datagrams count in turn.dropped.packets (bandwidth-limit)",
  },
  {
    name: "nodejs.eventloop.delay.p50",
    instrument: "Gauge",
    unit: "s",
    attributes: "-",
    description: "Event-loop delay median since the previous collection",
  },
  {
    name: "nodejs.eventloop.delay.p99",
    instrument: "Gauge",
    unit: "s",
    attributes: "-",
    description: "Event-loop delay 99th percentile since the previous collection",
  },
  {
    name: "nodejs.eventloop.delay.max",
    instrument: "Gauge",
    unit: "s",
    attributes: "-",
    description: "Event-loop delay maximum since the previous collection",
  },
  {
    name: "process.cpu.time",
    instrument: "Counter",
    unit: "s",
    attributes: "cpu.mode",
    description: "CPU time used by the process (user, system)",
  },
  {
    name: "process.memory.usage",
    instrument: "UpDownCounter",
    unit: "By",
    attributes: "-",
    description: "Resident set size",
  },
];

/** The README metrics table (Markdown). */
export function renderMetricsTable(): string {
  const rows = [
    "| metric | instrument | unit | attributes | meaning |",
    "|---|---|---|---|---|",
    ...METRIC_DOCS.map(
      (m) =>
        `| \`${m.name}\` | ${m.instrument} | \`${m.unit}\` | ${m.attributes} | ${m.description} |`,
    ),
  ];
  return `${rows.join("\n")}\n`;
}
