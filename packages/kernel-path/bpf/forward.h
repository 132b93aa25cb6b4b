/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Where a relayed datagram goes: a FIB lookup, then a redirect out of the interface it names
 * (WAY_REDIRECT with the MAC addresses it found, or WAY_NEIGH when the neighbour subsystem still
 * has to resolve the next hop), or local delivery (WAY_LOCAL) for a destination on this host,
 * which kernel_path.bpf.c allows only for datagrams that came in on the loopback.
 */
#ifndef TURNPIKE_FORWARD_H
#define TURNPIKE_FORWARD_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>

#include "dgram.h"

enum way { WAY_REDIRECT, WAY_NEIGH, WAY_LOCAL };

struct next_hop {
	__u8 macs[12]; /* destination, source */
	__u32 ifindex;
	struct bpf_redir_neigh nh;
	__u8 way;
};

/*
 * FIB lookup as for a datagram this host sends (the input interface is the loopback, as for
 * locally generated traffic in policy routing): the relayed datagram is the relay's own.
 * The kernel refuses the lookup (BPF_FIB_LKUP_RET_FWD_DISABLED) unless forwarding is enabled on
 * that interface: net.ipv4.conf.lo.forwarding / net.ipv6.conf.lo.forwarding, which nothing else
 * depends on (no foreign traffic arrives on the loopback).
 */
static __noinline __u32 find_next_hop(void *ctx, const struct dgram *d, const struct out *o,
					   struct next_hop *h)
{
	struct bpf_fib_lookup p = {};
	long r;

	p.l4_protocol = IPPROTO_UDP;
	p.sport = o->sport;
	p.dport = o->dport;
	p.ifindex = LOOPBACK_IFINDEX;
	p.tot_len = d->ip_hlen + o->udp_len;
	if (d->family == TP_FAMILY_V4) {
		p.family = AF_INET;
		p.tos = ((struct iphdr *)d->ip)->tos;
		__builtin_memcpy(&p.ipv4_src, o->src, 4);
		__builtin_memcpy(&p.ipv4_dst, o->dst, 4);
	} else {
		p.family = AF_INET6;
		__builtin_memcpy(p.ipv6_src, o->src, 16);
		__builtin_memcpy(p.ipv6_dst, o->dst, 16);
	}
	r = bpf_fib_lookup(ctx, &p, sizeof(p), 0);
	if (r == BPF_FIB_LKUP_RET_NOT_FWDED) {
		h->way = WAY_LOCAL;
		return PARSED;
	}
	if (r == BPF_FIB_LKUP_RET_FWD_DISABLED)
		return TP_STAT_PASS_FWD_DISABLED;
	if (r == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return TP_STAT_PASS_FRAG_NEEDED;
	if (r == BPF_FIB_LKUP_RET_SUCCESS) {
		__builtin_memcpy(h->macs, p.dmac, 6);
		__builtin_memcpy(h->macs + 6, p.smac, 6);
		h->ifindex = p.ifindex;
		h->way = WAY_REDIRECT;
		return PARSED;
	}
	if (r == BPF_FIB_LKUP_RET_NO_NEIGH) {
		/* The gateway (or the destination itself) still has to be resolved: the neighbour
		 * subsystem does it for the redirect, as it would for a socket. */
		h->ifindex = p.ifindex;
		h->nh.nh_family = p.family;
		if (p.family == AF_INET)
			h->nh.ipv4_nh = p.ipv4_dst;
		else
			__builtin_memcpy(h->nh.ipv6_nh, p.ipv6_dst, 16);
		h->way = WAY_NEIGH;
		return PARSED;
	}
	return TP_STAT_PASS_NO_ROUTE;
}

#endif /* TURNPIKE_FORWARD_H */
