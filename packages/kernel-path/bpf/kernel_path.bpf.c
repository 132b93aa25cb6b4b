// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Turnpike's kernel data path: bound ChannelData relayed without leaving the kernel.
 *
 * relay-core decides everything (authentication, permissions, channels, lifetimes, quotas) and
 * the runtime puts each live channel binding into the maps of kernel_path.h. This program then
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
 * Checksums. The UDP checksum is updated incrementally (RFC 1624) for what changes: addresses
 * and ports, the length (in the header and in the pseudo-header), the 4 header bytes removed or
 * added and the padding trimmed; an IPv4 checksum of 0 ("none", RFC 768) stays 0. The IPv4
 * header checksum is computed anew. The stack's own bookkeeping stays exact because every write
 * goes through bpf_skb_store_bytes(BPF_F_RECOMPUTE_CSUM), which keeps skb->csum true for
 * drivers that deliver CHECKSUM_COMPLETE.
 *
 * A datagram sent by a socket on this host has no checksum yet (CHECKSUM_PARTIAL: the field
 * holds the pseudo-header sum and the device computes the rest from skb->csum_start). Removing
 * or adding the header moves the UDP header relative to csum_start, which no helper can fix,
 * so such a datagram is relayed in the kernel only when it stays on this host (loopback);
 * otherwise it goes to userspace (TP_STAT_PASS_CSUM_OFFLOAD). A program cannot read ip_summed;
 * the field holding exactly the pseudo-header sum is the sign (a complete checksum equals it
 * once in 65536 datagrams, which then merely take the userspace path).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kernel_path.h"

/* TCX return codes (include/uapi/linux/bpf.h since 6.6; defined here for older headers). */
#define TP_TCX_NEXT (-1)
#define TP_TCX_PASS 0
#define TP_TCX_DROP 2

#define CD_HLEN 4
#define LOOPBACK_IFINDEX 1
/* What the relay's own sockets send with (Linux's default): a relayed datagram is a new one. */
#define TTL_OUT 64
#define AF_INET 2
#define AF_INET6 10
/* Enough linear bytes for Ethernet + IPv6 + UDP + the ChannelData header. */
#define PARSE_LEN (ETH_HLEN + 40 + 8 + CD_HLEN)

#define MAX_BINDINGS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_c2p_key);
	__type(value, struct tp_c2p_value);
} tp_c2p SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_p2c_key);
	__type(value, struct tp_p2c_value);
} tp_p2c SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct tp_slot);
} tp_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BINDINGS);
	__type(key, __u32);
	__type(value, struct tp_bucket);
} tp_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TP_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} tp_stats SEC(".maps");

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

/* Parse results that are not a stat index. */
#define PARSED TP_STAT_COUNT
#define NOT_UDP (TP_STAT_COUNT + 1)

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&tp_stats, &stat);

	if (n)
		*n += 1;
}

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

/* ---- parsing --------------------------------------------------------------------------- */

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

/* ---- checksums (RFC 1071 sums of 16-bit words as they lie in memory; RFC 1624 updates) ---- */

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

/* ---- bindings ----------------------------------------------------------------------------- */

static __always_inline struct tp_slot *live_slot(__u32 index, __u64 now)
{
	struct tp_slot *s = bpf_map_lookup_elem(&tp_slots, &index);

	if (!s || now >= *(volatile __u64 *)&s->deadline_ns)
		return 0;
	return s;
}

/* Takes `bytes` from one bucket; 0 when it had them (or is unlimited or unknown). */
static __always_inline int take(__u32 ref, __u64 bytes, __u64 now)
{
	__u32 index = ref - 1;
	struct tp_bucket *b;
	int empty = 0;

	if (ref == 0)
		return 0;
	b = bpf_map_lookup_elem(&tp_buckets, &index);
	if (!b)
		return 0;
	bpf_spin_lock(&b->lock);
	if (b->rate != 0) {
		__u64 elapsed = now - b->stamp_ns;

		if (now < b->stamp_ns)
			elapsed = 0;
		if (elapsed >= b->fill_ns) {
			b->tokens = b->burst;
		} else {
			b->tokens += elapsed * b->rate / 1000000000ULL;
			if (b->tokens > b->burst)
				b->tokens = b->burst;
		}
		b->stamp_ns = now;
		if (b->tokens < bytes) {
			empty = 1;
			b->dropped_packets += 1;
			b->dropped_bytes += bytes;
		} else {
			b->tokens -= bytes;
		}
	}
	bpf_spin_unlock(&b->lock);
	return empty;
}

static __always_inline void give_back(__u32 ref, __u64 bytes)
{
	__u32 index = ref - 1;
	struct tp_bucket *b;

	if (ref == 0)
		return;
	b = bpf_map_lookup_elem(&tp_buckets, &index);
	if (!b)
		return;
	bpf_spin_lock(&b->lock);
	b->tokens += bytes;
	bpf_spin_unlock(&b->lock);
}

/* Charges the slot's buckets; 0 when the datagram may go ("over the limit is a counted drop"). */
static __always_inline int charge(struct tp_slot *s, __u64 bytes, __u64 now)
{
	__u32 first = s->bucket[0], second = s->bucket[1];

	if (first == 0 && second == 0)
		return 0;
	if (take(first, bytes, now))
		goto limited;
	if (take(second, bytes, now)) {
		give_back(first, bytes);
		goto limited;
	}
	return 0;
limited:
	__sync_fetch_and_add(&s->limited_packets, 1);
	__sync_fetch_and_add(&s->limited_bytes, bytes);
	return 1;
}

/* The source for a datagram to the client: the listener, or for a wildcard listener the address
 * the client sent its ChannelData to. 0 when that is not known yet. */
static __always_inline int listener_source(const struct tp_p2c_value *v, struct tp_slot *s,
					   __u8 *out)
{
	if (!is_zero16(v->listener_ip)) {
		__builtin_memcpy(out, v->listener_ip, 16);
		return 1;
	}
	if (!*(volatile __u32 *)&s->listener_learned)
		return 0;
	__builtin_memcpy(out, s->listener_ip, 16);
	return 1;
}

static __always_inline void to_client(struct out *o, const struct tp_p2c_value *v)
{
	__builtin_memcpy(o->dst, v->client_ip, 16);
	o->sport = v->listener_port;
	o->dport = v->client_port;
	o->channel = v->channel;
}

/*
 * Client -> peer: ChannelData from the client. Returns PARSED with `o` filled, or why not.
 * A miss returns TP_STAT_PASS_NO_ENTRY so the caller can try the datagram as a peer's.
 */
static __noinline __u32 route_channel_data(struct dgram *d, struct out *o, __u64 now)
{
	struct tp_c2p_key k = {};
	struct tp_c2p_value *v;
	struct tp_p2c_key k2 = {};
	struct tp_p2c_value *v2;
	__u16 cd_len, room;
	int wildcard = 0;

	__builtin_memcpy(k.client_ip, d->src, 16);
	__builtin_memcpy(k.listener_ip, d->dst, 16);
	k.client_port = d->sport;
	k.listener_port = d->dport;
	__builtin_memcpy(&k.channel, d->cd, 2);
	k.family = d->family;
	v = bpf_map_lookup_elem(&tp_c2p, &k);
	if (!v) {
		__builtin_memset(k.listener_ip, 0, 16);
		v = bpf_map_lookup_elem(&tp_c2p, &k);
		if (!v)
			return TP_STAT_PASS_NO_ENTRY;
		wildcard = 1;
	}
	o->slot = live_slot(v->slot, now);
	if (!o->slot)
		return TP_STAT_PASS_EXPIRED;
	cd_len = ((__u16)d->cd[2] << 8) | d->cd[3];
	room = d->udp_len - sizeof(struct udphdr) - CD_HLEN;
	if (cd_len > room)
		return TP_STAT_PASS_CD_LENGTH; /* malformed: userspace drops and counts it */
	if (room - cd_len > 3)
		return TP_STAT_PASS_PADDING;
	o->trim = room - cd_len;
	o->data_len = cd_len;
	if (wildcard && (!o->slot->listener_learned || !equal16(o->slot->listener_ip, d->dst))) {
		__builtin_memcpy(o->slot->listener_ip, d->dst, 16);
		/* The address before the flag (stores keep their order on the architectures the
		 * JIT serves; the barrier keeps the compiler from swapping them). */
		asm volatile("" ::: "memory");
		*(volatile __u32 *)&o->slot->listener_learned = 1;
	}

	/* A peer that is another allocation's relayed address here: on to that allocation's client. */
	__builtin_memcpy(k2.peer_ip, v->relayed_ip, 16);
	__builtin_memcpy(k2.relayed_ip, v->peer_ip, 16);
	k2.peer_port = v->relayed_port;
	k2.relayed_port = v->peer_port;
	k2.family = d->family;
	v2 = bpf_map_lookup_elem(&tp_p2c, &k2);
	if (v2) {
		o->slot2 = live_slot(v2->slot, now);
		if (!o->slot2)
			return TP_STAT_PASS_EXPIRED;
		if (!listener_source(v2, o->slot2, o->src))
			return TP_STAT_PASS_LISTENER_UNKNOWN;
		to_client(o, v2);
		o->kind = CHAINED;
		o->udp_len = d->udp_len - o->trim;
		return PARSED;
	}
	__builtin_memcpy(o->src, v->relayed_ip, 16);
	__builtin_memcpy(o->dst, v->peer_ip, 16);
	o->sport = v->relayed_port;
	o->dport = v->peer_port;
	o->kind = TO_PEER;
	o->udp_len = d->udp_len - CD_HLEN - o->trim;
	return PARSED;
}

/* Peer -> client: a datagram from a peer to a relayed address. */
static __noinline __u32 route_peer_data(struct dgram *d, struct out *o, __u64 now)
{
	struct tp_p2c_key k = {};
	struct tp_p2c_value *v;

	__builtin_memcpy(k.peer_ip, d->src, 16);
	__builtin_memcpy(k.relayed_ip, d->dst, 16);
	k.peer_port = d->sport;
	k.relayed_port = d->dport;
	k.family = d->family;
	v = bpf_map_lookup_elem(&tp_p2c, &k);
	if (!v)
		return TP_STAT_PASS_NO_ENTRY;
	o->slot = live_slot(v->slot, now);
	if (!o->slot)
		return TP_STAT_PASS_EXPIRED;
	if (d->udp_len > 0xffff - 40 - CD_HLEN)
		return TP_STAT_PASS_FRAG_NEEDED;
	if (!listener_source(v, o->slot, o->src))
		return TP_STAT_PASS_LISTENER_UNKNOWN;
	to_client(o, v);
	o->kind = TO_CLIENT;
	o->data_len = d->udp_len - sizeof(struct udphdr);
	o->udp_len = d->udp_len + CD_HLEN;
	o->trim = 0;
	return PARSED;
}

static __always_inline __u32 route(struct dgram *d, struct out *o, __u64 now)
{
	/* First two bits 01: ChannelData (RFC 8656 §12.4; STUN starts with 00). */
	if (d->udp_len >= sizeof(struct udphdr) + CD_HLEN && (d->cd[0] & 0xc0) == 0x40) {
		__u32 r = route_channel_data(d, o, now);

		if (r != TP_STAT_PASS_NO_ENTRY)
			return r;
	}
	return route_peer_data(d, o, now);
}

/* Buckets, then counters. 0: go; 1: over a limit, drop. (The NULL checks are for the verifier,
 * which cannot tie the slots the routing stored to the kind it stored next to them.) */
static __always_inline int account(struct out *o, __u64 now)
{
	struct tp_slot *s = o->slot, *s2 = o->kind == CHAINED ? o->slot2 : 0;

	if (!s || (o->kind == CHAINED && !s2))
		return 1;
	if (charge(s, o->data_len, now))
		return 1;
	if (s2 && charge(s2, o->data_len, now))
		return 1;
	if (o->kind == TO_CLIENT) {
		__sync_fetch_and_add(&s->to_client_packets, 1);
		__sync_fetch_and_add(&s->to_client_bytes, o->data_len);
	} else {
		__sync_fetch_and_add(&s->to_peer_packets, 1);
		__sync_fetch_and_add(&s->to_peer_bytes, o->data_len);
	}
	if (s2) {
		__sync_fetch_and_add(&s2->to_client_packets, 1);
		__sync_fetch_and_add(&s2->to_client_bytes, o->data_len);
	}
	return 0;
}

/* ---- the new headers ---------------------------------------------------------------------- */

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

/* ---- where it goes ------------------------------------------------------------------------ */

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

/* ---- TC (TCX ingress) ----------------------------------------------------------------------------------- */

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

/*
 * The same relay at the driver's receive hook, before any skb exists: for frames that arrive
 * from a network device whose driver runs XDP natively (not the loopback, which has none). The
 * routing, the checksum update and the accounting are the TC path's; what differs is what an
 * XDP program can do with the frame:
 *   - the 4-byte header is removed or added by moving the frame's start (bpf_xdp_adjust_head)
 *     and writing Ethernet, IP and UDP headers anew in front of the unmoved payload;
 *   - it leaves by bpf_redirect to the interface the FIB names, also when that is the one it
 *     came in on (XDP_TX frames out of a veth whose other end runs GRO but no XDP were not
 *     delivered there; a redirect to the same veth is). A neighbour the FIB has not resolved
 *     yet (no bpf_redirect_neigh here) and a destination on this host (whose stack would
 *     refuse a datagram with a local source arriving from outside) go to userspace, counted;
 *   - frames carry complete checksums (CHECKSUM_PARTIAL is an skb state and there is no skb),
 *     except frames a veth passes on from a local socket that left the sum to the device: those
 *     look partial and go to userspace like the TC path's that leave the host.
 * The target interface must accept XDP frames (ndo_xdp_xmit): a veth does when its peer runs
 * XDP or has GRO on; otherwise bpf_redirect fails and the kernel drops the frame (counted by
 * the kernel as an xdp_redirect error, visible in `ip -s link` / tracepoints).
 */

static __always_inline int xdp_pass(__u32 stat)
{
	count(stat);
	return XDP_PASS;
}

/* Ethernet, IP and UDP (+ ChannelData) headers at the start of the moved frame. Two branches
 * with constant offsets: the verifier checks each write against data_end. */
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
	 * padding and the ChannelData padding trimmed), then the start. */
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
