// A UDP service's data path: per peer (ip:port) a flow, one local dgram socket towards the
// target. Peer -> target: the payload of a ChannelData message or Data indication from the relay
// goes out of that peer's socket (fromPeer). The first datagram of a peer also binds a channel
// (RFC 8656 §12), so replies travel as ChannelData with a 4-byte header (header and payload
// handed to the kernel as two buffers, never concatenated); until the bind is confirmed, and
// when all channel numbers are taken, they go as Send indications (RFC 8656 §11.1).
//
// Its own timer: idle flows are swept (socket closed, channel left to expire) while the
// allocation is ready. It calls the current TurnClient directly (ARCHITECTURE.md, "The call
// order"); what that queues (a ChannelBind) the driver drains after the input that caused it.

import { createSocket, type Socket as DgramSocket } from "node:dgram";
import {
  formatTransportAddress,
  type TransportAddress,
  type TurnClient,
  writeChannelDataHeader,
} from "@turnpike/relay-core/client";
import type { Logger } from "@turnpike/runtime-kit";
import type { HostPort } from "../config/index.js";
import type { TargetDialer } from "../targets.js";
import { closeQuietly } from "./control.js";
import type { PeerFilter } from "./peer-filter.js";
import type { Traffic } from "./traffic.js";

/** UDP peer flows idle this long are closed (their local socket freed). */
export const UDP_FLOW_IDLE_MS = 120_000;
/** At most this many UDP peer flows per tunnel (each holds a local socket). */
const MAX_UDP_FLOWS = 1024;

export interface UdpFlowsOptions {
  readonly target: HostPort;
  /** Idle flows are closed after this many ms. */
  readonly idleMs: number;
  /** Resolves and checks the target's address (targets.ts). */
  readonly dialer: TargetDialer;
  readonly log: Logger;
  readonly now: () => number;
  readonly traffic: Traffic;
  readonly peers: PeerFilter;
  /** The TurnClient of the current allocation, undefined between allocations. */
  readonly client: () => TurnClient | undefined;
  /** Onto the control connection: `bytes`, then `payload` as a second buffer when given. */
  readonly transmit: (bytes: Uint8Array, payload?: Uint8Array) => void;
}

interface UdpFlow {
  readonly key: string;
  readonly peer: TransportAddress;
  readonly socket: DgramSocket;
  /** undefined: no channel number was free, the flow answers with Send indications. */
  readonly channel: number | undefined;
  bound: boolean;
  lastUse: number;
}

export class UdpFlows {
  /** Flows that got no channel (all 4096 numbers bound or cooling down). */
  channelsExhausted = 0;
  private readonly flows = new Map<string, UdpFlow>();
  private targetAddress: { ip: string; family: 4 | 6 } | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: UdpFlowsOptions) {}

  /** Open flows (GET /list's openConnections for a UDP service). */
  get size(): number {
    return this.flows.size;
  }

  /**
   * The target's address, checked, before each control connection opens (so a name is resolved
   * and judged again on every reconnect); throws why not.
   */
  async resolveTarget(): Promise<void> {
    const a = await this.o.dialer.resolve(this.o.target.host);
    this.targetAddress = { ip: a.address, family: a.family };
  }

  /** A datagram from `peer` through the relay: out of that peer's socket to the target. */
  fromPeer(peer: TransportAddress, payload: Uint8Array): void {
    if (this.targetAddress === undefined) return;
    if (!this.o.peers.allows(peer)) return;
    const key = formatTransportAddress(peer);
    let flow = this.flows.get(key);
    if (flow === undefined) {
      if (this.flows.size >= MAX_UDP_FLOWS) return;
      flow = this.openFlow(key, peer);
      if (flow === undefined) return;
    }
    flow.lastUse = this.o.now();
    this.o.traffic.in(payload.length);
    flow.socket.send(payload, this.o.target.port, this.targetAddress.ip);
  }

  /** The relay confirmed the ChannelBind: replies to `peer` go as ChannelData from now on. */
  channelBound(peer: TransportAddress, channel: number): void {
    const flow = this.flows.get(formatTransportAddress(peer));
    if (flow !== undefined && flow.channel === channel) flow.bound = true;
  }

  /** The allocation is ready: sweep idle flows from now on. */
  startSweep(): void {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(30_000, this.o.idleMs / 2));
    this.sweepTimer.unref();
  }

  /** The allocation is gone: every flow with it. */
  closeAll(): void {
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    for (const f of this.flows.values()) closeQuietly(f.socket);
    this.flows.clear();
  }

  private openFlow(key: string, peer: TransportAddress): UdpFlow | undefined {
    const target = this.targetAddress!;
    const client = this.o.client();
    if (client === undefined) return undefined;
    const socket = createSocket({ type: target.family === 6 ? "udp6" : "udp4" });
    // RFC 8656 §12: a channel for this peer, so replies cost 4 bytes of header, not 36. There
    // are 4096 numbers and an unbound one stays reserved for its lifetime plus a 5-minute
    // cool-down, so a busy tunnel can run out: then this flow answers with Send indications.
    let channel: number | undefined;
    try {
      channel = client.bindChannel(peer, this.o.now());
    } catch (err) {
      this.channelsExhausted++;
      if (this.channelsExhausted === 1 || this.channelsExhausted % 1000 === 0) {
        this.o.log.warn("no channel number free: this peer is served with Send indications", {
          peer: key,
          flowsWithoutChannel: this.channelsExhausted,
          err: (err as Error).message,
        });
      }
    }
    const flow: UdpFlow = { key, peer, socket, channel, bound: false, lastUse: this.o.now() };
    this.flows.set(key, flow);
    this.o.traffic.connectionOpened();
    socket.on("error", (err) => {
      this.o.log.debug("target socket error", { peer: key, err: err.message });
    });
    // Not connect()ed (sends would be refused until the connect completes); instead every reply
    // must come from the target's address, anything else on this port is dropped.
    const port = this.o.target.port;
    socket.on("message", (reply, from) => {
      if (from.port === port && from.address === target.ip) this.fromTarget(flow, reply);
    });
    this.o.log.debug("udp peer flow opened", { peer: key, channel });
    return flow;
  }

  /** A reply from the target: back to the flow's peer through the relay. */
  private fromTarget(flow: UdpFlow, reply: Buffer): void {
    const client = this.o.client();
    if (client === undefined || this.flows.get(flow.key) !== flow) return;
    flow.lastUse = this.o.now();
    this.o.traffic.out(reply.length);
    if (flow.bound && flow.channel !== undefined) {
      // A fresh 4-byte header per datagram (from Node's pool): the kernel may get the buffers
      // later than this call returns, so a shared header could be overwritten in between.
      const header = Buffer.allocUnsafe(4);
      writeChannelDataHeader(header, 0, flow.channel, reply.length);
      this.o.transmit(header, reply);
      return;
    }
    // Until the ChannelBind succeeded: a Send indication (RFC 8656 §11.1).
    this.o.transmit(client.sendIndication(flow.peer, reply));
  }

  private sweep(): void {
    const cutoff = this.o.now() - this.o.idleMs;
    for (const f of this.flows.values()) {
      if (f.lastUse >= cutoff) continue;
      this.flows.delete(f.key);
      // Stop refreshing its channel: the client frees the number after the cool-down (RFC 8656
      // §12), so numbers come back instead of running out after 4096 peers.
      if (f.channel !== undefined) this.o.client()?.unbindChannel(f.channel);
      closeQuietly(f.socket);
    }
  }
}
