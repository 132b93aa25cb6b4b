/**
 * The requests that let an allocation's client reach a peer: CreatePermission (RFC 8656 §10.2:
 * a permission, §9, for every XOR-PEER-ADDRESS or for none) and ChannelBind (§12.2: a channel
 * to one peer transport address, which installs or refreshes the peer's permission too). A
 * peer the peer-address policy denies (§21) gets 403, as §10.2 and §12.2 allow. The allocation
 * keeps the permissions and channels and their rules (allocation.ts); a channel offload learns
 * the new deadlines before the success goes out.
 */

import { formatTransportAddress, type TransportAddress } from "../codec/address.js";
import { readAllXorAddresses, readChannelNumber, readXorAddress } from "../codec/attributes.js";
import { AttributeType, ErrorCode, MIN_CHANNEL } from "../codec/constants.js";
import type { StunMessage } from "../codec/message.js";
import type { PeerAddressPolicy } from "../policy/peer-address-policy.js";
import type { Allocation } from "./allocation.js";
import type { AllocationContext } from "./allocations.js";
import type { Reply } from "./responses.js";

export class PermissionRequests {
  readonly #context: AllocationContext;
  readonly #policy: PeerAddressPolicy;
  /** The highest channel number a client may bind (MAX_CHANNEL, or the legacy range's). */
  readonly #maxChannel: number;

  constructor(context: AllocationContext, policy: PeerAddressPolicy, maxChannel: number) {
    this.#context = context;
    this.#policy = policy;
    this.#maxChannel = maxChannel;
  }

  /** RFC 8656 §10.2: CreatePermission, for every XOR-PEER-ADDRESS or for none. */
  createPermission(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const peers = readAllXorAddresses(msg, AttributeType.XorPeerAddress);
    if (peers.length === 0 || peers.some((p) => p === undefined)) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    for (const peer of peers as TransportAddress[]) {
      if (allocation.relayFor(peer.family) === undefined) {
        reply.error(ErrorCode.PeerAddressFamilyMismatch);
        return;
      }
      const policy = this.#policy.check(peer.address);
      if (policy !== undefined) {
        reply.error(ErrorCode.Forbidden, undefined, undefined, {
          reason: "peer-policy",
          peer: peer.address,
          policy,
        });
        return;
      }
    }
    if (!allocation.installPermissions(peers as TransportAddress[], now)) {
      reply.error(ErrorCode.InsufficientCapacity, undefined, undefined, {
        reason: "permission-limit",
      });
      return;
    }
    this.#context.deadlines.schedule(allocation);
    // Channels to these peers get a later deadline, or are usable again (§9: a permission
    // that had lapsed).
    this.#context.offload?.sync(allocation, now);
    reply.success();
  }

  /** RFC 8656 §12.2: ChannelBind (which installs the peer's permission too). */
  channelBind(allocation: Allocation, msg: StunMessage, reply: Reply, now: number): void {
    const number = readChannelNumber(msg);
    const peer = readXorAddress(msg, AttributeType.XorPeerAddress);
    // Channels carry UDP (RFC 6062 §5: a TCP allocation relays over connections only), and a
    // peer transport address needs a port: 0 cannot be sent to.
    if (
      number === undefined ||
      number < MIN_CHANNEL ||
      number > this.#maxChannel ||
      peer === undefined ||
      peer.port === 0 ||
      allocation.requestedTransport !== "udp"
    ) {
      reply.error(ErrorCode.BadRequest);
      return;
    }
    const relay = allocation.relayFor(peer.family);
    if (relay === undefined) {
      reply.error(ErrorCode.PeerAddressFamilyMismatch);
      return;
    }
    // With the port: the relay's own address is refused here outside the relay port range.
    const policy = this.#policy.check(peer.address, peer.port, "udp");
    if (policy !== undefined) {
      reply.error(ErrorCode.Forbidden, undefined, undefined, {
        reason: "peer-policy",
        peer: formatTransportAddress(peer),
        policy,
      });
      return;
    }
    const code = allocation.bindChannel(number, peer, relay, now);
    if (code !== 0) {
      reply.error(code);
      return;
    }
    this.#context.deadlines.schedule(allocation);
    // The entry is queued before the success: a runtime that carries out outputs in order has
    // it in place before the client can send ChannelData on the answer.
    this.#context.offload?.sync(allocation, now);
    reply.success();
  }
}
