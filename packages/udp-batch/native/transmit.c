// Transmit: what JavaScript queued in txMeta goes out with sendmmsg(2), one call per run of
// consecutive entries for the same socket. What the kernel will not take yet (EAGAIN) waits
// in a bounded per-socket backlog until EPOLLOUT says the socket is writable (epoll(7)); a
// send error drops that one packet and counts why. Packets and bytes are counted per tag only
// once the kernel accepted them.
#include "udp_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "syscalls.h"

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

/** Message m of the next sendmmsg: `len` bytes at `data` to `addr`. */
static inline void prepare_msg(ctx_t* c, uint32_t m, void* addr, socklen_t addrlen,
                               const uint8_t* data, size_t len) {
  c->siov[m].iov_base = (void*)data;
  c->siov[m].iov_len = len;
  memset(&c->smsgs[m].msg_hdr, 0, sizeof(struct msghdr));
  c->smsgs[m].msg_hdr.msg_name = addr;
  c->smsgs[m].msg_hdr.msg_namelen = addrlen;
  c->smsgs[m].msg_hdr.msg_iov = &c->siov[m];
  c->smsgs[m].msg_hdr.msg_iovlen = 1;
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

/**
 * Prepared messages [from, m) into the socket's backlog. Their payloads may live in the rx
 * arena, which the next receive overwrites: backlog_push copies them.
 */
static void backlog_push_prepared(ctx_t* c, sock_t* s, uint32_t from, uint32_t m) {
  for (uint32_t k = from; k < m; k++) {
    const uint32_t* e = &c->tx_meta[c->sidx[k] * TX_STRIDE];
    backlog_push(c, s, &c->saddrs[k], c->smsgs[k].msg_hdr.msg_namelen,
                 (const uint8_t*)c->siov[k].iov_base, (uint32_t)c->siov[k].iov_len, e[TX_TAG],
                 e[TX_OVERHEAD]);
  }
}

static void backlog_pop(ctx_t* c, sock_t* s) {
  pending_t* p = s->head;
  s->head = p->next;
  if (s->head == NULL) s->tail = NULL;
  s->backlog_bytes -= p->length;
  c->stats[ST_COUNTERS + C_BACKLOG_BYTES] -= p->length;
  free(p);
}

void backlog_clear(ctx_t* c, sock_t* s) {
  while (s->head) {
    count_drop(c, DROP_CLOSED);
    backlog_pop(c, s);
  }
}

/** The socket is writable: send its backlog in order until it empties or blocks again. */
void backlog_drain(ctx_t* c, sock_t* s) {
  while (s->head) {
    uint32_t m = 0;
    for (pending_t* p = s->head; p && m < SEND_BATCH; p = p->next, m++) {
      prepare_msg(c, m, &p->addr, p->addrlen, p->data, p->length);
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
      // The socket buffer is full: keep the rest, in order, for when it is writable.
      c->stats[ST_COUNTERS + C_EAGAIN] += 1;
      backlog_push_prepared(c, s, k, m);
      return;
    }
    // sendmmsg reports an error only for the first message it could not send: drop that one
    // packet, count why, and go on with the rest.
    count_drop(c, r < 0 ? drop_reason_of(errno) : DROP_SEND_OTHER);
    k++;
  }
}

/** Send every queued tx entry, then empty the queue and the tx arena. */
void flush(ctx_t* c) {
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
      if (e[TX_ARENA] == ARENA_RX) {
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
      prepare_msg(c, m, &c->saddrs[m], alen, base + off, len);
      c->sidx[m] = i;
      m++;
    }
    if (m == 0) continue;
    if (s->head != NULL) {
      // Packets already wait for this socket: queue behind them to keep their order.
      backlog_push_prepared(c, s, 0, m);
      continue;
    }
    send_run(c, s, m);
  }
  c->ctl[CTL_TX_COUNT] = 0;
  c->ctl[CTL_TX_BYTES] = 0;
}
