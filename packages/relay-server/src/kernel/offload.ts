// The kernel data path room: carries out relay-core's `offload-channel` and `end-offload`
// outputs (relay-core README, "Channel offload") on @turnpike/kernel-path's maps, and reads
// the kernel's counters back into the relay's.
//
//   offload-channel, new id    bind: the client 5-tuple and channel <-> the relayed address and
//                              peer, until the deadline, charged to the allocation's and the
//                              user's token buckets (buckets.ts)
//   offload-channel, known id  setDeadline (a refresh moved it): one store, no system call
//   end-offload                unbind: its final counters go into the relay's counters and the
//                              allocation's totals (logged when the allocation ends, which
//                              relay-core reports after all its end-offloads)
//   metrics collection         every live binding's counters, the change since the last read
//
// relay-core speaks numbers (addresses as uint32 or four words, its ListenerId, deadlines on
// the engine's performance.now() clock); the kernel path takes text addresses and its own
// clock (CLOCK_MONOTONIC, KernelPath.nowMs()). Both clocks are monotonic, so the offset
// between them is read at each conversion and the deadline rounded down: the kernel never
// relays past the instant relay-core's own data path stops. Whatever the kernel does not take
// (a cross-family pair, a full map, no bucket left, a relay socket on the wildcard address with
// no local address for it) simply stays with the UDP path, which relays it as before.
//
// Control-rate work only (a ChannelBind, a refresh, an allocation's end, a metrics read):
// nothing here runs per packet.

import { COUNTER_FIELDS, KernelPath } from "@turnpike/kernel-path";
import {
  type AllocationId,
  formatIp,
  type ListenerId,
  type NumericTransportAddress,
  type OffloadId,
  type TurnServerOutput,
} from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import type { SocketAddress } from "../config/types.js";
import type { RelayStats } from "../stats.js";
import type { KernelBuckets } from "./buckets.js";
import type { WildcardRelayed } from "./select.js";

type OffloadChannel = Extract<TurnServerOutput, { type: "offload-channel" }>;

/** Application data an allocation's bindings relayed in the kernel (for its log line). */
export interface KernelTotals {
  toPeerPackets: number;
  toPeerBytes: number;
  toClientPackets: number;
  toClientBytes: number;
  /** Dropped by a token bucket (its bandwidth limits). */
  limitedPackets: number;
}

interface Entry {
  readonly slot: number;
  readonly output: OffloadChannel;
  /** The binding's counters as last folded into the relay's (COUNTER_FIELDS order). */
  readonly seen: Float64Array;
}

// Where each counter is in a COUNTER_FIELDS array (kernel-path reads them into one).
const TO_PEER_PACKETS = COUNTER_FIELDS.indexOf("toPeerPackets");
const TO_PEER_BYTES = COUNTER_FIELDS.indexOf("toPeerBytes");
const TO_CLIENT_PACKETS = COUNTER_FIELDS.indexOf("toClientPackets");
const TO_CLIENT_BYTES = COUNTER_FIELDS.indexOf("toClientBytes");
const LIMITED_PACKETS = COUNTER_FIELDS.indexOf("limitedPackets");

/** Which engine holds a slot of the shared maps (the supervisor, workers/pool.ts, frees a dead worker's). */
export interface SlotOwners {
  readonly owners: Uint16Array;
  /** This engine's mark: its worker index + 1. */
  readonly tag: number;
}

export interface KernelOffloadSetting {
  readonly kernel: KernelPath;
  readonly buckets: KernelBuckets;
  /** The bound UDP listener relay-core calls `listener` (engine/driver.ts, in bind order). */
  readonly listener: (id: ListenerId) => SocketAddress | undefined;
  readonly relayed: WildcardRelayed;
  readonly stats: RelayStats;
  readonly log: Logger;
  /** Set on a worker: marks the slots this engine holds. */
  readonly owners?: SlotOwners;
}

export class KernelOffload {
  private readonly entries = new Map<OffloadId, Entry>();
  private readonly bySlot = new Map<number, OffloadId>();
  private readonly totals = new Map<AllocationId, KernelTotals>();
  /** Bandwidth-limit drops of bindings that ended (live ones are read at collection). */
  private endedLimited = 0;
  /** Where a binding's counters are read to (nothing is allocated per collection). */
  private readonly now = new Float64Array(COUNTER_FIELDS.length);

  constructor(private readonly s: KernelOffloadSetting) {}

  /** The `offload-channel` output. */
  offload(o: OffloadChannel): void {
    const entry = this.entries.get(o.offload);
    if (entry !== undefined) {
      this.s.kernel.setDeadline(entry.slot, kernelDeadline(o.expiresAt));
      return;
    }
    this.bind(o);
  }

  /** The `end-offload` output. */
  end(offload: OffloadId): void {
    const entry = this.entries.get(offload);
    if (entry === undefined) return;
    this.entries.delete(offload);
    this.bySlot.delete(entry.slot);
    this.s.buckets.release("allocation", entry.output.allocationBucket);
    this.s.buckets.release("user", entry.output.userBucket);
    if (this.s.owners) this.s.owners.owners[entry.slot] = 0;
    // Taken out, with its final counters (every datagram until the routes were gone).
    const final = this.now;
    if (!this.s.kernel.unbindInto(entry.slot, final)) final.set(entry.seen);
    this.fold(entry, final);
    this.endedLimited += final[LIMITED_PACKETS]!;
    const t = this.totals.get(entry.output.allocation) ?? {
      toPeerPackets: 0,
      toPeerBytes: 0,
      toClientPackets: 0,
      toClientBytes: 0,
      limitedPackets: 0,
    };
    t.toPeerPackets += final[TO_PEER_PACKETS]!;
    t.toPeerBytes += final[TO_PEER_BYTES]!;
    t.toClientPackets += final[TO_CLIENT_PACKETS]!;
    t.toClientBytes += final[TO_CLIENT_BYTES]!;
    t.limitedPackets += final[LIMITED_PACKETS]!;
    this.totals.set(entry.output.allocation, t);
  }

  /**
   * What `allocation`'s bindings relayed in the kernel, once it ended (relay-core ends every
   * entry of an allocation before it reports `allocation-ended`); undefined if none was bound.
   */
  takeTotals(allocation: AllocationId): KernelTotals | undefined {
    const t = this.totals.get(allocation);
    this.totals.delete(allocation);
    return t;
  }

  /**
   * At metrics collection: what the live bindings relayed since the last read, into the
   * relay's counters. Returns the kernel's bandwidth-limit drops so far (for
   * turn.dropped.packets, next to relay-core's own).
   */
  collect(): number {
    let limited = this.endedLimited;
    for (const entry of this.entries.values()) {
      this.s.kernel.readCounters(entry.slot, this.now);
      this.fold(entry, this.now);
      limited += this.now[LIMITED_PACKETS]!;
    }
    return limited;
  }

  /** Takes out whatever is still bound (relay-core's closeAll normally ended it all). */
  close(): void {
    for (const id of [...this.entries.keys()]) this.end(id);
  }

  private bind(o: OffloadChannel): void {
    const listener = this.s.listener(o.listener);
    const relayed = this.relayedAddress(o.relayed);
    if (listener === undefined || relayed === undefined) return;
    const allocationBucket = this.s.buckets.acquire("allocation", o.allocationBucket);
    const userBucket = this.s.buckets.acquire("user", o.userBucket);
    const release = () => {
      if (allocationBucket !== undefined) this.s.buckets.release("allocation", o.allocationBucket);
      if (userBucket !== undefined) this.s.buckets.release("user", o.userBucket);
    };
    // No kernel bucket left for a limit: relay-core enforces it in userspace instead.
    if (allocationBucket === undefined || userBucket === undefined) {
      release();
      return;
    }
    let slot: number | undefined;
    try {
      slot = this.s.kernel.bind({
        client: { address: ipText(o.client), port: o.client.port },
        listener: { address: listener.ip, port: listener.port },
        channel: o.channel,
        relayed: { address: relayed, port: o.relayed.port },
        peer: { address: ipText(o.peer), port: o.peer.port },
        deadlineMs: kernelDeadline(o.expiresAt),
        buckets: [allocationBucket, userBucket],
      });
    } catch (err) {
      this.s.log.warn("kernel path: binding left to userspace", {
        allocation: o.allocation,
        channel: o.channel,
        err: (err as Error).message,
      });
      slot = undefined;
    }
    // Cross-family, or the maps are full: the UDP path relays it.
    if (slot === undefined) {
      release();
      return;
    }
    // The same client 5-tuple and channel under a new id (relay-core ends the old one first;
    // this keeps the slot with one owner regardless).
    const previous = this.bySlot.get(slot);
    const carried = previous !== undefined ? this.entries.get(previous) : undefined;
    if (previous !== undefined && carried !== undefined) {
      this.entries.delete(previous);
      this.s.buckets.release("allocation", carried.output.allocationBucket);
      this.s.buckets.release("user", carried.output.userBucket);
    }
    this.entries.set(o.offload, {
      slot,
      output: o,
      seen: carried?.seen ?? new Float64Array(COUNTER_FIELDS.length),
    });
    this.bySlot.set(slot, o.offload);
    if (this.s.owners) this.s.owners.owners[slot] = this.s.owners.tag;
  }

  private relayedAddress(a: NumericTransportAddress): string | undefined {
    const text = ipText(a);
    if (text !== "0.0.0.0" && text !== "::") return text;
    return this.s.relayed[a.family];
  }

  /** Adds what `entry` relayed since its last read (`now`) to the relay's counters. */
  private fold(entry: Entry, now: Float64Array): void {
    const s = this.s.stats;
    const seen = entry.seen;
    s.kernelRelayedPackets[0]! += now[TO_PEER_PACKETS]! - seen[TO_PEER_PACKETS]!;
    s.kernelRelayedBytes[0]! += now[TO_PEER_BYTES]! - seen[TO_PEER_BYTES]!;
    s.kernelRelayedPackets[1]! += now[TO_CLIENT_PACKETS]! - seen[TO_CLIENT_PACKETS]!;
    s.kernelRelayedBytes[1]! += now[TO_CLIENT_BYTES]! - seen[TO_CLIENT_BYTES]!;
    seen.set(now);
  }
}

/** relay-core's deadline (performance.now() ms) on the kernel's monotonic clock, rounded down. */
function kernelDeadline(expiresAt: number): number {
  return Math.floor(expiresAt + (KernelPath.nowMs() - performance.now()));
}

/** A NumericTransportAddress's IP as text (the kernel path's bind takes text). */
export function ipText(a: NumericTransportAddress): string {
  if (a.family === 4) {
    const ip = a.ip4 >>> 0;
    return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
  }
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 4; i++) view.setUint32(i * 4, a.ip6?.[i] ?? 0);
  return formatIp({ family: 6, bytes });
}
