// The data path's system calls, made raw.
//
// glibc's wrappers of these are pthread cancellation points, and the bookkeeping around each
// call showed up in profiles (a few % of the relay's CPU). The module never cancels threads,
// so the raw system calls do. See recvmmsg(2), sendmmsg(2), epoll_pwait(2).
#ifndef UDP_BATCH_SYSCALLS_H
#define UDP_BATCH_SYSCALLS_H

#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "udp_batch.h"

static inline int raw_sendmmsg(int fd, struct mmsghdr* msgs, unsigned n) {
  return (int)syscall(SYS_sendmmsg, fd, msgs, n, MSG_DONTWAIT);
}
static inline int raw_recvmmsg(int fd, struct mmsghdr* msgs, unsigned n) {
  return (int)syscall(SYS_recvmmsg, fd, msgs, n, MSG_DONTWAIT, NULL);
}
/** A poll of the set that never blocks (timeout 0): libuv already said it is readable. */
static inline int raw_epoll_wait(int epfd, struct epoll_event* evs, int n) {
  return (int)syscall(SYS_epoll_pwait, epfd, evs, n, 0, NULL, 8); /* every arch has pwait */
}

#endif
