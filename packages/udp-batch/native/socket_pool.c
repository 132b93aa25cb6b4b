// UDP sockets made ahead of time, on a thread of the module's own, for `open` (addon.c).
//
// Why: a relay opens one UDP socket per allocation (RFC 8656 §7.2: a relayed transport address
// of its own), at three system calls on the event loop's thread: socket(2), bind(2) and
// epoll_ctl(2). socket(2) is the dearest of them (~2.5 µs here: a socket, an inode and a file
// to allocate, an fd to install), and the one that needs nothing from the request: the port
// comes from relay-core with the request, so bind stays where it is. Made on another core
// beforehand, an allocation's open costs the event loop bind and epoll_ctl only (bench/README.md,
// "The socket pool").
//
// The pool: up to `pool_max` sockets per address family, non-blocking, close-on-exec, IPv6 ones
// IPV6_V6ONLY (as new_socket in fd_helpers.c makes them), never bound: a pooled socket is an
// fd, nothing more, until `open` binds it. A family is only pooled once `open` asked for one of
// it (a relay without IPv6 allocations holds no IPv6 sockets). Taking one is a mutex and a pop;
// below half full the thread is woken to refill. Empty pool, a failed socket(2) in the thread,
// or TURNPIKE_UDP_SOCKET_POOL=off: `open` makes its socket itself, as before, and the counters
// say how many came from where. The pool's fds count against RLIMIT_NOFILE like the relay
// sockets they become, so it is sized from the limit: one per 256 descriptors the process may
// open, at most 64 per family (4 with the common 1,024, 64 from 16,384 up); relay-server's
// config/fd-budget.ts keeps them in its reserve for relay sockets. A socket(2) that fails for
// want of descriptors or memory stops the refill until `open` takes again; one that fails
// because the family does not exist here (no IPv6) stops it for good.
//
// One pool per process, shared by every context (the main thread's engine and the workers');
// its thread is detached and never joined: it holds nothing but these fds, which close with the
// process.
#include "udp_batch.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define POOL_MAX 64

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int fds[2][POOL_MAX];
static int len[2];
/** 1 once `open` asked for this family (pool it), -1 when the family does not exist here. */
static int wanted[2];
/** A refill of this family failed (EMFILE, ENOMEM, ...): none until `open` takes again. */
static int stalled[2];
static int pool_max;
/** 0: not started, 1: running, -1: off (disabled, or the thread could not start). */
static int state;
static double taken, made_inline;

static int family_index(uint32_t family) { return family == 6 ? 1 : 0; }

static int refillable(int f) { return wanted[f] == 1 && !stalled[f] && len[f] < pool_max; }

static int needs_refill(void) { return refillable(0) || refillable(1); }

static void* refill_loop(void* arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  for (;;) {
    while (!needs_refill()) pthread_cond_wait(&wake, &mu);
    for (int f = 0; f < 2; f++) {
      while (refillable(f)) {
        pthread_mutex_unlock(&mu);
        int fd = udp_unbound_socket(f == 1 ? 6 : 4);
        pthread_mutex_lock(&mu);
        if (fd == -EAFNOSUPPORT) {
          wanted[f] = -1; // no such family here: `open` makes its own (and fails as it would)
        } else if (fd < 0) {
          stalled[f] = 1; // no descriptor or memory now: `open` makes its own meanwhile
        } else {
          fds[f][len[f]++] = fd;
        }
      }
    }
  }
  return NULL;
}

static void start_locked(void) {
  const char* setting = getenv("TURNPIKE_UDP_SOCKET_POOL");
  struct rlimit nofile;
  pool_max = getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY
                 ? (int)(nofile.rlim_cur / 256 < POOL_MAX ? nofile.rlim_cur / 256 : POOL_MAX)
                 : POOL_MAX;
  if ((setting != NULL && strcmp(setting, "off") == 0) || pool_max == 0) {
    state = -1;
    return;
  }
  pthread_attr_t attr;
  pthread_t thread;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024); // socket(2) in a loop: no deep stack
  state = pthread_create(&thread, &attr, refill_loop, NULL) == 0 ? 1 : -1;
  pthread_attr_destroy(&attr);
  if (state == 1) pthread_setname_np(thread, "udp-batch pool");
}

int pooled_socket(uint32_t family) {
  int f = family_index(family);
  int fd = -1;
  pthread_mutex_lock(&mu);
  if (state == 0) start_locked();
  if (state == 1 && wanted[f] == 0) wanted[f] = 1;
  if (len[f] > 0) {
    fd = fds[f][--len[f]];
    taken++;
  } else {
    made_inline++;
  }
  stalled[f] = 0;
  if (state == 1 && wanted[f] == 1 && len[f] < (pool_max + 1) / 2) pthread_cond_signal(&wake);
  pthread_mutex_unlock(&mu);
  return fd;
}

void socket_pool_counters(double out[4]) {
  pthread_mutex_lock(&mu);
  out[0] = taken;
  out[1] = made_inline;
  out[2] = len[0];
  out[3] = len[1];
  pthread_mutex_unlock(&mu);
}
