/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Checksums: RFC 1071 sums of 16-bit words as they lie in memory, and RFC 1624 incremental
 * updates of the UDP checksum for what the relay changes (addresses and ports, the length in
 * the header and in the pseudo-header, the 4 ChannelData header bytes removed or added, the
 * padding trimmed). An IPv4 checksum of 0 ("none", RFC 768) stays 0.
 *
 * A datagram sent by a socket on this host has no checksum yet (CHECKSUM_PARTIAL: the field
 * holds the pseudo-header sum and the device computes the rest from skb->csum_start). A
 * program cannot read ip_summed; the field holding exactly the pseudo-header sum is the sign
 * (looks_partial; a complete checksum equals it once in 65536 datagrams, which then merely
 * take the userspace path). What the program does with such a datagram: kernel_path.bpf.c.
 */
#ifndef TURNPIKE_CHECKSUM_H
#define TURNPIKE_CHECKSUM_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "dgram.h"

/* Sums of 32-bit words fold to the same 16-bit sum as their 16-bit halves (RFC 1071 §2(B)). */
static __always_inline __u64 sum16(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return (__u64)w[0] + w[1] + w[2] + w[3];
}

/* The sum of a's words minus the sum of b's (one's complement: minus w is plus ~w). A call of
 * its own, so the compiler cannot hoist all sixteen loads and spill them (stack is scarce). */
static __noinline __u64 diff16(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return (__u64)x[0] + x[1] + x[2] + x[3] + (__u32)~y[0] + (__u32)~y[1] + (__u32)~y[2] +
	       (__u32)~y[3];
}

static __always_inline __u16 fold(__u64 s)
{
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The 16-bit word whose bytes in memory are `first`, `second`. */
static __always_inline __u16 word(__u8 first, __u8 second)
{
	return bpf_htons(((__u16)first << 8) | second);
}

/* The pseudo-header sum of RFC 768 / RFC 8200 §8.1, folded. */
static __always_inline __u16 pseudo(const struct dgram *d)
{
	return fold(sum16(d->src) + sum16(d->dst) + bpf_htons(IPPROTO_UDP) + bpf_htons(d->udp_len));
}

/* A datagram whose checksum field holds its pseudo-header sum: CHECKSUM_PARTIAL (see the top). */
static __always_inline int looks_partial(const struct dgram *d)
{
	__u16 p = pseudo(d);

	return d->check == p || ((__u16)(d->check + 1) == 0 && p == 0) ||
	       (d->check == 0 && (__u16)(p + 1) == 0);
}

/* The share of one trimmed byte at UDP offset 12 + at (the payload starts at an even offset). */
static __always_inline __u32 byte_sum(__u8 b, __u32 at)
{
	return (at & 1) ? word(0, b) : word(b, 0);
}

/* The trimmed padding's share of the sum: the last `trim` bytes of the datagram, the first of
 * them right after the data (constant indexes: the verifier refuses variable stack offsets). */
static __always_inline __u32 padding_sum(const __u8 *tail4, __u16 trim, __u16 data_len)
{
	if (trim == 1)
		return byte_sum(tail4[3], data_len);
	if (trim == 2)
		return byte_sum(tail4[2], data_len) + byte_sum(tail4[3], data_len + 1);
	return byte_sum(tail4[1], data_len) + byte_sum(tail4[2], data_len + 1) +
	       byte_sum(tail4[3], data_len + 2);
}

/*
 * The new UDP checksum. `full`: the field holds a complete checksum, updated for what changes;
 * otherwise (a locally sent datagram, see the top) only IPv4 can say "no checksum".
 */
static __noinline __u16 udp_checksum(const struct dgram *d, const struct out *o,
					  const __u8 *tail4, int full)
{
	__u64 s;
	__u16 r;

	if (d->family == TP_FAMILY_V4 && d->check == 0)
		return 0;
	if (!full)
		return 0; /* only reached for IPv4, see relay() */
	s = (__u16)~d->check;
	s += diff16(o->src, d->src) + diff16(o->dst, d->dst);
	s += (__u32)o->sport + (__u16)~d->sport + o->dport + (__u16)~d->dport;
	/* the length, in the header and in the pseudo-header */
	s += 2 * ((__u32)bpf_htons(o->udp_len) + (__u16)~bpf_htons(d->udp_len));
	if (o->kind == TO_PEER) {
		s += (__u16)~word(d->cd[0], d->cd[1]) + (__u16)~word(d->cd[2], d->cd[3]);
	} else if (o->kind == TO_CLIENT) {
		s += (__u32)o->channel + bpf_htons(o->data_len);
	} else {
		s += (__u32)o->channel + (__u16)~word(d->cd[0], d->cd[1]);
	}
	if (o->trim)
		s += (__u16)~fold(padding_sum(tail4, o->trim, o->data_len));
	r = ~fold(s);
	return r == 0 ? 0xffff : r;
}

#endif /* TURNPIKE_CHECKSUM_H */
