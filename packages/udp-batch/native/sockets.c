// The sockets of a context: a table of slots, handles that name a slot and its generation,
// and the one epoll set (epoll(7)) libuv watches for the whole context.
//
// A handle is generation << 16 | index. Closing a socket bumps its slot's generation, so a
// handle JavaScript still holds (or a tx entry queued before the close) no longer finds the
// slot, even once a new socket lives there. A closed index waits until the next wake-up
// before reuse: the epoll event list being walked may still name it.
#include "udp_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define INITIAL_SOCKETS 64

/** The epoll set and an empty table; 0, or an errno and the call that failed (all undone). */
int sockets_init(ctx_t* c, const char** failed) {
  *failed = "epoll_create1";
  c->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (c->epfd < 0) return errno;
  *failed = "malloc";
  c->cap = INITIAL_SOCKETS;
  c->socks = malloc(sizeof(sock_t) * c->cap);
  c->free_list = malloc(sizeof(uint32_t) * c->cap);
  c->released = malloc(sizeof(uint32_t) * c->cap);
  if (!c->socks || !c->free_list || !c->released) {
    sockets_free(c);
    close(c->epfd);
    return ENOMEM;
  }
  for (uint32_t i = 0; i < c->cap; i++) {
    c->socks[i] = (sock_t){.fd = -1};
    c->free_list[i] = c->cap - 1 - i; /* pop from the end: lowest index first */
  }
  c->free_len = c->cap;
  return 0;
}

/** The table's memory (the sockets are closed and the epoll fd is closed by then). */
void sockets_free(ctx_t* c) {
  free(c->socks);
  free(c->free_list);
  free(c->released);
  c->socks = NULL;
  c->free_list = c->released = NULL;
}

/** Double the table, up to MAX_SOCKETS (a handle's index is 16 bits); 0 or -1. */
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

void update_ref(ctx_t* c) {
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

/**
 * Put `fd` (owned from now on) into the context's epoll set; its handle, or -errno. `shared`:
 * `fd` is a duplicate, and the socket has another fd elsewhere (see close_sock).
 */
int64_t register_socket(ctx_t* c, int fd, uint32_t family, int shared) {
  if (!c->in_poll) reuse_released(c);
  if (c->free_len == 0 && grow(c) != 0) return -EMFILE;
  uint32_t idx = c->free_list[--c->free_len];
  sock_t* s = &c->socks[idx];
  s->fd = fd;
  s->family = (uint8_t)family;
  s->want_out = 0;
  s->shared = shared ? 1 : 0;
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

/** Close at once: its backlog is dropped (counted), its handle goes stale. */
void close_sock(ctx_t* c, sock_t* s) {
  backlog_clear(c, s);
  // epoll(7), Q6: closing a file descriptor removes it from every interest list once no other
  // fd refers to the same open file description. A socket `open` made has no other fd (made
  // here with SOCK_CLOEXEC, its fd never handed out), so close() alone takes it out of the set
  // and EPOLL_CTL_DEL would be one more system call per deleted allocation (bench/README.md,
  // "2026-12-07, third pass"). An adopted socket is a duplicate of an fd its maker keeps
  // (a worker's listener, the supervisor's original): close() leaves it registered, so it is
  // removed explicitly. (A fork between here and its child's exec holds copies for that
  // moment; an event reported meanwhile names a slot whose fd is -1, or, after the next
  // wake-up, its successor, whose recvmmsg finds its own datagrams or none: on_poll, receive.c.)
  if (s->shared) epoll_ctl(c->epfd, EPOLL_CTL_DEL, s->fd, NULL);
  close(s->fd);
  s->fd = -1;
  s->gen = (uint16_t)(s->gen + 1);
  s->want_out = 0;
  c->released[c->released_len++] = (uint32_t)(s - c->socks);
  c->open_count--;
}

/** Watch for EPOLLOUT only while a backlog waits: a writable socket is nearly always ready. */
void set_events(ctx_t* c, sock_t* s, int want_out) {
  if (s->want_out == want_out) return;
  struct epoll_event ev;
  ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
  ev.data.u32 = (uint32_t)(s - c->socks);
  if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, s->fd, &ev) == 0) s->want_out = (uint8_t)want_out;
}
