// udp-batch: batched UDP I/O for Node.js (Linux), as a Node-API addon.
//
// Why it exists: Node's dgram costs one libuv callback, one Buffer, one rinfo object and one
// JS->C++ crossing per datagram (15-21 us per forwarded packet measured here), while the kernel
// needs 4-7 us with recvmmsg/sendmmsg. A TURN relay moves nothing but datagrams, so the
// boundary between JavaScript and the kernel decides its cost. This module moves batches:
//
//   receive  All sockets of a context sit in one epoll set, and libuv watches only that set's
//            fd (uv_poll_t). When it is readable we drain ready sockets with recvmmsg into one
//            reused arena and call JavaScript ONCE per batch: payloads in `rx` (slot i starts at
//            i * SLOT_SIZE, with HEADROOM free bytes in front so a 4-byte ChannelData header
//            can be written in place, RFC 8656 §12.4), per-packet metadata in `rxMeta`
//            (RX_STRIDE uint32 each: socket handle, length, port, family, address words).
//   send     JavaScript appends entries to `txMeta` (socket, which arena, offset, length,
//            destination, stats tag) and bumps ctl[CTL_TX_COUNT]; payloads stay where they are
//            (a range of `rx`, or bytes copied into `tx`). After the batch callback returns
//            the module flushes them: consecutive entries for one socket go out in one sendmmsg.
//   EAGAIN   Unsent packets are copied into a bounded per-socket backlog and EPOLLOUT is armed;
//            they go out when the socket is writable, in order, never busy-looping.
//   errors   Kernel errors on send (EMSGSIZE, ECONNREFUSED, ENOBUFS, EPERM, ...) drop that one
//            packet and count it by reason; packet and byte counters count only what the kernel
//            accepted. Nothing here throws on the data path.
//
// Counters live in a Float64Array (`stats`) the runtime reads when metrics are collected.
// One context per JavaScript environment (main thread or worker): the addon is context-aware.
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#define NAPI_VERSION 8
#include <node_api.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// ---- Layout shared with index.ts (keep in sync: index.ts exports the same numbers) --------

#define HEADROOM 4
#define MAX_DATAGRAM 65535
#define SLOT_SIZE 65544 /* HEADROOM + MAX_DATAGRAM, rounded up to 8 */

#define RX_STRIDE 8
#define RX_HANDLE 0
#define RX_LENGTH 1
#define RX_PORT 2
#define RX_FAMILY 3 /* 4 or 6; 6 | RX_SCOPED for a link-local source with a scope id */
#define RX_ADDR 4   /* 4 words: IPv4 in word 0 (host order), IPv6 as 4 big-endian words */
#define RX_SCOPED 0x100

#define TX_STRIDE 12
#define TX_HANDLE 0
#define TX_ARENA 1 /* 0: rx arena, 1: tx arena */
#define TX_OFFSET 2
#define TX_LENGTH 3
#define TX_PORT 4
#define TX_FAMILY 5
#define TX_ADDR 6 /* 4 words, as RX_ADDR */
#define TX_TAG 10 /* stats tag, < MAX_TAGS */
#define TX_OVERHEAD 11 /* leading bytes that are framing, not payload (not counted as bytes) */

#define CTL_TX_COUNT 0
#define CTL_TX_BYTES 1 /* bytes used in the tx arena (the runtime's bump pointer) */
#define CTL_SIZE 4

#define MAX_TAGS 16
#define MAX_BUCKETS 16
#define ST_PACKETS 0
#define ST_BYTES (ST_PACKETS + MAX_TAGS)
#define ST_BUCKETS (ST_BYTES + MAX_TAGS)
#define ST_DROPS (ST_BUCKETS + MAX_BUCKETS)
#define ST_COUNTERS (ST_DROPS + 16)
#define ST_SIZE (ST_COUNTERS + 16)

enum drop_reason {
  DROP_QUEUE_FULL = 0, /* EAGAIN and the socket's backlog is full */
  DROP_EMSGSIZE,
  DROP_ECONNREFUSED, /* an ICMP port unreachable reported on the socket */
  DROP_ENOBUFS,
  DROP_EPERM, /* a firewall rule */
  DROP_UNREACHABLE,
  DROP_SEND_OTHER,
  DROP_CLOSED, /* the socket closed before the packet went out */
  DROP_INVALID, /* an entry the module cannot send (bad range, family mismatch) */
  DROP_TRUNCATED,
  DROP_RECV_ERROR,
  DROP_COUNT
};

enum counter {
  C_RECV_CALLS = 0, /* recvmmsg calls that returned data */
  C_SEND_CALLS,     /* sendmmsg calls */
  C_RX_PACKETS,
  C_BATCHES, /* JavaScript callbacks */
  C_EAGAIN,  /* times a send found a full socket buffer */
  C_BACKLOG_BYTES, /* bytes waiting in backlogs now (a gauge) */
  C_WAKEUPS, /* libuv poll callbacks */
  C_COUNT
};

// glibc's wrappers of these are pthread cancellation points, and the bookkeeping around each
// call showed up in profiles (a few % of the relay's CPU). The module never cancels threads,
// so the raw system calls do.
static inline int raw_sendmmsg(int fd, struct mmsghdr* msgs, unsigned n) {
  return (int)syscall(SYS_sendmmsg, fd, msgs, n, MSG_DONTWAIT);
}
static inline int raw_recvmmsg(int fd, struct mmsghdr* msgs, unsigned n) {
  return (int)syscall(SYS_recvmmsg, fd, msgs, n, MSG_DONTWAIT, NULL);
}
static inline int raw_epoll_wait(int epfd, struct epoll_event* evs, int n) {
  return (int)syscall(SYS_epoll_pwait, epfd, evs, n, 0, NULL, 8); /* every arch has pwait */
}

#define MAX_SOCKETS 65535
#define SEND_BATCH 64
#define MAX_ROUNDS 8 /* epoll rounds per libuv wake-up, so timers and TCP are not starved */

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
  pending_t* head;
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
  uint32_t bucket_tags; /* bit mask: tags whose packets go into the size histogram */
  size_t max_backlog;       /* per socket */
  size_t max_backlog_total; /* all sockets of the context together */

  napi_ref refs[6];

  struct mmsghdr* rmsgs;
  struct iovec* riov;
  struct sockaddr_storage* raddrs;
  struct mmsghdr smsgs[SEND_BATCH];
  struct iovec siov[SEND_BATCH];
  struct sockaddr_storage saddrs[SEND_BATCH];
  uint32_t sidx[SEND_BATCH]; /* tx entry index of each prepared message */
} ctx_t;

// ---- helpers ---------------------------------------------------------------------------

#define CHECK(call)                                                                     \
  do {                                                                                  \
    if ((call) != napi_ok) return NULL;                                                 \
  } while (0)

static napi_value throw_errno(napi_env env, int err, const char* syscall) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s failed: %s", syscall, strerror(err));
  napi_value error, message, code, errnum;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  // The same codes Node's own errors carry (err.code), so callers handle both paths alike.
  const char* name = err == EADDRINUSE      ? "EADDRINUSE"
                     : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == EACCES        ? "EACCES"
                     : err == EPERM         ? "EPERM"
                     : err == EINVAL        ? "EINVAL"
                     : err == EMFILE        ? "EMFILE"
                     : err == ENFILE        ? "ENFILE"
                     : err == ENOMEM        ? "ENOMEM"
                     : err == EBADF         ? "EBADF"
                     : err == EAFNOSUPPORT  ? "EAFNOSUPPORT"
                                            : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, -err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_value sc;
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, error, "syscall", sc);
  napi_throw(env, error);
  return NULL;
}

static void count_drop(ctx_t* c, int reason) { c->stats[ST_DROPS + reason] += 1; }

static int drop_reason_of(int err) {
  switch (err) {
    case EMSGSIZE: return DROP_EMSGSIZE;
    case ECONNREFUSED: return DROP_ECONNREFUSED;
    case ENOBUFS:
    case ENOMEM: return DROP_ENOBUFS;
    case EPERM:
    case EACCES: return DROP_EPERM;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
    case ENETDOWN:
    case EHOSTDOWN: return DROP_UNREACHABLE;
    default: return DROP_SEND_OTHER;
  }
}

static void count_sent(ctx_t* c, uint32_t tag, uint32_t length, uint32_t overhead) {
  if (tag >= MAX_TAGS) tag = MAX_TAGS - 1;
  uint32_t payload = length > overhead ? length - overhead : 0;
  c->stats[ST_PACKETS + tag] += 1;
  c->stats[ST_BYTES + tag] += payload;
  if (!(c->bucket_tags & (1u << tag))) return;
  uint32_t b = 0;
  while (b < c->nbounds && payload > c->bounds[b]) b++;
  c->stats[ST_BUCKETS + b] += 1;
}

static sock_t* sock_of(ctx_t* c, uint32_t handle) {
  uint32_t idx = handle & 0xffff;
  if (idx >= c->cap) return NULL;
  sock_t* s = &c->socks[idx];
  if (s->fd < 0 || s->gen != (handle >> 16)) return NULL;
  return s;
}

static uint32_t handle_of(ctx_t* c, sock_t* s) {
  return ((uint32_t)s->gen << 16) | (uint32_t)(s - c->socks);
}

static void write_words(struct sockaddr_storage* ss, uint32_t* words, uint32_t* port,
                        uint32_t* family) {
  if (ss->ss_family == AF_INET) {
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    *family = 4;
    *port = ntohs(a->sin_port);
    words[0] = ntohl(a->sin_addr.s_addr);
    words[1] = words[2] = words[3] = 0;
  } else {
    struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
    *family = a->sin6_scope_id != 0 ? (6 | RX_SCOPED) : 6;
    *port = ntohs(a->sin6_port);
    for (int i = 0; i < 4; i++) {
      uint32_t w;
      memcpy(&w, &a->sin6_addr.s6_addr[i * 4], 4);
      words[i] = ntohl(w);
    }
  }
}

static socklen_t read_words(struct sockaddr_storage* ss, uint32_t family, const uint32_t* words,
                            uint32_t port) {
  memset(ss, 0, sizeof(struct sockaddr_in6));
  if (family == 4) {
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(words[0]);
    return sizeof(struct sockaddr_in);
  }
  struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons((uint16_t)port);
  for (int i = 0; i < 4; i++) {
    uint32_t w = htonl(words[i]);
    memcpy(&a->sin6_addr.s6_addr[i * 4], &w, 4);
  }
  return sizeof(struct sockaddr_in6);
}

static void set_events(ctx_t* c, sock_t* s, int want_out) {
  if (s->want_out == want_out) return;
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
  ev.data.u32 = (uint32_t)(s - c->socks);
  if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, s->fd, &ev) == 0) s->want_out = (uint8_t)want_out;
}

static void update_ref(ctx_t* c) {
  // Like a dgram socket, an open socket keeps the event loop alive; none open, none held.
  if (!c->poll_active) return;
  if (c->open_count > 0 && !c->refed) {
    uv_ref((uv_handle_t*)&c->poll);
    c->refed = 1;
  } else if (c->open_count == 0 && c->refed) {
    uv_unref((uv_handle_t*)&c->poll);
    c->refed = 0;
  }
}

// ---- backlog (EAGAIN) ------------------------------------------------------------------

static void backlog_push(ctx_t* c, sock_t* s, const struct sockaddr_storage* addr,
                         socklen_t addrlen, const uint8_t* data, uint32_t length, uint32_t tag,
                         uint32_t overhead) {
  // Both caps: one slow socket cannot take everything, and ten thousand cannot together.
  if (s->backlog_bytes + length > c->max_backlog ||
      c->stats[ST_COUNTERS + C_BACKLOG_BYTES] + length > (double)c->max_backlog_total) {
    count_drop(c, DROP_QUEUE_FULL);
    return;
  }
  pending_t* p = malloc(sizeof(pending_t) + length);
  if (p == NULL) {
    count_drop(c, DROP_QUEUE_FULL);
    return;
  }
  p->next = NULL;
  memcpy(&p->addr, addr, addrlen);
  p->addrlen = addrlen;
  p->tag = tag;
  p->overhead = overhead;
  p->length = length;
  memcpy(p->data, data, length);
  if (s->tail) s->tail->next = p;
  else s->head = p;
  s->tail = p;
  s->backlog_bytes += length;
  c->stats[ST_COUNTERS + C_BACKLOG_BYTES] += length;
  set_events(c, s, 1);
}

static void backlog_pop(ctx_t* c, sock_t* s) {
  pending_t* p = s->head;
  s->head = p->next;
  if (s->head == NULL) s->tail = NULL;
  s->backlog_bytes -= p->length;
  c->stats[ST_COUNTERS + C_BACKLOG_BYTES] -= p->length;
  free(p);
}

static void backlog_clear(ctx_t* c, sock_t* s) {
  while (s->head) {
    count_drop(c, DROP_CLOSED);
    backlog_pop(c, s);
  }
}

/** The socket is writable: send its backlog in order until it empties or blocks again. */
static void backlog_drain(ctx_t* c, sock_t* s) {
  while (s->head) {
    uint32_t m = 0;
    for (pending_t* p = s->head; p && m < SEND_BATCH; p = p->next, m++) {
      c->siov[m].iov_base = p->data;
      c->siov[m].iov_len = p->length;
      memset(&c->smsgs[m].msg_hdr, 0, sizeof(struct msghdr));
      c->smsgs[m].msg_hdr.msg_name = &p->addr;
      c->smsgs[m].msg_hdr.msg_namelen = p->addrlen;
      c->smsgs[m].msg_hdr.msg_iov = &c->siov[m];
      c->smsgs[m].msg_hdr.msg_iovlen = 1;
    }
    c->stats[ST_COUNTERS + C_SEND_CALLS] += 1;
    int r = raw_sendmmsg(s->fd, c->smsgs, m);
    if (r > 0) {
      for (int k = 0; k < r; k++) {
        count_sent(c, s->head->tag, s->head->length, s->head->overhead);
        backlog_pop(c, s);
      }
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      c->stats[ST_COUNTERS + C_EAGAIN] += 1;
      return; /* still armed for EPOLLOUT */
    }
    count_drop(c, r < 0 ? drop_reason_of(errno) : DROP_SEND_OTHER);
    backlog_pop(c, s);
  }
  set_events(c, s, 0);
}

// ---- send ------------------------------------------------------------------------------

/** Send prepared messages [0, m) of one socket; tx entries sidx[] say what each one is. */
static void send_run(ctx_t* c, sock_t* s, uint32_t m) {
  uint32_t k = 0;
  while (k < m) {
    c->stats[ST_COUNTERS + C_SEND_CALLS] += 1;
    int r = raw_sendmmsg(s->fd, c->smsgs + k, m - k);
    if (r > 0) {
      for (int i = 0; i < r; i++) {
        const uint32_t* e = &c->tx_meta[c->sidx[k + i] * TX_STRIDE];
        count_sent(c, e[TX_TAG], e[TX_LENGTH], e[TX_OVERHEAD]);
      }
      k += (uint32_t)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // The socket buffer is full: keep the rest, in order, for when it is writable. The
      // payloads may live in the rx arena, which the next receive overwrites: copy them.
      c->stats[ST_COUNTERS + C_EAGAIN] += 1;
      for (; k < m; k++) {
        const uint32_t* e = &c->tx_meta[c->sidx[k] * TX_STRIDE];
        backlog_push(c, s, &c->saddrs[k], c->smsgs[k].msg_hdr.msg_namelen,
                     (const uint8_t*)c->siov[k].iov_base, (uint32_t)c->siov[k].iov_len,
                     e[TX_TAG], e[TX_OVERHEAD]);
      }
      return;
    }
    // sendmmsg reports an error only for the first message it could not send: drop that one
    // packet, count why, and go on with the rest.
    count_drop(c, r < 0 ? drop_reason_of(errno) : DROP_SEND_OTHER);
    k++;
  }
}

static void flush(ctx_t* c) {
  uint32_t count = c->ctl[CTL_TX_COUNT];
  if (count > c->max_tx) count = c->max_tx;
  uint32_t i = 0;
  while (i < count) {
    uint32_t handle = c->tx_meta[i * TX_STRIDE + TX_HANDLE];
    sock_t* s = sock_of(c, handle);
    if (s == NULL) {
      count_drop(c, DROP_CLOSED);
      i++;
      continue;
    }
    uint32_t m = 0;
    for (; i < count && m < SEND_BATCH; i++) {
      const uint32_t* e = &c->tx_meta[i * TX_STRIDE];
      if (e[TX_HANDLE] != handle) break;
      uint32_t off = e[TX_OFFSET], len = e[TX_LENGTH], family = e[TX_FAMILY];
      const uint8_t* base;
      size_t limit;
      if (e[TX_ARENA] == 0) {
        base = c->rx;
        limit = (size_t)c->max_batch * SLOT_SIZE;
      } else {
        base = c->tx;
        limit = c->tx_bytes;
      }
      if (len > MAX_DATAGRAM || (size_t)off + len > limit || family != s->family ||
          e[TX_PORT] == 0 || e[TX_PORT] > 65535) {
        count_drop(c, DROP_INVALID);
        continue;
      }
      socklen_t alen = read_words(&c->saddrs[m], family, &e[TX_ADDR], e[TX_PORT]);
      c->siov[m].iov_base = (void*)(base + off);
      c->siov[m].iov_len = len;
      memset(&c->smsgs[m].msg_hdr, 0, sizeof(struct msghdr));
      c->smsgs[m].msg_hdr.msg_name = &c->saddrs[m];
      c->smsgs[m].msg_hdr.msg_namelen = alen;
      c->smsgs[m].msg_hdr.msg_iov = &c->siov[m];
      c->smsgs[m].msg_hdr.msg_iovlen = 1;
      c->sidx[m] = i;
      m++;
    }
    if (m == 0) continue;
    if (s->head != NULL) {
      // Packets already wait for this socket: queue behind them to keep their order.
      for (uint32_t k = 0; k < m; k++) {
        const uint32_t* e = &c->tx_meta[c->sidx[k] * TX_STRIDE];
        backlog_push(c, s, &c->saddrs[k], c->smsgs[k].msg_hdr.msg_namelen,
                     (const uint8_t*)c->siov[k].iov_base, (uint32_t)c->siov[k].iov_len,
                     e[TX_TAG], e[TX_OVERHEAD]);
      }
      continue;
    }
    send_run(c, s, m);
  }
  c->ctl[CTL_TX_COUNT] = 0;
  c->ctl[CTL_TX_BYTES] = 0;
}

// ---- receive ---------------------------------------------------------------------------

static void deliver(ctx_t* c, uint32_t n) {
  napi_env env = c->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg;
  napi_get_reference_value(env, c->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object receiver */
  napi_create_uint32(env, n, &arg);
  c->stats[ST_COUNTERS + C_BATCHES] += 1;
  // make_callback: process.nextTick and microtasks run after it, as after any I/O callback.
  napi_status st = napi_make_callback(env, c->async, recv, cb, 1, &arg, NULL);
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
  // Entries queued during the callback may point into the rx arena: send them before the
  // arena is reused by the next receive.
  if (!c->destroyed) flush(c);
}

/** Closed indices become reusable once no epoll event list being walked can name them. */
static void reuse_released(ctx_t* c) {
  for (uint32_t i = 0; i < c->released_len; i++) c->free_list[c->free_len++] = c->released[i];
  c->released_len = 0;
}

static void on_poll(uv_poll_t* handle, int status, int events) {
  (void)events;
  ctx_t* c = handle->data;
  if (status < 0 || c->destroyed) return;
  c->stats[ST_COUNTERS + C_WAKEUPS] += 1;
  reuse_released(c);
  c->in_poll = 1;

  struct epoll_event evs[64];
  int more = 1;
  for (int round = 0; more && round < MAX_ROUNDS && !c->destroyed; round++) {
    int k = raw_epoll_wait(c->epfd, evs, 64);
    if (k <= 0) break;
    // Another round only if this one may have left data behind (a full event list or a
    // socket that filled its read); otherwise the level-triggered poll wakes us again when
    // something arrives, and the empty epoll_wait a blind retry costs is saved.
    more = k == 64;
    uint32_t n = 0;
    for (int i = 0; i < k && !c->destroyed; i++) {
      uint32_t idx = evs[i].data.u32;
      if (idx >= c->cap) continue;
      sock_t* s = &c->socks[idx];
      if (s->fd < 0) continue;
      if (evs[i].events & EPOLLOUT) backlog_drain(c, s);
      if (!(evs[i].events & (EPOLLIN | EPOLLERR))) continue;
      // One recvmmsg per ready socket per round: a busy socket cannot starve the others
      // (epoll rotates sockets that stay ready to the back of its list).
      if (n == c->max_batch) {
        deliver(c, n);
        n = 0;
        if (c->destroyed || s->fd < 0) continue;
      }
      struct mmsghdr* msgs = c->rmsgs + n;
      for (uint32_t j = 0; j < c->max_batch - n; j++) {
        msgs[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        msgs[j].msg_hdr.msg_flags = 0;
      }
      int want = (int)(c->max_batch - n);
      int r = raw_recvmmsg(s->fd, msgs, (unsigned)want);
      if (r < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          // ECONNREFUSED and friends: an ICMP error reported on the socket; it is consumed.
          count_drop(c, DROP_RECV_ERROR);
        }
        continue;
      }
      c->stats[ST_COUNTERS + C_RECV_CALLS] += 1;
      if (r == want) more = 1;
      uint32_t h = handle_of(c, s);
      for (int j = 0; j < r; j++) {
        if (msgs[j].msg_hdr.msg_flags & MSG_TRUNC) {
          count_drop(c, DROP_TRUNCATED);
          continue;
        }
        uint32_t* meta = &c->rx_meta[n * RX_STRIDE];
        if (n != (uint32_t)(msgs - c->rmsgs) + (uint32_t)j) {
          // An earlier message of this call was dropped: move this payload down one slot.
          memmove(c->rx + (size_t)n * SLOT_SIZE + HEADROOM,
                  c->rx + ((size_t)(msgs - c->rmsgs) + j) * SLOT_SIZE + HEADROOM, msgs[j].msg_len);
          memcpy(&c->raddrs[n], &c->raddrs[(msgs - c->rmsgs) + j], sizeof(struct sockaddr_storage));
        }
        meta[RX_HANDLE] = h;
        meta[RX_LENGTH] = msgs[j].msg_len;
        write_words(&c->raddrs[n], &meta[RX_ADDR], &meta[RX_PORT], &meta[RX_FAMILY]);
        n++;
      }
      c->stats[ST_COUNTERS + C_RX_PACKETS] += r;
    }
    if (n > 0 && !c->destroyed) deliver(c, n);
  }
  c->in_poll = 0;
}

// ---- lifecycle -------------------------------------------------------------------------

static void free_ctx(ctx_t* c) {
  free(c->socks);
  free(c->free_list);
  free(c->released);
  free(c->rmsgs);
  free(c->riov);
  free(c->raddrs);
  free(c);
}

static void on_poll_closed(uv_handle_t* handle) { free_ctx((ctx_t*)handle->data); }

static void close_sock(ctx_t* c, sock_t* s) {
  backlog_clear(c, s);
  epoll_ctl(c->epfd, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
  s->gen = (uint16_t)(s->gen + 1);
  s->want_out = 0;
  c->released[c->released_len++] = (uint32_t)(s - c->socks);
  c->open_count--;
}

static void destroy_ctx(ctx_t* c) {
  if (c->destroyed) return;
  c->destroyed = 1;
  for (uint32_t i = 0; i < c->cap; i++)
    if (c->socks[i].fd >= 0) close_sock(c, &c->socks[i]);
  for (int i = 0; i < 6; i++)
    if (c->refs[i]) napi_delete_reference(c->env, c->refs[i]);
  if (c->callback) napi_delete_reference(c->env, c->callback);
  if (c->async) napi_async_destroy(c->env, c->async);
  if (c->poll_active) {
    uv_poll_stop(&c->poll);
    close(c->epfd);
    uv_close((uv_handle_t*)&c->poll, on_poll_closed);
  } else {
    close(c->epfd);
    free_ctx(c);
  }
}

static void on_env_cleanup(void* arg) {
  // Environment teardown (worker exit, process exit): close every socket we own.
  destroy_ctx((ctx_t*)arg);
}

static ctx_t* unwrap(napi_env env, napi_value v) {
  void* p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "udp-batch: not a context");
    return NULL;
  }
  ctx_t* c = p;
  if (c->destroyed) {
    napi_throw_error(env, "ERR_DESTROYED", "udp-batch: context destroyed");
    return NULL;
  }
  return c;
}

static uint32_t get_u32(napi_env env, napi_value obj, const char* key, uint32_t fallback) {
  napi_value v;
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return fallback;
  napi_get_named_property(env, obj, key, &v);
  uint32_t out;
  if (napi_get_value_uint32(env, v, &out) != napi_ok) return fallback;
  return out;
}

static napi_value make_buffer(napi_env env, ctx_t* c, int slot, size_t bytes, void** data) {
  napi_value ab;
  if (napi_create_arraybuffer(env, bytes, data, &ab) != napi_ok) return NULL;
  memset(*data, 0, bytes);
  napi_create_reference(env, ab, 1, &c->refs[slot]);
  return ab;
}

// create(onBatch, { maxBatch, maxTx, txBytes, maxBacklog, bounds: number[] })
//   -> { ctx, rx, rxMeta, tx, txMeta, ctl, stats } (ArrayBuffers the runtime wraps)
static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (argc < 2 || t != napi_function) {
    napi_throw_type_error(env, NULL, "udp-batch: create(onBatch, options)");
    return NULL;
  }
  ctx_t* c = calloc(1, sizeof(ctx_t));
  if (c == NULL) return throw_errno(env, ENOMEM, "calloc");
  c->env = env;
  c->max_batch = get_u32(env, argv[1], "maxBatch", 64);
  if (c->max_batch < 1) c->max_batch = 1;
  if (c->max_batch > 1024) c->max_batch = 1024;
  c->max_tx = get_u32(env, argv[1], "maxTx", 256);
  if (c->max_tx < 1) c->max_tx = 1;
  c->tx_bytes = get_u32(env, argv[1], "txBytes", 1 << 20);
  if (c->tx_bytes < MAX_DATAGRAM + 8) c->tx_bytes = MAX_DATAGRAM + 8;
  c->max_backlog = get_u32(env, argv[1], "maxBacklog", 1 << 20);
  c->max_backlog_total = get_u32(env, argv[1], "maxBacklogTotal", 64 << 20);
  c->bucket_tags = get_u32(env, argv[1], "bucketTags", 0xffffffffu);
  napi_value bounds;
  if (napi_get_named_property(env, argv[1], "bounds", &bounds) == napi_ok) {
    bool is_array = false;
    napi_is_array(env, bounds, &is_array);
    if (is_array) {
      uint32_t len;
      napi_get_array_length(env, bounds, &len);
      if (len > MAX_BUCKETS - 1) len = MAX_BUCKETS - 1;
      for (uint32_t i = 0; i < len; i++) {
        napi_value v;
        napi_get_element(env, bounds, i, &v);
        napi_get_value_uint32(env, v, &c->bounds[i]);
      }
      c->nbounds = len;
    }
  }

  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (c->epfd < 0) {
    int err = errno;
    free(c);
    return throw_errno(env, err, "epoll_create1");
  }
  c->cap = 64;
  c->socks = malloc(sizeof(sock_t) * c->cap);
  c->free_list = malloc(sizeof(uint32_t) * c->cap);
  c->released = malloc(sizeof(uint32_t) * c->cap);
  for (uint32_t i = 0; i < c->cap; i++) {
    c->socks[i] = (sock_t){.fd = -1};
    c->free_list[i] = c->cap - 1 - i; /* pop from the end: lowest index first */
  }
  c->free_len = c->cap;
  c->rmsgs = calloc(c->max_batch, sizeof(struct mmsghdr));
  c->riov = calloc(c->max_batch, sizeof(struct iovec));
  c->raddrs = calloc(c->max_batch, sizeof(struct sockaddr_storage));

  napi_value result, ab, ext;
  napi_create_object(env, &result);
  void* data;
  ab = make_buffer(env, c, 0, (size_t)c->max_batch * SLOT_SIZE, &data);
  c->rx = data;
  napi_set_named_property(env, result, "rx", ab);
  ab = make_buffer(env, c, 1, (size_t)c->max_batch * RX_STRIDE * 4, &data);
  c->rx_meta = data;
  napi_set_named_property(env, result, "rxMeta", ab);
  ab = make_buffer(env, c, 2, c->tx_bytes, &data);
  c->tx = data;
  napi_set_named_property(env, result, "tx", ab);
  ab = make_buffer(env, c, 3, (size_t)c->max_tx * TX_STRIDE * 4, &data);
  c->tx_meta = data;
  napi_set_named_property(env, result, "txMeta", ab);
  ab = make_buffer(env, c, 4, CTL_SIZE * 4, &data);
  c->ctl = data;
  napi_set_named_property(env, result, "ctl", ab);
  ab = make_buffer(env, c, 5, ST_SIZE * 8, &data);
  c->stats = data;
  napi_set_named_property(env, result, "stats", ab);
  for (uint32_t i = 0; i < c->max_batch; i++) {
    c->riov[i].iov_base = c->rx + (size_t)i * SLOT_SIZE + HEADROOM;
    c->riov[i].iov_len = MAX_DATAGRAM;
    c->rmsgs[i].msg_hdr.msg_name = &c->raddrs[i];
    c->rmsgs[i].msg_hdr.msg_iov = &c->riov[i];
    c->rmsgs[i].msg_hdr.msg_iovlen = 1;
  }

  napi_create_reference(env, argv[0], 1, &c->callback);
  napi_value resource_name;
  napi_create_string_utf8(env, "UDPBATCH", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &c->async);

  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  if (uv_poll_init(loop, &c->poll, c->epfd) != 0) {
    destroy_ctx(c);
    return throw_errno(env, EIO, "uv_poll_init");
  }
  c->poll.data = c;
  uv_poll_start(&c->poll, UV_READABLE, on_poll);
  c->poll_active = 1;
  c->refed = 1;
  update_ref(c);
  napi_add_env_cleanup_hook(env, on_env_cleanup, c);

  napi_create_external(env, c, NULL, NULL, &ext);
  napi_set_named_property(env, result, "ctx", ext);
  return result;
}

static int grow(ctx_t* c) {
  if (c->cap >= MAX_SOCKETS) return -1;
  uint32_t cap = c->cap * 2 > MAX_SOCKETS ? MAX_SOCKETS : c->cap * 2;
  sock_t* socks = realloc(c->socks, sizeof(sock_t) * cap);
  if (!socks) return -1;
  c->socks = socks;
  uint32_t* fl = realloc(c->free_list, sizeof(uint32_t) * cap);
  if (!fl) return -1;
  c->free_list = fl;
  uint32_t* rl = realloc(c->released, sizeof(uint32_t) * cap);
  if (!rl) return -1;
  c->released = rl;
  for (uint32_t i = c->cap; i < cap; i++) c->socks[i] = (sock_t){.fd = -1};
  for (uint32_t i = cap; i > c->cap; i--) c->free_list[c->free_len++] = i - 1;
  c->cap = cap;
  return 0;
}

/** Read the family/address/port arguments at argv[0..2] into `ss`; 0 or an errno. */
static int read_address(napi_env env, napi_value* argv, uint32_t* family, struct sockaddr_storage* ss,
                        socklen_t* sl) {
  uint32_t port;
  char address[64];
  size_t alen;
  if (napi_get_value_uint32(env, argv[0], family) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], address, sizeof address, &alen) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &port) != napi_ok || (*family != 4 && *family != 6) ||
      port > 65535) {
    return EINVAL;
  }
  memset(ss, 0, sizeof *ss);
  if (*family == 4) {
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, address, &a->sin_addr) != 1) return EINVAL;
    *sl = sizeof *a;
  } else {
    struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, address, &a->sin6_addr) != 1) return EINVAL;
    *sl = sizeof *a;
  }
  return 0;
}

/** A bound, non-blocking UDP socket: its fd, or -errno. */
static int make_udp_socket(napi_env env, uint32_t family, struct sockaddr_storage* ss,
                           socklen_t sl, napi_value options) {
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  if (family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (get_u32(env, options, "reusePort", 0) &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  int rcv = (int)get_u32(env, options, "recvBufferSize", 0);
  int snd = (int)get_u32(env, options, "sendBufferSize", 0);
  // Best effort, like dgram: the kernel caps them at net.core.[rw]mem_max.
  if (rcv > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  if (snd > 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd);
  if (bind(fd, (struct sockaddr*)ss, sl) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

/** Put `fd` (owned from now on) into the context's epoll set; its handle, or -errno. */
static int64_t register_socket(ctx_t* c, int fd, uint32_t family) {
  if (!c->in_poll) reuse_released(c);
  if (c->free_len == 0 && grow(c) != 0) return -EMFILE;
  uint32_t idx = c->free_list[--c->free_len];
  sock_t* s = &c->socks[idx];
  s->fd = fd;
  s->family = (uint8_t)family;
  s->want_out = 0;
  s->head = s->tail = NULL;
  s->backlog_bytes = 0;
  struct epoll_event ev;
  ev.events = EPOLLIN;
  ev.data.u32 = idx;
  if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    int err = errno;
    s->fd = -1;
    c->free_list[c->free_len++] = idx;
    return -err;
  }
  c->open_count++;
  update_ref(c);
  return handle_of(c, s);
}

/** Register `fd` (owned from now on) and answer its handle; on failure close it and throw. */
static napi_value handle_or_throw(napi_env env, ctx_t* c, int fd, uint32_t family, const char* what) {
  int64_t h = register_socket(c, fd, family);
  if (h < 0) {
    close(fd);
    return throw_errno(env, (int)-h, what);
  }
  napi_value out;
  napi_create_uint32(env, (uint32_t)h, &out);
  return out;
}

/** The one fd argument of dupFd/closeFd/fdPort; false (with a TypeError thrown) if bad. */
static bool fd_arg(napi_env env, napi_callback_info info, const char* usage, int32_t* fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], fd) != napi_ok || *fd < 0) {
    napi_throw_type_error(env, NULL, usage);
    return false;
  }
  return true;
}

static napi_value int_value(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

// open(ctx, family, address, port, { reusePort, recvBufferSize, sendBufferSize }) -> handle
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t* c = unwrap(env, argv[0]);
  if (!c) return NULL;
  uint32_t family;
  struct sockaddr_storage ss;
  socklen_t sl;
  if (read_address(env, argv + 1, &family, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "udp-batch: open(ctx, 4|6, address, port, options)");
    return NULL;
  }
  int fd = make_udp_socket(env, family, &ss, sl, argv[4]);
  if (fd < 0) return throw_errno(env, -fd, "bind");
  return handle_or_throw(env, c, fd, family, "open");
}

// bindUdp(family, address, port, options) -> fd: a bound UDP socket no context reads, for a
// supervisor that keeps workers' sockets across their restarts (they adopt() a duplicate).
static napi_value js_bind_udp(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t family;
  struct sockaddr_storage ss;
  socklen_t sl;
  if (argc < 4 || read_address(env, argv, &family, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "udp-batch: bindUdp(4|6, address, port, options)");
    return NULL;
  }
  int fd = make_udp_socket(env, family, &ss, sl, argv[3]);
  if (fd < 0) return throw_errno(env, -fd, "bind");
  return int_value(env, fd);
}

// adopt(ctx, fd) -> handle: reads and sends through a duplicate of `fd` (the original stays
// with whoever made it: closing the duplicate does not take the socket out of its reuseport
// group, so a worker that dies leaves its share of clients queued for its successor).
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t* c = unwrap(env, argv[0]);
  if (!c) return NULL;
  int32_t original;
  if (napi_get_value_int32(env, argv[1], &original) != napi_ok || original < 0) {
    napi_throw_type_error(env, NULL, "udp-batch: adopt(ctx, fd)");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(original, (struct sockaddr*)&ss, &sl) != 0) return throw_errno(env, errno, "getsockname");
  int fd = fcntl(original, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "dup");
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "fcntl");
  }
  return handle_or_throw(env, c, fd, ss.ss_family == AF_INET ? 4 : 6, "adopt");
}

// dupFd(fd) -> a duplicate (close-on-exec), for handing a listening socket to a thread that
// will own and close its copy.
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "udp-batch: dupFd(fd)", &fd)) return NULL;
  int out_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (out_fd < 0) return throw_errno(env, errno, "dup");
  return int_value(env, out_fd);
}

// fdPort(fd) -> the local port a socket is bound to.
static napi_value js_fd_port(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "udp-batch: fdPort(fd)", &fd)) return NULL;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr*)&ss, &sl) != 0) return throw_errno(env, errno, "getsockname");
  uint32_t words[4], port, family;
  write_words(&ss, words, &port, &family);
  napi_value out;
  napi_create_uint32(env, port, &out);
  return out;
}

// closeFd(fd): for the supervisor's own copies at shutdown.
static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, "udp-batch: closeFd(fd)", &fd)) close(fd);
  return NULL;
}

static napi_value js_local_port(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t* c = unwrap(env, argv[0]);
  if (!c) return NULL;
  uint32_t handle;
  napi_get_value_uint32(env, argv[1], &handle);
  sock_t* s = sock_of(c, handle);
  if (!s) return throw_errno(env, EBADF, "localPort");
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(s->fd, (struct sockaddr*)&ss, &sl) != 0) return throw_errno(env, errno, "getsockname");
  uint32_t words[4], port, family;
  write_words(&ss, words, &port, &family);
  napi_value out;
  napi_create_uint32(env, port, &out);
  return out;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t* c = unwrap(env, argv[0]);
  if (!c) return NULL;
  uint32_t handle;
  napi_get_value_uint32(env, argv[1], &handle);
  sock_t* s = sock_of(c, handle);
  napi_value out;
  napi_get_boolean(env, s != NULL, &out);
  if (s) {
    close_sock(c, s);
    update_ref(c);
  }
  return out;
}

static napi_value js_flush(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t* c = unwrap(env, argv[0]);
  if (!c) return NULL;
  flush(c);
  return NULL;
}

static napi_value js_destroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void* p = NULL;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) return NULL;
  ctx_t* c = p;
  if (c->destroyed) return NULL;
  napi_remove_env_cleanup_hook(env, on_env_cleanup, c);
  destroy_ctx(c);
  return NULL;
}

// ---- TCP listeners shared by workers --------------------------------------------------

// tcpListen(family, address, port, backlog, steerGroup) -> fd
//
// A listening TCP socket with SO_REUSEPORT, for workers that each accept on the same address.
// The kernel spreads connections over such a group by a hash of the 4-tuple, so an RFC 6062
// data connection would usually land on another worker than its client's control connection.
// With steerGroup > 1 a classic BPF program picks the group member by the SOURCE ADDRESS only
// (SO_ATTACH_REUSEPORT_CBPF): every connection from one client host reaches the same worker,
// and the cross-worker hand-over stays the exception (clients behind several egress IPs).
// Node takes the fd with server.listen({ fd }).
static napi_value js_tcp_listen(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t family, backlog, group;
  struct sockaddr_storage ss;
  socklen_t sl;
  if (argc < 5 || read_address(env, argv, &family, &ss, &sl) != 0 ||
      napi_get_value_uint32(env, argv[3], &backlog) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &group) != napi_ok) {
    napi_throw_type_error(env, NULL, "udp-batch: tcpListen(4|6, address, port, backlog, group)");
    return NULL;
  }
  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  int one = 1;
  if (family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr*)&ss, sl) != 0 || listen(fd, (int)backlog) != 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, err, "tcp listen");
  }
  if (group > 1) {
    // A = source address (IPv4: the whole address; IPv6: its last 32 bits), A %= group.
    // SKF_NET_OFF addresses the network header whatever the program's data pointer is.
    struct sock_filter code[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_NET_OFF + (family == 4 ? 12 : 20))},
        {BPF_ALU | BPF_MOD | BPF_K, 0, 0, group},
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    struct sock_fprog prog = {.len = 3, .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
      int err = errno;
      close(fd);
      return throw_errno(env, err, "setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
    }
  }
  return int_value(env, fd);
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"localPort", NULL, js_local_port, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"flush", NULL, js_flush, NULL, NULL, NULL, napi_default, NULL},
      {"destroy", NULL, js_destroy, NULL, NULL, NULL, napi_default, NULL},
      {"tcpListen", NULL, js_tcp_listen, NULL, NULL, NULL, napi_default, NULL},
      {"bindUdp", NULL, js_bind_udp, NULL, NULL, NULL, napi_default, NULL},
      {"adopt", NULL, js_adopt, NULL, NULL, NULL, napi_default, NULL},
      {"dupFd", NULL, js_dup_fd, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_default, NULL},
      {"fdPort", NULL, js_fd_port, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
