/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The program's maps (their keys and values: layout.h). The loader sizes tp_c2p, tp_p2c,
 * tp_slots and tp_buckets by name before loading (--kernel-path's capacity); MAX_BINDINGS is
 * only the size an object has before that.
 */
#ifndef TURNPIKE_MAPS_H
#define TURNPIKE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "layout.h"

#define MAX_BINDINGS 65536

/* Client -> peer routes: (client, listener, channel) -> (relayed, peer, slot). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_c2p_key);
	__type(value, struct tp_c2p_value);
} tp_c2p SEC(".maps");

/* Peer -> client routes: (peer, relayed) -> (listener, client, channel, slot). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_BINDINGS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tp_p2c_key);
	__type(value, struct tp_p2c_value);
} tp_p2c SEC(".maps");

/* Deadlines, counters and bucket refs, mmapped by the loader (see layout.h for why). */
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

/* One more datagram for a global counter (enum tp_stat). */
static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&tp_stats, &stat);

	if (n)
		*n += 1;
}

#endif /* TURNPIKE_MAPS_H */
