/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Parsing: Ethernet, then IPv4 or IPv6, then UDP, copied into a struct dgram. Only a plain
 * datagram is taken: IPv4 options, IPv6 extension headers and fragments of either family are
 * counted and left to userspace (the stack reassembles; the relay's sockets have them), and so
 * is anything whose lengths do not add up. Constant packet offsets only: without CAP_PERFMON
 * the verifier refuses variable arithmetic on packet pointers.
 */
#ifndef TURNPIKE_PARSE_H
#define TURNPIKE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "dgram.h"

static __always_inline __u32 parse(void *data, void *end, __u32 pkt_len, struct dgram *d)
{
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u32 ip_len;

	if ((void *)(eth + 1) > end)
		return NOT_UDP;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
			return NOT_UDP;
		if (ip->ihl != 5)
			return TP_STAT_PASS_IP_OPTIONS;
		if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
			return TP_STAT_PASS_FRAGMENT;
		udp = (void *)(ip + 1);
		if ((void *)(udp + 1) > end)
			return TP_STAT_PASS_MALFORMED;
		ip_len = bpf_ntohs(ip->tot_len);
		if (ip_len < sizeof(*ip) || ip_len - sizeof(*ip) != bpf_ntohs(udp->len))
			return TP_STAT_PASS_MALFORMED;
		d->family = TP_FAMILY_V4;
		d->ip_hlen = sizeof(*ip);
		__builtin_memset(d->src, 0, 16);
		__builtin_memset(d->dst, 0, 16);
		__builtin_memcpy(d->src, &ip->saddr, 4);
		__builtin_memcpy(d->dst, &ip->daddr, 4);
		__builtin_memcpy(d->ip, ip, sizeof(*ip));
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end)
			return NOT_UDP;
		if (ip6->nexthdr != IPPROTO_UDP) {
			if (ip6->nexthdr == 44) /* Fragment header */
				return TP_STAT_PASS_FRAGMENT;
			if (ip6->nexthdr == 0 || ip6->nexthdr == 43 || ip6->nexthdr == 60) {
				/* Hop-by-hop, routing, destination options: counted when UDP follows
				 * (MLD reports carry a hop-by-hop header too, and are none of ours). */
				__u8 *next = (void *)(ip6 + 1);

				if ((void *)(next + 1) <= end && *next == IPPROTO_UDP)
					return TP_STAT_PASS_IP_OPTIONS;
			}
			return NOT_UDP;
		}
		udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return TP_STAT_PASS_MALFORMED;
		ip_len = sizeof(*ip6) + bpf_ntohs(ip6->payload_len);
		if (bpf_ntohs(ip6->payload_len) != bpf_ntohs(udp->len))
			return TP_STAT_PASS_MALFORMED;
		d->family = TP_FAMILY_V6;
		d->ip_hlen = sizeof(*ip6);
		__builtin_memcpy(d->src, &ip6->saddr, 16);
		__builtin_memcpy(d->dst, &ip6->daddr, 16);
		__builtin_memcpy(d->ip, ip6, sizeof(*ip6));
	} else {
		return NOT_UDP;
	}
	d->udp_len = bpf_ntohs(udp->len);
	if (d->udp_len < sizeof(*udp) || pkt_len < ETH_HLEN + ip_len)
		return TP_STAT_PASS_MALFORMED;
	d->sport = udp->source;
	d->dport = udp->dest;
	d->check = udp->check;
	if (d->udp_len >= sizeof(*udp) + CD_HLEN) {
		__u8 *cd = (void *)(udp + 1);

		if ((void *)(cd + CD_HLEN) > end)
			return TP_STAT_PASS_MALFORMED;
		__builtin_memcpy(d->cd, cd, CD_HLEN);
	} else {
		__builtin_memset(d->cd, 0, CD_HLEN);
	}
	return PARSED;
}

#endif /* TURNPIKE_PARSE_H */
