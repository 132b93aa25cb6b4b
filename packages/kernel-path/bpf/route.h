/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Routing: which binding a datagram belongs to and what it becomes (RFC 8656 §12).
 *
 *   client -> peer   ChannelData to a listener, from a client 5-tuple with a live binding for
 *                    its channel: the header and up to 3 bytes of padding (§12.5) go, the
 *                    datagram leaves from the relayed address to the peer. A peer that is
 *                    another allocation's relayed address on this relay continues to that
 *                    allocation's client in the same pass (CHAINED).
 *   peer -> client   a datagram to a relayed address from a peer with a live binding on it:
 *                    the header is added, the datagram leaves from the listener to the client.
 */
#ifndef TURNPIKE_ROUTE_H
#define TURNPIKE_ROUTE_H

#include <linux/bpf.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>

#include "accounting.h"
#include "dgram.h"
#include "maps.h"

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

#endif /* TURNPIKE_ROUTE_H */
