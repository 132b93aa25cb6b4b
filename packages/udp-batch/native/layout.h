// The memory layout udp-batch shares with JavaScript: the one place it is written down.
//
// JavaScript reads and writes the context's ArrayBuffers (rx, rxMeta, tx, txMeta, ctl, stats)
// directly, so both sides must agree on every size, stride, offset and index below. The addon
// hands all of them to JavaScript at load (`layout`, built by layout.c from LAYOUT_NUMBERS and
// DROP_REASONS), and src/layout.ts checks them against the values it compiles in:
// a mismatch fails the load with a reason, and the relay runs on node:dgram instead.
//
// To change the layout: change it here, in src/layout.ts, and (for a new constant) in
// LAYOUT_NUMBERS at the end of this file.
#ifndef UDP_BATCH_LAYOUT_H
#define UDP_BATCH_LAYOUT_H

// ---- Receive arena (rx) ----------------------------------------------------------------
// Slot i starts at i * SLOT_SIZE; its payload at i * SLOT_SIZE + HEADROOM. The headroom is
// where a 4-byte ChannelData header (RFC 8656 §12.4) is written in place in front of a peer's
// datagram, so header + payload go out as one range without a copy.

#define HEADROOM 4
#define MAX_DATAGRAM 65535 /* the largest UDP payload: a slot never truncates one */
#define SLOT_SIZE 65544    /* HEADROOM + MAX_DATAGRAM, rounded up to 8 */

// ---- Receive metadata (rxMeta, uint32 words) ---------------------------------------------
#define RX_STRIDE 8 /* words per received packet */
#define RX_HANDLE 0 /* the socket's handle (sockets.c: generation << 16 | index) */
#define RX_LENGTH 1
#define RX_PORT 2
#define RX_FAMILY 3 /* 4 or 6; 6 | RX_SCOPED for a link-local source with a scope id */
#define RX_ADDR 4   /* 4 words: IPv4 in word 0 (host order), IPv6 as 4 big-endian words */
#define RX_SCOPED 0x100

// ---- Transmit queue (txMeta, uint32 words) ---------------------------------------------
// JavaScript appends entries and bumps ctl[CTL_TX_COUNT]; transmit.c sends them on flush.
#define TX_STRIDE 12 /* words per queued packet */
#define TX_HANDLE 0
#define TX_ARENA 1 /* ARENA_RX or ARENA_TX: where the payload's bytes are */
#define TX_OFFSET 2
#define TX_LENGTH 3
#define TX_PORT 4
#define TX_FAMILY 5
#define TX_ADDR 6      /* 4 words, as RX_ADDR */
#define TX_TAG 10      /* stats tag, < MAX_TAGS */
#define TX_OVERHEAD 11 /* leading bytes that are framing, not payload (not counted as bytes) */

#define ARENA_RX 0 /* a range of the receive arena, sent before it is reused */
#define ARENA_TX 1 /* bytes JavaScript copied into the tx arena */

// ---- Control words (ctl, uint32) -------------------------------------------------------
#define CTL_TX_COUNT 0 /* entries queued in txMeta */
#define CTL_TX_BYTES 1 /* bytes used in the tx arena (JavaScript's bump pointer) */
#define CTL_SIZE 4

// ---- Counters (stats, float64) ---------------------------------------------------------
// Float64 so a counter never wraps in the life of a process (exact to 2^53).
#define MAX_TAGS 16    /* per-tag sent packets and bytes */
#define MAX_BUCKETS 16 /* sent-size histogram: up to 15 bounds, and one above them all */
#define DROP_SLOTS 16  /* room for the drop reasons */
#define COUNTER_SLOTS 16
#define ST_PACKETS 0
#define ST_BYTES (ST_PACKETS + MAX_TAGS)
#define ST_BUCKETS (ST_BYTES + MAX_TAGS)
#define ST_DROPS (ST_BUCKETS + MAX_BUCKETS)
#define ST_COUNTERS (ST_DROPS + DROP_SLOTS)
#define ST_SIZE (ST_COUNTERS + COUNTER_SLOTS)

// Why a packet was dropped: stats[ST_DROPS + reason], in this order. The names are how
// JavaScript knows them (metrics labels; src/layout.ts's BATCH_DROP_REASONS).
#define DROP_REASONS(X)                                                                        \
  X(DROP_QUEUE_FULL, "send-queue-full") /* EAGAIN and the socket's backlog is full */          \
  X(DROP_EMSGSIZE, "send-emsgsize")                                                            \
  X(DROP_ECONNREFUSED, "send-econnrefused") /* an ICMP port unreachable reported on it */      \
  X(DROP_ENOBUFS, "send-enobufs")                                                              \
  X(DROP_EPERM, "send-eperm") /* a firewall rule */                                            \
  X(DROP_UNREACHABLE, "send-unreachable")                                                      \
  X(DROP_SEND_OTHER, "send-failed")                                                            \
  X(DROP_CLOSED, "send-socket-closed") /* the socket closed before the packet went out */      \
  X(DROP_INVALID, "send-invalid") /* an entry the module cannot send (bad range, family) */    \
  X(DROP_TRUNCATED, "recv-truncated")                                                          \
  X(DROP_RECV_ERROR, "recv-error")

#define DROP_REASON_ENUM(name, text) name,
enum drop_reason { DROP_REASONS(DROP_REASON_ENUM) DROP_COUNT };
#undef DROP_REASON_ENUM

// What the module did: stats[ST_COUNTERS + counter].
enum counter {
  C_RECV_CALLS = 0, /* recvmmsg calls that returned data */
  C_SEND_CALLS,     /* sendmmsg calls */
  C_RX_PACKETS,
  C_BATCHES,       /* JavaScript callbacks */
  C_EAGAIN,        /* times a send found a full socket buffer */
  C_BACKLOG_BYTES, /* bytes waiting in backlogs now (a gauge) */
  C_WAKEUPS,       /* libuv poll callbacks */
  C_COUNT
};

// ---- Splice pipe counters (splice_pipe.c; float64) --------------------------------------
// splicePipeCounters(pipe, out) writes these into `out`: A is the pipe's first socket.
#define SPLICE_A_TO_B_BYTES 0
#define SPLICE_B_TO_A_BYTES 1
#define SPLICE_A_TO_B_CHUNKS 2 /* splice calls that wrote to B */
#define SPLICE_B_TO_A_CHUNKS 3
#define SPLICE_COUNTERS 4
// splicePipePoolCounters(out): this thread's kernel pipes made, lent out now, idle now.
#define SPLICE_POOL_MADE 0
#define SPLICE_POOL_LENT 1
#define SPLICE_POOL_IDLE 2
#define SPLICE_POOL_COUNTERS 3
/** Descriptors a thread's idle kernel pipes hold at most (two per pipe; splice_pipe.c). */
#define SPLICE_POOL_IDLE_FDS 16

// The layout's own consistency, checked by the compiler.
_Static_assert(SLOT_SIZE >= HEADROOM + MAX_DATAGRAM && SLOT_SIZE % 8 == 0,
               "a slot holds the headroom and the largest datagram, 8-byte aligned");
_Static_assert(RX_ADDR + 4 <= RX_STRIDE, "rxMeta: the address words fit the stride");
_Static_assert(TX_ADDR + 4 <= TX_TAG && TX_OVERHEAD < TX_STRIDE,
               "txMeta: the fields fit the stride without overlapping");
_Static_assert(CTL_TX_BYTES < CTL_SIZE, "ctl: the words fit");
_Static_assert(DROP_COUNT <= DROP_SLOTS, "stats: room for every drop reason");
_Static_assert(C_COUNT <= COUNTER_SLOTS, "stats: room for every counter");
_Static_assert(MAX_TAGS <= 32, "tags fit the 32-bit bucketTags mask");

// Every number above, as JavaScript gets them (layout.c): X(name) for each.
#define LAYOUT_NUMBERS(X)                                                                      \
  X(HEADROOM) X(MAX_DATAGRAM) X(SLOT_SIZE)                                                      \
  X(RX_STRIDE) X(RX_HANDLE) X(RX_LENGTH) X(RX_PORT) X(RX_FAMILY) X(RX_ADDR) X(RX_SCOPED)         \
  X(TX_STRIDE) X(TX_HANDLE) X(TX_ARENA) X(TX_OFFSET) X(TX_LENGTH) X(TX_PORT) X(TX_FAMILY)        \
  X(TX_ADDR) X(TX_TAG) X(TX_OVERHEAD) X(ARENA_RX) X(ARENA_TX)                                    \
  X(CTL_TX_COUNT) X(CTL_TX_BYTES) X(CTL_SIZE)                                                   \
  X(MAX_TAGS) X(MAX_BUCKETS) X(ST_PACKETS) X(ST_BYTES) X(ST_BUCKETS) X(ST_DROPS) X(ST_COUNTERS)  \
  X(ST_SIZE)                                                                                    \
  X(C_RECV_CALLS) X(C_SEND_CALLS) X(C_RX_PACKETS) X(C_BATCHES) X(C_EAGAIN) X(C_BACKLOG_BYTES)    \
  X(C_WAKEUPS)                                                                                  \
  X(SPLICE_A_TO_B_BYTES) X(SPLICE_B_TO_A_BYTES) X(SPLICE_A_TO_B_CHUNKS) X(SPLICE_B_TO_A_CHUNKS)  \
  X(SPLICE_COUNTERS) X(SPLICE_POOL_MADE) X(SPLICE_POOL_LENT) X(SPLICE_POOL_IDLE)                 \
  X(SPLICE_POOL_COUNTERS) X(SPLICE_POOL_IDLE_FDS)

#endif
