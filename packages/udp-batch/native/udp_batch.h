// udp-batch: batched UDP I/O for Node.js (Linux), as a Node-API addon. This header holds what
// the module's C files share: the context and socket structures, internal limits, and the
// functions one file calls in another.
//
// Why it exists: Node's dgram costs one libuv callback, one Buffer, one rinfo object and one
// JS->C++ crossing per datagram (15-21 us per forwarded packet measured here), while the kernel
// needs 4-7 us with recvmmsg/sendmmsg. A TURN relay moves nothing but datagrams, so the
// boundary between JavaScript and the kernel decides its cost. This module moves batches:
//
//   receive  (receive.c) All sockets of a context sit in one epoll set, and libuv watches only
//            that set's fd (uv_poll_t). When it is readable we drain ready sockets with
//            recvmmsg into one reused arena and call JavaScript ONCE per batch: payloads in
//            `rx`, per-packet metadata in `rxMeta` (layout.h).
//   send     (transmit.c) JavaScript appends entries to `txMeta` (socket, which arena, offset,
//            length, destination, stats tag) and bumps ctl[CTL_TX_COUNT]; payloads stay where
//            they are (a range of `rx`, or bytes copied into `tx`). After the batch callback
//            returns the module flushes them: consecutive entries for one socket go out in
//            one sendmmsg.
//   EAGAIN   Unsent packets are copied into a bounded per-socket backlog and EPOLLOUT is armed;
//            they go out when the socket is writable, in order, never busy-looping.
//   errors   Kernel errors on send (EMSGSIZE, ECONNREFUSED, ENOBUFS, EPERM, ...) drop that one
//            packet and count it by reason; packet and byte counters count only what the kernel
//            accepted. Nothing here throws on the data path.
//
// The other files: sockets.c (the socket table, handles and generations, the epoll set),
// fd_helpers.c (sockets made for a supervisor: UDP and steered TCP listeners, duplicates),
// socket_pool.c (unbound UDP sockets made ahead of time on a thread of its own, for `open`),
// context.c (a context's life: arenas, libuv poll, the batch callback), addon.c (the functions
// JavaScript calls), layout.c (the shared layout handed to JavaScript at load), splice_pipe.c
// (a zero-copy TCP-to-TCP byte pipe for an RFC 6062 relay, on its own uv polls, no context).
//
// Counters live in a Float64Array (`stats`) the runtime reads when metrics are collected.
// One context per JavaScript environment (main thread or worker): the addon is context-aware.
#ifndef UDP_BATCH_H
#define UDP_BATCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* recvmmsg, sendmmsg, F_DUPFD_CLOEXEC */
#endif
#define NAPI_VERSION 8 /* one build serves every supported Node line */
#include <node_api.h>
#include <uv.h>

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "layout.h"

#define MAX_SOCKETS 65535 /* a handle's index is 16 bits; 0xffff names no socket */
#define SEND_BATCH 64     /* messages per sendmmsg */
#define MAX_ROUNDS 8      /* epoll rounds per libuv wake-up, so timers and TCP are not starved */

/** A packet the kernel would not take yet (EAGAIN), with a copy of its bytes. */
typedef struct pending {
  struct pending* next;
  struct sockaddr_storage addr;
  socklen_t addrlen;
  uint32_t tag;
  uint32_t overhead;
  uint32_t length;
  uint8_t data[];
} pending_t;

typedef struct {
  int fd; /* -1 when the slot is free */
  uint16_t gen;
  uint8_t family;
  uint8_t want_out;
  uint8_t shared; /* the fd is a duplicate (adopt): another fd names the same socket */
  pending_t* head; /* backlog, oldest first */
  pending_t* tail;
  size_t backlog_bytes;
} sock_t;

typedef struct ctx {
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int epfd;
  uv_poll_t poll;
  int poll_active;
  int refed;
  int destroyed;
  int in_poll; /* inside on_poll: closed indices must not be reused yet */

  sock_t* socks;
  uint32_t cap;
  uint32_t open_count;
  uint32_t* free_list; /* indices ready for reuse */
  uint32_t free_len;
  uint32_t* released; /* closed this turn: reused only after the next wake-up */
  uint32_t released_len;

  uint32_t max_batch;
  uint8_t* rx;
  uint32_t* rx_meta;
  uint32_t max_tx;
  uint32_t tx_bytes;
  uint8_t* tx;
  uint32_t* tx_meta;
  uint32_t* ctl;
  double* stats;
  uint32_t bounds[MAX_BUCKETS];
  uint32_t nbounds;
  uint32_t bucket_tags;     /* bit mask: tags whose packets go into the size histogram */
  size_t max_backlog;       /* per socket */
  size_t max_backlog_total; /* all sockets of the context together */

  napi_ref refs[6]; /* the shared ArrayBuffers, held while the context lives */

  struct mmsghdr* rmsgs;
  struct iovec* riov;
  struct sockaddr_storage* raddrs;
  struct mmsghdr smsgs[SEND_BATCH];
  struct iovec siov[SEND_BATCH];
  struct sockaddr_storage saddrs[SEND_BATCH];
  uint32_t sidx[SEND_BATCH]; /* tx entry index of each prepared message */
} ctx_t;

static inline void count_drop(ctx_t* c, int reason) { c->stats[ST_DROPS + reason] += 1; }

// ---- sockets.c: the socket table and the epoll set ----------------------------------------

/** A handle names a socket: generation << 16 | index, so a stale one never finds a new socket. */
static inline sock_t* sock_of(ctx_t* c, uint32_t handle) {
  uint32_t idx = handle & 0xffff;
  if (idx >= c->cap) return NULL;
  sock_t* s = &c->socks[idx];
  if (s->fd < 0 || s->gen != (handle >> 16)) return NULL;
  return s;
}

static inline uint32_t handle_of(ctx_t* c, sock_t* s) {
  return ((uint32_t)s->gen << 16) | (uint32_t)(s - c->socks);
}

/** Closed indices become reusable once no epoll event list being walked can name them. */
static inline void reuse_released(ctx_t* c) {
  for (uint32_t i = 0; i < c->released_len; i++) c->free_list[c->free_len++] = c->released[i];
  c->released_len = 0;
}

int sockets_init(ctx_t* c, const char** failed);
void sockets_free(ctx_t* c);
int64_t register_socket(ctx_t* c, int fd, uint32_t family, int shared);
void close_sock(ctx_t* c, sock_t* s);
void set_events(ctx_t* c, sock_t* s, int want_out);
void update_ref(ctx_t* c);

// ---- transmit.c -----------------------------------------------------------------------

void flush(ctx_t* c);
void backlog_drain(ctx_t* c, sock_t* s);
void backlog_clear(ctx_t* c, sock_t* s);

// ---- receive.c ------------------------------------------------------------------------

void on_poll(uv_poll_t* handle, int status, int events);

// ---- context.c ------------------------------------------------------------------------

void deliver(ctx_t* c, uint32_t n);
ctx_t* unwrap(napi_env env, napi_value v);
napi_value js_create(napi_env env, napi_callback_info info);
napi_value js_destroy(napi_env env, napi_callback_info info);

// ---- fd_helpers.c: sockets made without a context ---------------------------------------

typedef struct {
  int reuse_port;
  int recv_buffer;
  int send_buffer;
} udp_options_t;

int udp_unbound_socket(uint32_t family);
/** socket_pool.c: an unbound UDP socket made ahead of time, or -1 (then make one). */
int pooled_socket(uint32_t family);
/** socket_pool.c: sockets taken from the pool, made inline instead, held now (IPv4, IPv6). */
void socket_pool_counters(double out[4]);
int udp_socket(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
               const udp_options_t* options);
int tcp_listener(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
                 uint32_t backlog, uint32_t group, const char** failed);
int tcp_bound(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
              const char** failed);
int dup_cloexec(int fd);
int dup_nonblocking(int original, uint32_t* family, const char** failed);
int fd_port(int fd);

// ---- splice_pipe.c: a zero-copy TCP <-> TCP pipe ----------------------------------------

napi_value js_splice_pipe(napi_env env, napi_callback_info info);
napi_value js_splice_pipe_start(napi_env env, napi_callback_info info);
napi_value js_splice_pipe_counters(napi_env env, napi_callback_info info);
napi_value js_splice_pipe_end(napi_env env, napi_callback_info info);
napi_value js_splice_pipe_close(napi_env env, napi_callback_info info);
napi_value js_splice_pipe_pool_counters(napi_env env, napi_callback_info info);

// ---- addon.c and layout.c: Node-API helpers -------------------------------------------

#define CHECK(call)                                                                     \
  do {                                                                                  \
    if ((call) != napi_ok) return NULL;                                                 \
  } while (0)

napi_value throw_errno(napi_env env, int err, const char* syscall);
uint32_t get_u32(napi_env env, napi_value obj, const char* key, uint32_t fallback);
napi_value layout_object(napi_env env);

#endif
