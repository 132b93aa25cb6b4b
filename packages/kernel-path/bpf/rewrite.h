/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The new headers: IP (addresses, length, TTL 64 like the relay's own sockets; DSCP/ECN and
 * the IPv4 DF bit kept; the IPv4 header checksum computed anew), UDP and, towards a client, the
 * ChannelData header. At TC written through bpf_skb_store_bytes(BPF_F_RECOMPUTE_CSUM), which
 * keeps skb->csum true for drivers that deliver CHECKSUM_COMPLETE; at XDP written directly into
 * the frame, with the Ethernet header in front (there is no skb, and no csum to keep).
 */
#ifndef TURNPIKE_REWRITE_H
#define TURNPIKE_REWRITE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "checksum.h"
#include "dgram.h"

/* The UDP and (TO_CLIENT, CHAINED) ChannelData headers; returns their length. */
static __always_inline __u32 build_udp(const struct out *o, __u16 check, __u8 *buf)
{
	struct udphdr *udp = (void *)buf;

	udp->source = o->sport;
	udp->dest = o->dport;
	udp->len = bpf_htons(o->udp_len);
	udp->check = check;
	if (o->kind == TO_PEER)
		return sizeof(*udp);
	__builtin_memcpy(buf + sizeof(*udp), &o->channel, 2);
	*(__be16 *)(buf + sizeof(*udp) + 2) = bpf_htons(o->data_len);
	return sizeof(*udp) + CD_HLEN;
}

/* The IP header; returns its length. */
static __always_inline __u32 build_ip(const struct dgram *d, const struct out *o, __u8 *buf)
{
	if (d->family == TP_FAMILY_V4) {
		struct iphdr *ip = (void *)buf;
		const __u16 *w = (const __u16 *)buf;
		__u32 s = 0;

		__builtin_memcpy(ip, d->ip, sizeof(*ip));
		ip->tot_len = bpf_htons(sizeof(*ip) + o->udp_len);
		ip->ttl = TTL_OUT;
		__builtin_memcpy(&ip->saddr, o->src, 4);
		__builtin_memcpy(&ip->daddr, o->dst, 4);
		ip->check = 0;
#pragma unroll
		for (int i = 0; i < 10; i++)
			s += w[i];
		ip->check = ~fold(s);
		return sizeof(*ip);
	}
	struct ipv6hdr *ip6 = (void *)buf;

	__builtin_memcpy(ip6, d->ip, sizeof(*ip6));
	ip6->payload_len = bpf_htons(o->udp_len);
	ip6->hop_limit = TTL_OUT;
	__builtin_memcpy(&ip6->saddr, o->src, 16);
	__builtin_memcpy(&ip6->daddr, o->dst, 16);
	return sizeof(*ip6);
}

/*
 * Writes the new headers over the old ones, in two stores from two buffers (an offset into one
 * buffer that differs by family is pointer arithmetic the verifier refuses without
 * CAP_PERFMON; as a helper's offset argument it is a plain number). In a frame of its own: the
 * stack is 512 bytes for all frames together.
 */
static __noinline long write_headers(struct __sk_buff *skb, const struct dgram *d,
				     const struct out *o, __u16 check)
{
	__u8 ip[40], udp[8 + CD_HLEN];
	__u32 ip_len = build_ip(d, o, ip), udp_len = build_udp(o, check, udp);
	long r;

	if (ip_len > sizeof(ip) || udp_len > sizeof(udp))
		return -1;
	r = bpf_skb_store_bytes(skb, ETH_HLEN, ip, ip_len, BPF_F_RECOMPUTE_CSUM);
	if (r < 0)
		return r;
	return bpf_skb_store_bytes(skb, ETH_HLEN + ip_len, udp, udp_len, BPF_F_RECOMPUTE_CSUM);
}

/*
 * XDP: Ethernet (the next hop's addresses), IP, UDP and ChannelData headers at the start of the
 * frame, after bpf_xdp_adjust_head moved it (the payload stays where it is). Two branches with
 * constant offsets, each write checked against data_end for the verifier.
 */
static __noinline int xdp_write_headers(struct xdp_md *ctx, const struct dgram *d,
					const struct out *o, __u16 check, const __u8 *macs)
{
	__u8 *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 ip[40], udp[8 + CD_HLEN];
	__u32 udp_len = build_udp(o, check, udp);
	__be16 proto;

	build_ip(d, o, ip);
	if (d->family == TP_FAMILY_V4) {
		__u8 *u = data + ETH_HLEN + 20;

		if (u + 8 > end)
			return -1;
		proto = bpf_htons(ETH_P_IP);
		__builtin_memcpy(data + ETH_HLEN, ip, 20);
		__builtin_memcpy(u, udp, 8);
		if (udp_len > 8) {
			if (u + 8 + CD_HLEN > end)
				return -1;
			__builtin_memcpy(u + 8, udp + 8, CD_HLEN);
		}
	} else {
		__u8 *u = data + ETH_HLEN + 40;

		if (u + 8 > end)
			return -1;
		proto = bpf_htons(ETH_P_IPV6);
		__builtin_memcpy(data + ETH_HLEN, ip, 40);
		__builtin_memcpy(u, udp, 8);
		if (udp_len > 8) {
			if (u + 8 + CD_HLEN > end)
				return -1;
			__builtin_memcpy(u + 8, udp + 8, CD_HLEN);
		}
	}
	__builtin_memcpy(data, macs, 12);
	__builtin_memcpy(data + 12, &proto, 2);
	return 0;
}

#endif /* TURNPIKE_REWRITE_H */
