// Sockets made outside a context, as plain fds, for the relay's supervisor and its workers:
//
// - a bound UDP socket the supervisor keeps across a worker's restarts (the worker adopts a
//   duplicate, so the socket's place in its SO_REUSEPORT group never changes);
// - a TCP listener in an SO_REUSEPORT group, optionally steered by the client's source address
//   with a classic BPF program (SO_ATTACH_REUSEPORT_CBPF, socket(7));
// - duplicates, and the port an fd is bound to.
//
// Every function answers an fd (or port) >= 0, or -errno; `failed` names the call that failed.
#include "udp_batch.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <unistd.h>

#include "address.h"

/** A socket of `type` for `family` (4 or 6), non-blocking and close-on-exec; IPv6 only for 6. */
static int new_socket(uint32_t family, int type) {
  int fd = socket(family == 4 ? AF_INET : AF_INET6, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  // An IPv6 socket that also took IPv4 (mapped addresses) would collide with the IPv4 one.
  if (family == 6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  return fd;
}

/** Close `fd` after a failed call, keeping that call's errno; answers -errno. */
static int close_failed(int fd) {
  int err = errno;
  close(fd);
  return -err;
}

/** An unbound, non-blocking UDP socket (socket_pool.c makes them ahead of time). */
int udp_unbound_socket(uint32_t family) { return new_socket(family, SOCK_DGRAM); }

/** A bound, non-blocking UDP socket, from the pool when it has one (socket_pool.c). */
int udp_socket(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
               const udp_options_t* options) {
  int fd = pooled_socket(family);
  if (fd < 0) fd = new_socket(family, SOCK_DGRAM);
  if (fd < 0) return fd;
  int one = 1;
  if (options->reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return close_failed(fd);
  }
  // Best effort, like dgram: the kernel caps them at net.core.[rw]mem_max (socket(7)).
  if (options->recv_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &options->recv_buffer, sizeof options->recv_buffer);
  }
  if (options->send_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options->send_buffer, sizeof options->send_buffer);
  }
  if (bind(fd, (const struct sockaddr*)ss, sl) != 0) return close_failed(fd);
  return fd;
}

/**
 * A listening TCP socket with SO_REUSEPORT, for workers that each accept on the same address.
 *
 * The kernel spreads connections over such a group by a hash of the 4-tuple, so an RFC 6062
 * data connection would usually land on another worker than its client's control connection.
 * With group > 1 a classic BPF program picks the group member by the SOURCE ADDRESS only:
 * every connection from one client host reaches the same worker, and the cross-worker
 * hand-over stays the exception (clients behind several egress IPs).
 */
int tcp_listener(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
                 uint32_t backlog, uint32_t group, const char** failed) {
  *failed = "socket";
  int fd = new_socket(family, SOCK_STREAM);
  if (fd < 0) return fd;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  *failed = "tcp listen";
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, (const struct sockaddr*)ss, sl) != 0 || listen(fd, (int)backlog) != 0) {
    return close_failed(fd);
  }
  if (group > 1) {
    // A = source address (IPv4: the whole address; IPv6: its last 32 bits), A %= group; the
    // program's answer is the index of the group member (classic BPF: the kernel's
    // Documentation/networking/filter.rst).
    // SKF_NET_OFF addresses the network header whatever the program's data pointer is.
    struct sock_filter code[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_NET_OFF + (family == 4 ? 12 : 20))},
        {BPF_ALU | BPF_MOD | BPF_K, 0, 0, group},
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    struct sock_fprog prog = {.len = 3, .filter = code};
    *failed = "setsockopt(SO_ATTACH_REUSEPORT_CBPF)";
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
      return close_failed(fd);
    }
  }
  return fd;
}

/**
 * A TCP socket bound to an address a SO_REUSEPORT listener holds, not yet connected: an RFC
 * 6062 relay dials a peer from its relayed transport address (RFC 6062 §5.2), the very address
 * and port its relayed listener accepts on. Linux lets a second socket bind next to a listener
 * only when both set SO_REUSEPORT (socket(7)); the caller connects it (net.Socket({ fd })).
 */
int tcp_bound(uint32_t family, const struct sockaddr_storage* ss, socklen_t sl,
              const char** failed) {
  *failed = "socket";
  int fd = new_socket(family, SOCK_STREAM);
  if (fd < 0) return fd;
  int one = 1;
  *failed = "tcp bind";
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(fd, (const struct sockaddr*)ss, sl) != 0) {
    return close_failed(fd);
  }
  return fd;
}

/** A close-on-exec duplicate (fcntl(2) F_DUPFD_CLOEXEC): the same socket, a second fd. */
int dup_cloexec(int fd) {
  int out = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return out < 0 ? -errno : out;
}

/**
 * A non-blocking duplicate of a bound socket made elsewhere, and its family. Closing the
 * duplicate does not take the socket out of its reuseport group: a worker that dies leaves
 * its share of clients queued for its successor.
 */
int dup_nonblocking(int original, uint32_t* family, const char** failed) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  *failed = "getsockname";
  if (getsockname(original, (struct sockaddr*)&ss, &sl) != 0) return -errno;
  *family = ss.ss_family == AF_INET ? 4 : 6;
  *failed = "dup";
  int fd = dup_cloexec(original);
  if (fd < 0) return fd;
  *failed = "fcntl";
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return close_failed(fd);
  return fd;
}

/** The local port `fd` is bound to (getsockname(2)). */
int fd_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr*)&ss, &sl) != 0) return -errno;
  uint32_t words[4], port, family;
  write_words(&ss, words, &port, &family);
  return (int)port;
}
