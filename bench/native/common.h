// What the bench's two native helpers share (turnpike-loadgen.c, turnpike-echo.c): the clock,
// the line protocol with the bench on stdin/stdout, and UDP sockets on loopback.
#ifndef TURNPIKE_BENCH_COMMON_H
#define TURNPIKE_BENCH_COMMON_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/** Datagrams per recvmmsg/sendmmsg call: the batch size of @turnpike/udp-batch and the relay. */
#define BATCH 64

static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/** Writes one line to the bench (stdout, unbuffered: the bench waits for it). */
static void say(const char *fmt, ...) {
  char line[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
  line[n++] = '\n';
  for (int off = 0; off < n;) {
    ssize_t w = write(1, line + off, (size_t)(n - off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) exit(1); // the bench is gone
    off += (int)w;
  }
}

/** Writes a long line (the histogram) the same way. */
__attribute__((unused)) static void say_all(const char *text, size_t len) {
  for (size_t off = 0; off < len;) {
    ssize_t w = write(1, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) exit(1);
    off += (size_t)w;
  }
}

/** Commands from the bench, one per line on stdin. */
struct lines {
  char buf[65536];
  size_t len;
};

/**
 * Reads what stdin has and calls `on_line` for each complete line. Returns 0 at EOF (the bench
 * closed the pipe or exited: time to go), 1 otherwise.
 */
static int read_lines(struct lines *l, void (*on_line)(char *line)) {
  ssize_t n = read(0, l->buf + l->len, sizeof l->buf - 1 - l->len);
  if (n < 0) return errno == EAGAIN || errno == EINTR ? 1 : 0;
  if (n == 0) return 0;
  l->len += (size_t)n;
  size_t start = 0;
  for (size_t i = 0; i < l->len; i++) {
    if (l->buf[i] != '\n') continue;
    l->buf[i] = '\0';
    on_line(l->buf + start);
    start = i + 1;
  }
  memmove(l->buf, l->buf + start, l->len - start);
  l->len -= start;
  if (l->len == sizeof l->buf - 1) l->len = 0; // a line this long is no command of ours
  return 1;
}

/** Dies with the bench: no helper outlives the process that started it. */
static void die_with_parent(void) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() == 1) exit(1);
}

/**
 * A non-blocking UDP socket bound to ip:port with `buffer` bytes of kernel buffers asked for
 * (SO_RCVBUF/SO_SNDBUF: capped by net.core.rmem_max/wmem_max, as Node's dgram is). Returns the
 * fd, or -errno.
 */
__attribute__((unused)) static int udp_bind(const char *ip, int port, int buffer) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    close(fd);
    return -EINVAL;
  }
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

#endif
