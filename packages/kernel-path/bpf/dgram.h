/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the program knows of one datagram (struct dgram, filled by parse.h) and what it turns
 * it into (struct out, filled by route.h), with the constants every stage shares.
 */
#ifndef TURNPIKE_DGRAM_H
#define TURNPIKE_DGRAM_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/types.h>

#include "layout.h"

/* TCX return codes (include/uapi/linux/bpf.h since 6.6; defined here for older headers). */
#define TP_TCX_NEXT (-1)
#define TP_TCX_PASS 0
#define TP_TCX_DROP 2

/* The ChannelData header: channel number and length, 2 bytes each (RFC 8656 §12.4). */
#define CD_HLEN 4
#define LOOPBACK_IFINDEX 1
/* What the relay's own sockets send with (Linux's default): a relayed datagram is a new one. */
#define TTL_OUT 64
#define AF_INET 2
#define AF_INET6 10
/* Enough linear bytes for Ethernet + IPv6 + UDP + the ChannelData header. */
#define PARSE_LEN (ETH_HLEN + 40 + 8 + CD_HLEN)

/* Results of the stages that are not a stat index (a stat index says why the datagram passes). */
#define PARSED TP_STAT_COUNT
#define NOT_UDP (TP_STAT_COUNT + 1)

/* What parse() found: a UDP datagram without options or fragments, and copies of what the
 * rewrite needs (the packet itself is rewritten through helpers that invalidate pointers). */
struct dgram {
	__u8 src[16];
	__u8 dst[16];
	__u8 ip[40]; /* the IP header */
	__be16 sport;
	__be16 dport;
	__u16 check; /* as on the wire */
	__u16 udp_len;
	__u8 cd[CD_HLEN]; /* the first payload bytes (valid when udp_len >= 12) */
	__u8 family;
	__u8 ip_hlen;
	__u8 pad[2];
};

enum kind { TO_PEER, TO_CLIENT, CHAINED };

/* What the datagram becomes. */
struct out {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__be16 channel; /* CHAINED, TO_CLIENT: the channel of the header written */
	__u16 data_len; /* application data: the counters' and the buckets' bytes */
	__u16 udp_len;  /* the new UDP length */
	__u16 trim;     /* padding bytes dropped from the end */
	__u8 kind;
	__u8 pad[3];
	struct tp_slot *slot;  /* the binding that carried it (TO_PEER, TO_CLIENT) ... */
	struct tp_slot *slot2; /* ... and for CHAINED the one it continues on (to its client) */
};

/* Addresses as layout.h keeps them: 16 bytes, IPv4 in the first 4. */
static __always_inline int is_zero16(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline int equal16(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

#endif /* TURNPIKE_DGRAM_H */
