/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What a binding's slot keeps (layout.h's struct tp_slot): its deadline (expiry in the kernel:
 * a binding stops at it even when userspace is late), its token buckets (bytes per second with
 * a burst; over the limit is a counted drop, never a disconnect) and its counters of
 * application data both ways, which the loader reads from the mmapped array.
 */
#ifndef TURNPIKE_ACCOUNTING_H
#define TURNPIKE_ACCOUNTING_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "dgram.h"
#include "maps.h"

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

#endif /* TURNPIKE_ACCOUNTING_H */
