/**
 * Channel offload (TurnServerOptions.channelOffload): which channel bindings a runtime may
 * relay in a data path of its own (a kernel one: a TC program that turns ChannelData into UDP
 * and back, RFC 8656 §12.4), and until when. The server still decides everything
 * (authentication, permissions, channels, lifetimes, peer policy, quotas); this module only
 * reports the outcome, as "offload-channel" and "end-offload" outputs made of numbers.
 *
 * The rule: a channel binding of a UDP client's allocation is offloaded exactly while the
 * server's own data path relays it (data-path.ts, channelData and peerDatagram): while `now` is
 * before the earliest of the channel's expiry (§12), its peer permission's (§9: without one,
 * data must not flow even on a bound channel) and the allocation's (§6). That instant travels
 * with the entry as `expiresAt`, so a runtime that honours it is right even when its timer
 * fires late; "end-offload" is the cleanup that follows, and the answer to every other way an
 * allocation ends. Over TCP/TLS, ChannelData stays with the server (framing, §12.5).
 *
 * `sync` recomputes that for every channel of one allocation after anything that may have
 * moved it (ChannelBind, CreatePermission, Refresh, the timer) and queues only what changed:
 * O(channels of the allocation), like the timer's own sweep of them. Nothing here runs per
 * packet.
 */
import type { OffloadId } from "../ids.js";
import { ipv4ToUint32 } from "../policy/ip.js";
import type { Allocation, ChannelBinding, RelaySocket } from "./allocation.js";
import { ipv6Words } from "./datagram-source.js";
import type { Emit, NumericTransportAddress, TurnServerOutput } from "./types.js";

/** What the runtime was last told about one offloaded channel binding. */
export type OffloadEntry = Extract<TurnServerOutput, { type: "offload-channel" }>;

export class ChannelOffload {
  readonly #emit: Emit;
  #nextId = 1;

  constructor(emit: Emit) {
    this.#emit = emit;
  }

  /**
   * Bring the runtime's entries for `allocation` in line with what the server relays at `now`:
   * "offload-channel" for a binding that became usable or whose deadline moved, "end-offload"
   * for one that no longer is. Called before the response of the request that changed things
   * is queued, so the entry is in place before the client can act on the answer.
   */
  sync(allocation: Allocation, now: number): void {
    if (allocation.client.transport !== "udp") return;
    const active = allocation.state === "active" && !allocation.deleted;
    for (const binding of allocation.channels.values()) {
      const until = Math.min(binding.expiresAt, binding.permission.expiresAt, allocation.expiresAt);
      if (active && binding.coolingUntil === 0 && until > now) this.#offer(binding, until);
      else this.#end(binding);
    }
  }

  /**
   * End the entries of `allocation`'s channels (those relayed over `family` only, when given):
   * the allocation, or that relayed address of it, is going (RFC 8656 §8.2).
   */
  end(allocation: Allocation, family?: 4 | 6): void {
    for (const binding of allocation.channels.values()) {
      if (family === undefined || binding.relay.family === family) this.#end(binding);
    }
  }

  #offer(binding: ChannelBinding, expiresAt: number): void {
    const last = binding.offload;
    if (last?.expiresAt === expiresAt) return;
    // A new object each time: the runtime may still hold the previous one.
    const entry: OffloadEntry =
      last === undefined ? this.#entry(binding, expiresAt) : { ...last, expiresAt };
    binding.offload = entry;
    this.#emit(entry);
  }

  #end(binding: ChannelBinding): void {
    const last = binding.offload;
    if (last === undefined) return;
    binding.offload = undefined;
    this.#emit({ type: "end-offload", offload: last.offload });
  }

  #entry(binding: ChannelBinding, expiresAt: number): OffloadEntry {
    const relay = binding.relay;
    const allocation = relay.allocation;
    const client = allocation.client;
    return {
      type: "offload-channel",
      offload: this.#nextId++ as OffloadId,
      allocation: allocation.id,
      listener: client.listener,
      client: numeric(client.family, client.ip4, client.ip6, client.port),
      channel: binding.number,
      relay: relay.id,
      relayHandle: relay.runtimeHandle,
      relayed: boundAddress(relay),
      peer: numeric(binding.peer.family, binding.peerIp4, binding.peerIp6, binding.peer.port),
      expiresAt,
      allocationBucket: allocation.bandwidth?.allocationBucket,
      userBucket: allocation.bandwidth?.userBucket,
    };
  }
}

/** Copies of the server's own words, so that a runtime writing into them changes nothing here. */
function numeric(
  family: 4 | 6,
  ip4: number,
  ip6: Uint32Array | undefined,
  port: number,
): NumericTransportAddress {
  return family === 4
    ? { family, ip4, ip6: undefined, port }
    : { family, ip4: -1, ip6: Uint32Array.from(ip6 ?? new Uint32Array(4)), port };
}

/** The address the relay socket is bound on, as numbers (a wildcard bind is all zeros). */
function boundAddress(relay: RelaySocket): NumericTransportAddress {
  return relay.family === 4
    ? numeric(4, ipv4ToUint32(relay.bindAddress), undefined, relay.port)
    : numeric(6, -1, ipv6Words(relay.bindAddress), relay.port);
}
