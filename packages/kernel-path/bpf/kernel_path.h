/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps of Turnpike's kernel data path, shared by the BPF program (kernel_path.bpf.c) and
 * its loader (native/kernel_path.c); src/layout.ts mirrors the numbers JavaScript needs.
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

/* The slot's fields in 64-bit words, for the loader (src/layout.ts has the same numbers). */
#define TP_SLOT_DEADLINE 0
#define TP_SLOT_TO_PEER_PACKETS 1
#define TP_SLOT_TO_PEER_BYTES 2
#define TP_SLOT_TO_CLIENT_PACKETS 3
#define TP_SLOT_TO_CLIENT_BYTES 4
#define TP_SLOT_LIMITED_PACKETS 5
#define TP_SLOT_LIMITED_BYTES 6

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
 * Global counters (a per-CPU array, summed by the loader). RELAYED_* count datagrams the
 * program sent on; PASS_* count datagrams it left to userspace unchanged, by reason; the
 * names are in src/layout.ts in this order.
 */
enum tp_stat {
	TP_STAT_TO_PEER,          /* ChannelData stripped and sent to the peer */
	TP_STAT_TO_CLIENT,        /* peer datagram sent to the client as ChannelData */
	TP_STAT_CHAINED,          /* ChannelData whose peer is another allocation's relayed address */
	TP_STAT_RATE_LIMITED,     /* dropped: a token bucket was empty */
	TP_STAT_PASS_NO_ENTRY,    /* UDP, but no route for it (STUN, Send, unbound, other traffic) */
	TP_STAT_PASS_EXPIRED,     /* a route whose slot's deadline has passed */
	TP_STAT_PASS_CD_LENGTH,   /* ChannelData length beyond the datagram (malformed) */
	TP_STAT_PASS_PADDING,     /* more than 3 bytes after the ChannelData (not RFC padding) */
	TP_STAT_PASS_FRAGMENT,    /* IPv4 fragment or IPv6 fragment header */
	TP_STAT_PASS_IP_OPTIONS,  /* IPv4 options or IPv6 extension headers */
	TP_STAT_PASS_MALFORMED,   /* lengths that do not add up */
	TP_STAT_PASS_GSO,         /* a GSO/GRO aggregate */
	TP_STAT_PASS_CSUM_OFFLOAD, /* checksum not yet computed (locally sent) and leaving the host */
	TP_STAT_PASS_LISTENER_UNKNOWN, /* wildcard listener whose address the client has not used yet */
	TP_STAT_PASS_LOCAL,       /* destination on this host, reached only through the stack */
	TP_STAT_PASS_NO_ROUTE,    /* FIB lookup failed (unreachable, blackhole, ...) */
	TP_STAT_PASS_FWD_DISABLED, /* FIB lookup refused: forwarding disabled on the interface */
	TP_STAT_PASS_FRAG_NEEDED, /* larger than the egress MTU */
	TP_STAT_PASS_VLAN,        /* VLAN-tagged frame */
	TP_STAT_ERROR,            /* a helper failed half-way: dropped */
	TP_STAT_PASS_NO_NEIGHBOUR, /* XDP: the next hop's link address is not resolved yet */
	TP_STAT_COUNT,
};

#endif /* TURNPIKE_KERNEL_PATH_H */
