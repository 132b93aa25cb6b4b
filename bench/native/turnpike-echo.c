// turnpike-echo: the bench's native echo peer (bench/README.md, "The generator"). A few UDP
// sockets that send every datagram straight back to where it came from (the relay's relayed
// transport address, or the generator itself with no relay), a batch at a time: one recvmmsg
// and one sendmmsg per batch of up to 64 datagrams, the same buffers both ways.
//
//   turnpike-echo IP COUNT FIRSTPORT
// binds COUNT sockets on IP from FIRSTPORT up (a port in use is skipped; 0 = the kernel's
// choice), 4 MiB buffers asked for (as the JavaScript echo peer asks), then on stdin/stdout:
//   (at start)            -> ready PID PORT...
//   stats                 -> stats RECEIVED BYTES DROPPED   (echoes the kernel refused: DROPPED)
//   quit, or stdin closed -> exit 0
#include "common.h" // first: it defines _GNU_SOURCE

#include <sys/epoll.h>

#define MAX_SOCKETS 64
#define SLOT 65536
#define SOCKET_BUFFER (4 << 20)

static int fds[MAX_SOCKETS];
static uint64_t received, bytes, dropped;

static struct mmsghdr msgs[BATCH];
static struct iovec iovs[BATCH];
static struct sockaddr_in from[BATCH];
static uint8_t slots[BATCH][SLOT];

static void echo(int fd) {
  for (int i = 0; i < BATCH; i++) {
    iovs[i].iov_len = SLOT;
    msgs[i].msg_hdr.msg_namelen = sizeof from[i];
  }
  int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
  if (n <= 0) return;
  received += (uint64_t)n;
  // The same headers go back out: each datagram to its own source, with its own length.
  for (int i = 0; i < n; i++) {
    bytes += msgs[i].msg_len;
    iovs[i].iov_len = msgs[i].msg_len;
  }
  for (int off = 0; off < n;) {
    int s = sendmmsg(fd, msgs + off, (unsigned)(n - off), MSG_DONTWAIT);
    if (s < 0 && errno == EINTR) continue;
    if (s <= 0) {
      // A full send buffer: the rest is lost, and shows up as loss, which is what it is.
      dropped += (uint64_t)(n - off);
      break;
    }
    off += s;
  }
}

static void on_command(char *line) {
  if (strcmp(line, "stats") == 0)
    say("stats %llu %llu %llu", (unsigned long long)received, (unsigned long long)bytes,
        (unsigned long long)dropped);
  else if (strcmp(line, "quit") == 0) exit(0);
  else say("error unknown command: %s", line);
}

int main(int argc, char **argv) {
  int count = argc == 4 ? atoi(argv[2]) : 0;
  int first = argc == 4 ? atoi(argv[3]) : -1;
  if (count < 1 || count > MAX_SOCKETS || first < 0 || first > 65535) {
    fprintf(stderr, "usage: turnpike-echo IP COUNT(1-%d) FIRSTPORT\n", MAX_SOCKETS);
    return 2;
  }
  die_with_parent();
  for (int i = 0; i < BATCH; i++) {
    iovs[i] = (struct iovec){.iov_base = slots[i], .iov_len = SLOT};
    msgs[i].msg_hdr = (struct msghdr){
        .msg_name = &from[i], .msg_namelen = sizeof from[i], .msg_iov = &iovs[i], .msg_iovlen = 1};
  }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event in = {.events = EPOLLIN, .data.u32 = 0};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) < 0) {
    perror("epoll");
    return 1;
  }
  char ready[1024];
  int len = snprintf(ready, sizeof ready, "ready %d", (int)getpid());
  int port = first;
  for (int i = 0; i < count; i++) {
    int fd = -EADDRINUSE;
    for (int tries = 0; fd == -EADDRINUSE && tries < 1000; tries++) {
      fd = udp_bind(argv[1], port, SOCKET_BUFFER);
      if (port != 0) port++;
    }
    if (fd < 0) {
      say("error bind %s: %s", argv[1], strerror(-fd));
      return 1;
    }
    fds[i] = fd;
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &alen);
    len += snprintf(ready + len, sizeof ready - (size_t)len, " %d", ntohs(a.sin_port));
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i + 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  }
  say("%s", ready);
  static struct lines commands;
  struct epoll_event evs[MAX_SOCKETS + 1];
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_SOCKETS + 1, -1);
    for (int i = 0; i < n; i++) {
      uint32_t id = evs[i].data.u32;
      if (id == 0) {
        if (!read_lines(&commands, on_command)) return 0;
      } else {
        echo(fds[id - 1]);
      }
    }
  }
}
