// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Turnpike's kernel data path: bound ChannelData relayed without leaving the kernel.
 *
 * relay-core decides everything (authentication, permissions, channels, lifetimes, quotas) and
 * the runtime puts each live channel binding into the maps of layout.h. This program then
 * relays the two kinds of datagrams a binding covers (RFC 8656 §12):
 *
 *   client -> peer   a ChannelData datagram to a listener, from a client 5-tuple with a live
 *                    binding for its channel: the 4-byte header is removed (and up to 3 bytes
 *                    of padding after the data, §12.5), the datagram is readdressed from the
 *                    relayed address to the peer and sent on.
 *   peer -> client   a datagram to a relayed address from a peer with a live binding on it:
 *                    the header is added, the datagram is readdressed from the listener to the
 *                    client and sent on.
 *
 * "Sent on" is a FIB lookup and a redirect out of the interface it names; a destination on this
 * host is reached directly when the datagram came in on the loopback interface (it still carries
 * its local route), and a peer that is another allocation's relayed address on this relay is
 * relayed to that allocation's client in the same pass (two TURN clients of one relay).
 * Everything else continues into the stack unchanged (TCX_NEXT) and reaches the relay's sockets:
 * STUN, Send and Data indications, unbound peers and channels, expired bindings, fragments, IP
 * options, malformed lengths, traffic of other families. Each reason is counted in tp_stats.
 *
 * One compilation unit, one object, two entry points over the same stages: turnpike_tc (TCX
 * ingress, every interface) and turnpike_xdp (the driver's hook, native XDP only; see
 * relay_xdp() for what differs there). The stages are in the headers it includes, in the order
 * relay() below calls them:
 *
 *   parse.h       Ethernet, IPv4/IPv6, UDP; options and fragments refused
 *   route.h       which binding (client -> peer, peer -> client, chained) and what it becomes
 *   checksum.h    the UDP checksum updated (RFC 1624), locally sent datagrams recognised
 *   accounting.h  deadlines, token buckets, per-binding counters
 *   rewrite.h     the new IP, UDP and ChannelData headers written
 *   forward.h     FIB lookup: redirect out of an interface, or local delivery
 *   maps.h        the maps (their layout, shared with the loader: layout.h)
 *
 * Checksums (checksum.h). A datagram sent by a socket on this host has no checksum yet
 * (CHECKSUM_PARTIAL). Removing or adding the header moves the UDP header relative to
 * csum_start, which no helper can fix, so such a datagram is relayed in the kernel only when
 * it stays on this host (loopback); otherwise it goes to userspace (TP_STAT_PASS_CSUM_OFFLOAD).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>

#include "accounting.h"
#include "checksum.h"
#include "dgram.h"
#include "forward.h"
#include "layout.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "route.h"

static __always_inline int pass(__u32 stat)
{
	count(stat);
	return TP_TCX_NEXT;
}

static __always_inline int relay(struct __sk_buff *skb)
{
	struct dgram d;
	struct out o = {};
	struct next_hop h = {};
	__u8 tail4[4] = {};
	__u32 r, ingress = skb->ingress_ifindex;
	__u64 now;
	__u16 check;
	int full, on_loopback;

	/* Headers in a paged skb: make them linear. (Constant offsets only: without CAP_PERFMON
	 * the verifier refuses variable arithmetic on packet pointers. A datagram shorter than
	 * PARSE_LEN whose few bytes a driver left paged merely fails to parse: userspace has it.) */
	if ((void *)(long)skb->data + PARSE_LEN > (void *)(long)skb->data_end &&
	    skb->len >= PARSE_LEN)
		bpf_skb_pull_data(skb, PARSE_LEN);
	r = parse((void *)(long)skb->data, (void *)(long)skb->data_end, skb->len, &d);
	if (r == NOT_UDP)
		return TP_TCX_NEXT;
	if (r != PARSED)
		return pass(r);
	if (skb->vlan_present)
		return pass(TP_STAT_PASS_VLAN);
	if (skb->gso_segs > 1)
		return pass(TP_STAT_PASS_GSO);

	now = bpf_ktime_get_ns();
	r = route(&d, &o, now);
	if (r != PARSED)
		return pass(r);

	r = find_next_hop(skb, &d, &o, &h);
	if (r != PARSED)
		return pass(r);
	on_loopback = ingress == LOOPBACK_IFINDEX;
	if (h.way == WAY_LOCAL && !on_loopback)
		return pass(TP_STAT_PASS_LOCAL); /* only the stack reaches it (see the top) */
	full = !looks_partial(&d);
	if (!full) {
		/* Locally sent. It may stay here: IPv4 then says "no checksum"; an IPv6 datagram
		 * that grows is fine (the stack trusts CHECKSUM_PARTIAL while csum_start lies inside
		 * it), one that shrinks would be checked against a sum nobody computed. */
		if (h.way != WAY_LOCAL)
			return pass(TP_STAT_PASS_CSUM_OFFLOAD);
		if (d.family == TP_FAMILY_V6 && o.kind != TO_CLIENT)
			return pass(TP_STAT_PASS_CSUM_OFFLOAD);
		if (o.kind == TO_CLIENT)
			full = 1;
	}
	if (o.trim &&
	    bpf_skb_load_bytes(skb, ETH_HLEN + d.ip_hlen + d.udp_len - 4, tail4, 4) < 0)
		return pass(TP_STAT_PASS_MALFORMED);
	check = udp_checksum(&d, &o, tail4, full);

	if (account(&o, now))
		return count(TP_STAT_RATE_LIMITED), TP_TCX_DROP;

	/* The first change that can fail leaves the datagram as it was. */
	{
		__u32 target = ETH_HLEN + d.ip_hlen + d.udp_len - o.trim;

		if (skb->len != target && bpf_skb_change_tail(skb, target, 0) < 0)
			return pass(TP_STAT_ERROR);
	}
	if (o.kind == TO_PEER && bpf_skb_adjust_room(skb, -CD_HLEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return count(TP_STAT_ERROR), TP_TCX_DROP;
	if (o.kind == TO_CLIENT && bpf_skb_adjust_room(skb, CD_HLEN, BPF_ADJ_ROOM_NET, 0) < 0)
		return count(TP_STAT_ERROR), TP_TCX_DROP;
	if (write_headers(skb, &d, &o, check) < 0)
		return count(TP_STAT_ERROR), TP_TCX_DROP;

	count(o.kind == TO_PEER ? TP_STAT_TO_PEER : o.kind == TO_CLIENT ? TP_STAT_TO_CLIENT
									 : TP_STAT_CHAINED);
	if (h.way == WAY_LOCAL)
		return TP_TCX_PASS;
	if (h.way == WAY_NEIGH)
		return bpf_redirect_neigh(h.ifindex, &h.nh, sizeof(h.nh), 0);
	if (bpf_skb_store_bytes(skb, 0, h.macs, sizeof(h.macs), 0) < 0)
		return count(TP_STAT_ERROR), TP_TCX_DROP;
	return bpf_redirect(h.ifindex, 0);
}

SEC("tc")
int turnpike_tc(struct __sk_buff *skb)
{
	return relay(skb);
}

/* ---- XDP (native mode) ----------------------------------------------------------------- */

static __always_inline int xdp_pass(__u32 stat)
{
	count(stat);
	return XDP_PASS;
}

/*
 * The same relay at the driver's receive hook, before any skb exists, for frames from a device
 * whose driver runs XDP natively (not the loopback, which has none). Parsing, routing, the
 * checksum update and the accounting are relay()'s; what differs is what XDP can do:
 *   - the 4-byte header is removed or added by moving the frame's start (bpf_xdp_adjust_head)
 *     and writing Ethernet, IP and UDP headers anew in front of the unmoved payload;
 *   - it leaves by bpf_redirect to the interface the FIB names, also the one it came in on
 *     (XDP_TX frames out of a veth whose other end runs GRO but no XDP were not delivered
 *     there; a redirect to the same veth is);
 *   - a next hop whose link address is not resolved yet (there is no bpf_redirect_neigh) and a
 *     destination on this host (whose stack refuses a local source arriving from outside) go
 *     to userspace, counted: userspace's own datagram resolves the neighbour;
 *   - frames carry complete checksums (CHECKSUM_PARTIAL is an skb state), except frames a veth
 *     passes on from a local socket that left the sum to the device: those look partial and go
 *     to userspace.
 * The target device must accept XDP frames (ndo_xdp_xmit): NICs with native XDP do, a veth
 * when its other end runs XDP or has GRO on; otherwise the kernel drops the redirected frame
 * (an xdp_redirect error in `ethtool -S` and the xdp tracepoints).
 */
static __always_inline int relay_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct dgram d;
	struct out o = {};
	struct next_hop h = {};
	__u8 tail4[4] = {};
	__u32 r, len = end - data, target;
	__u64 now;
	__u16 check;

	r = parse(data, end, len, &d);
	if (r == NOT_UDP)
		return XDP_PASS;
	if (r != PARSED)
		return xdp_pass(r);

	now = bpf_ktime_get_ns();
	r = route(&d, &o, now);
	if (r != PARSED)
		return xdp_pass(r);

	r = find_next_hop(ctx, &d, &o, &h);
	if (r != PARSED)
		return xdp_pass(r);
	if (h.way == WAY_LOCAL)
		return xdp_pass(TP_STAT_PASS_LOCAL);
	if (h.way == WAY_NEIGH)
		return xdp_pass(TP_STAT_PASS_NO_NEIGHBOUR);
	if (looks_partial(&d))
		return xdp_pass(TP_STAT_PASS_CSUM_OFFLOAD);
	if (o.trim && bpf_xdp_load_bytes(ctx, ETH_HLEN + d.ip_hlen + d.udp_len - 4, tail4, 4) < 0)
		return xdp_pass(TP_STAT_PASS_MALFORMED);
	check = udp_checksum(&d, &o, tail4, 1);

	if (account(&o, now))
		return count(TP_STAT_RATE_LIMITED), XDP_DROP;

	/* The first change that can fail leaves the frame as it was: the end first (Ethernet
	 * padding and the ChannelData padding cut), then the start. */
	target = ETH_HLEN + d.ip_hlen + d.udp_len - o.trim;
	if (len != target && bpf_xdp_adjust_tail(ctx, (int)target - (int)len) < 0)
		return xdp_pass(TP_STAT_ERROR);
	if (o.kind == TO_PEER && bpf_xdp_adjust_head(ctx, CD_HLEN) < 0)
		return count(TP_STAT_ERROR), XDP_DROP;
	if (o.kind == TO_CLIENT && bpf_xdp_adjust_head(ctx, -CD_HLEN) < 0)
		return count(TP_STAT_ERROR), XDP_DROP;
	if (xdp_write_headers(ctx, &d, &o, check, h.macs) < 0)
		return count(TP_STAT_ERROR), XDP_DROP;

	count(o.kind == TO_PEER ? TP_STAT_TO_PEER : o.kind == TO_CLIENT ? TP_STAT_TO_CLIENT
									 : TP_STAT_CHAINED);
	return bpf_redirect(h.ifindex, 0);
}

SEC("xdp")
int turnpike_xdp(struct xdp_md *ctx)
{
	return relay_xdp(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
