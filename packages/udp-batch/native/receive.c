// Receive: libuv says the context's epoll set is readable; read every ready socket with
// recvmmsg(2) into the receive arena and hand JavaScript one batch at a time (context.c's
// deliver). Slot i of the arena takes packet i of the batch, its payload HEADROOM bytes into
// the slot, its source and length in rxMeta (layout.h).
#include "udp_batch.h"

#include <errno.h>
#include <string.h>

#include "address.h"
#include "syscalls.h"

/**
 * One recvmmsg on a ready socket into the free slots [n, max_batch) of the arena; returns
 * the number of slots now filled (truncated datagrams are dropped, the rest close up).
 */
static uint32_t receive_into(ctx_t* c, sock_t* s, uint32_t n, int* more) {
  struct mmsghdr* msgs = c->rmsgs + n;
  for (uint32_t j = 0; j < c->max_batch - n; j++) {
    msgs[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    msgs[j].msg_hdr.msg_flags = 0;
  }
  int want = (int)(c->max_batch - n);
  int r = raw_recvmmsg(s->fd, msgs, (unsigned)want);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      // ECONNREFUSED and friends: an ICMP error reported on the socket (udp(7): Linux passes
      // them on even for an unconnected socket, as RFC 1122 asks); the read consumes it.
      count_drop(c, DROP_RECV_ERROR);
    }
    return n;
  }
  c->stats[ST_COUNTERS + C_RECV_CALLS] += 1;
  if (r == want) *more = 1;
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
  return n;
}

/** libuv's callback: the epoll set is readable (level-triggered, see epoll(7)). */
void on_poll(uv_poll_t* handle, int status, int events) {
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
      n = receive_into(c, s, n, &more);
    }
    if (n > 0 && !c->destroyed) deliver(c, n);
  }
  c->in_poll = 0;
}
