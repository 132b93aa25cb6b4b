/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The layout of the maps of Turnpike's kernel data path: the one place it is written down.
 * The BPF program (kernel_path.bpf.c and the headers it includes) and its loader (native/)
 * both compile this header; the loader checks at load that the object's maps have these key
 * and value sizes (a stale object is refused with a reason), and hands JavaScript what it
 * relies on (`layout`, built by native/layout.c from TP_LAYOUT_NUMBERS, TP_STATS and
 * TP_BINDING_COUNTERS), which src/layout.ts checks against the values it compiles in.
 *
 * To change the layout: change it here, in src/layout.ts, and (for a new constant) in
 * TP_LAYOUT_NUMBERS at the end of this file.
 *
 * A channel binding (RFC 8656 §12) is two routes and one slot:
 *
 *   c2p   (client ip, client port, listener ip, listener port, channel) -> (relayed, peer, slot)
 *         A ChannelData datagram from the client to the listener leaves as a bare UDP datagram
 *         from the relayed address to the peer.
 *   p2c   (peer ip, peer port, relayed ip, relayed port) -> (listener, client, channel, slot)
 *         A datagram from the peer to the relayed address leaves as ChannelData from the
 *         listener to the client.
 *   slot  deadline, counters both ways, token buckets, the learned listener address.
 *
 * The slot lives in an mmapped array, not in the route values: a map update replaces a whole
 * value, so a deadline kept there could only be refreshed by rewriting the counters the
 * kernel is adding to at the same moment. In the array the loader refreshes the deadline with
 * one 8-byte store and reads the counters without a system call; the routes never change for
 * the life of a binding (a channel stays bound to one peer, RFC 8656 §12.2).
 *
 * Addresses are 16 bytes in network order; IPv4 uses the first 4 and leaves the rest zero.
 * Ports and the channel number are in network order, as on the wire.
 */
#ifndef TURNPIKE_KERNEL_PATH_H
#define TURNPIKE_KERNEL_PATH_H

#include <linux/bpf.h> /* struct bpf_spin_lock */
#include <linux/types.h>

#define TP_FAMILY_V4 4
#define TP_FAMILY_V6 6

struct tp_c2p_key {
	__u8 client_ip[16];
	/* All zero for a listener bound to the wildcard address: looked up when no entry names
	 * the datagram's destination address. */
	__u8 listener_ip[16];
	__be16 client_port;
	__be16 listener_port;
	__be16 channel;
	__u8 family;
	__u8 pad;
};

struct tp_c2p_value {
	__u8 relayed_ip[16];
	__u8 peer_ip[16];
	__be16 relayed_port;
	__be16 peer_port;
	__u32 slot;
};

struct tp_p2c_key {
	__u8 peer_ip[16];
	__u8 relayed_ip[16];
	__be16 peer_port;
	__be16 relayed_port;
	__u8 family;
	__u8 pad[3];
};

struct tp_p2c_value {
	/* All zero for a wildcard listener: the program then sends from the address the client's
	 * last in-kernel ChannelData was sent to (tp_slot.listener_ip), and leaves the datagram to
	 * userspace until it has seen one. */
	__u8 listener_ip[16];
	__u8 client_ip[16];
	__be16 listener_port;
	__be16 client_port;
	__be16 channel;
	__u16 pad;
	__u32 slot;
};

struct tp_slot {
	/* bpf_ktime_get_ns() (CLOCK_MONOTONIC) from which on the binding is not used: the earliest
	 * of the channel's, its permission's and its allocation's expiry. 0: a free slot. */
	__u64 deadline_ns;
	/* Application data relayed in the kernel (ChannelData payload, without its header). */
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
	/* Dropped because a token bucket of this binding was empty. */
	__u64 limited_packets;
	__u64 limited_bytes;
	/* Token buckets this binding's traffic is charged to (bucket index + 1; 0: none), e.g. its
	 * allocation's and its user's. */
	__u32 bucket[2];
	/* 1 once listener_ip holds the address the client sends its ChannelData to. */
	__u32 listener_learned;
	__u32 pad;
	__u8 listener_ip[16];
	__u64 reserved;
};

/* A token bucket (bytes per second with a burst). The loader writes the whole value under the
 * lock (BPF_F_LOCK) when it configures a bucket, which also refills it. */
struct tp_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 rate;    /* bytes per second; 0: unlimited */
	__u64 burst;   /* bytes */
	__u64 fill_ns; /* time to fill from empty: burst * 1e9 / rate */
	__u64 tokens;
	__u64 stamp_ns;
	__u64 dropped_packets;
	__u64 dropped_bytes;
};

/*
 * Global counters (a per-CPU array, summed by the loader): tp_stats[stat]. RELAYED_* count
 * datagrams the program sent on; PASS_* count datagrams it left to userspace unchanged, by
 * reason. The names are how JavaScript knows them (metrics; src/layout.ts's
 * KERNEL_PATH_STATS), in this order.
 */
#define TP_STATS(X)                                                                              \
	X(TP_STAT_TO_PEER, "relayed-to-peer")     /* ChannelData stripped and sent to the peer */ \
	X(TP_STAT_TO_CLIENT, "relayed-to-client") /* peer datagram sent as ChannelData */         \
	/* ChannelData whose peer is another allocation's relayed address */                       \
	X(TP_STAT_CHAINED, "relayed-chained")                                                    \
	X(TP_STAT_RATE_LIMITED, "rate-limited") /* dropped: a token bucket was empty */           \
	/* UDP, but no route for it (STUN, Send, unbound, other traffic) */                        \
	X(TP_STAT_PASS_NO_ENTRY, "pass-no-entry")                                                \
	X(TP_STAT_PASS_EXPIRED, "pass-expired") /* a route whose slot's deadline has passed */    \
	/* ChannelData length beyond the datagram (malformed) */                                   \
	X(TP_STAT_PASS_CD_LENGTH, "pass-channel-data-length")                                    \
	/* more than 3 bytes after the ChannelData (not RFC padding) */                            \
	X(TP_STAT_PASS_PADDING, "pass-padding")                                                  \
	X(TP_STAT_PASS_FRAGMENT, "pass-fragment") /* IPv4 fragment or IPv6 fragment header */     \
	X(TP_STAT_PASS_IP_OPTIONS, "pass-ip-options") /* IPv4 options, IPv6 extension headers */  \
	X(TP_STAT_PASS_MALFORMED, "pass-malformed")   /* lengths that do not add up */            \
	X(TP_STAT_PASS_GSO, "pass-gso")               /* a GSO/GRO aggregate */                   \
	/* checksum not yet computed (locally sent) and leaving the host */                        \
	X(TP_STAT_PASS_CSUM_OFFLOAD, "pass-checksum-offload")                                    \
	/* wildcard listener whose address the client has not used yet */                         \
	X(TP_STAT_PASS_LISTENER_UNKNOWN, "pass-listener-unknown")                                \
	/* destination on this host, reached only through the stack */                             \
	X(TP_STAT_PASS_LOCAL, "pass-local")                                                      \
	X(TP_STAT_PASS_NO_ROUTE, "pass-no-route") /* FIB lookup failed (unreachable, ...) */      \
	/* FIB lookup refused: forwarding disabled on the interface */                             \
	X(TP_STAT_PASS_FWD_DISABLED, "pass-forwarding-disabled")                                 \
	X(TP_STAT_PASS_FRAG_NEEDED, "pass-frag-needed") /* larger than the egress MTU */          \
	X(TP_STAT_PASS_VLAN, "pass-vlan")               /* VLAN-tagged frame */                   \
	X(TP_STAT_ERROR, "error") /* a helper failed half-way: dropped */                        \
	/* XDP: the next hop's link address is not resolved yet (no bpf_redirect_neigh there) */  \
	X(TP_STAT_PASS_NO_NEIGHBOUR, "pass-no-neighbour")

#define TP_STAT_ENUM(name, text) name,
enum tp_stat { TP_STATS(TP_STAT_ENUM) TP_STAT_COUNT };
#undef TP_STAT_ENUM

/*
 * A binding's counters as the loader hands them to JavaScript (a Float64Array, in this order;
 * src/layout.ts's COUNTER_FIELDS): the tp_slot field and JavaScript's name for it.
 */
#define TP_BINDING_COUNTERS(X)                                                                   \
	X(to_peer_packets, "toPeerPackets")                                                      \
	X(to_peer_bytes, "toPeerBytes")                                                          \
	X(to_client_packets, "toClientPackets")                                                  \
	X(to_client_bytes, "toClientBytes")                                                      \
	X(limited_packets, "limitedPackets")                                                     \
	X(limited_bytes, "limitedBytes")

#define TP_COUNTER_ENUM(field, text) TP_COUNTER_##field,
enum tp_counter { TP_BINDING_COUNTERS(TP_COUNTER_ENUM) TP_COUNTER_COUNT };
#undef TP_COUNTER_ENUM

/* What a token bucket's drops are handed to JavaScript as: packets, bytes. */
#define TP_BUCKET_DROP_COUNT 2

/* The numbers JavaScript relies on, by name (native/layout.c): X(name) for each. */
#define TP_LAYOUT_NUMBERS(X)                                                                     \
	X(TP_FAMILY_V4) X(TP_FAMILY_V6) X(TP_STAT_COUNT) X(TP_COUNTER_COUNT) X(TP_BUCKET_DROP_COUNT)

#endif /* TURNPIKE_KERNEL_PATH_H */
