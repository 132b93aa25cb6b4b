// The functions JavaScript calls (src/index.ts wraps them), and the module's registration.
// Each checks its arguments, calls the file that does the work (sockets.c, transmit.c,
// fd_helpers.c, context.c) and turns an errno into a thrown Error that carries the same
// `code`, `errno` and `syscall` Node's own errors do. None of them is on the per-packet path.
#include "udp_batch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// ---- arguments and errors --------------------------------------------------------------

napi_value throw_errno(napi_env env, int err, const char* syscall) {
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

/** obj[key] as a uint32, or `fallback` when it is missing or not a number. */
uint32_t get_u32(napi_env env, napi_value obj, const char* key, uint32_t fallback) {
  napi_value v;
  bool has = false;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok || !has) return fallback;
  napi_get_named_property(env, obj, key, &v);
  uint32_t out;
  if (napi_get_value_uint32(env, v, &out) != napi_ok) return fallback;
  return out;
}

/** Read the family/address/port arguments at argv[0..2] into `ss`; 0 or an errno. */
static int read_address(napi_env env, napi_value* argv, uint32_t* family,
                        struct sockaddr_storage* ss, socklen_t* sl) {
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

static udp_options_t udp_options_of(napi_env env, napi_value options) {
  return (udp_options_t){
      .reuse_port = (int)get_u32(env, options, "reusePort", 0),
      .recv_buffer = (int)get_u32(env, options, "recvBufferSize", 0),
      .send_buffer = (int)get_u32(env, options, "sendBufferSize", 0),
  };
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

/** The arguments (ctx, ...) of a context's function: up to n into argv, and the context. */
static ctx_t* ctx_args(napi_env env, napi_callback_info info, size_t n, napi_value* argv) {
  size_t argc = n;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  return unwrap(env, argv[0]);
}

/**
 * The context and socket handle of (ctx, handle) arguments; NULL context if bad. A handle
 * that is not a number names no socket (index 0xffff is never in the table).
 */
static ctx_t* ctx_and_handle(napi_env env, napi_callback_info info, uint32_t* handle) {
  napi_value argv[2];
  ctx_t* c = ctx_args(env, info, 2, argv);
  if (c && napi_get_value_uint32(env, argv[1], handle) != napi_ok) *handle = UINT32_MAX;
  return c;
}

static napi_value int_value(napi_env env, int32_t v) {
  napi_value out;
  napi_create_int32(env, v, &out);
  return out;
}

/** An fd (or port) from fd_helpers.c, or its -errno thrown as from `syscall`. */
static napi_value fd_or_throw(napi_env env, int fd, const char* syscall) {
  return fd < 0 ? throw_errno(env, -fd, syscall) : int_value(env, fd);
}

/**
 * Register `fd` (owned from now on; `shared`: a duplicate, register_socket) and answer its
 * handle; on failure close it and throw.
 */
static napi_value handle_or_throw(napi_env env, ctx_t* c, int fd, uint32_t family, int shared,
                                  const char* what) {
  int64_t h = register_socket(c, fd, family, shared);
  if (h < 0) {
    close(fd);
    return throw_errno(env, (int)-h, what);
  }
  napi_value out;
  napi_create_uint32(env, (uint32_t)h, &out);
  return out;
}

// ---- a context's sockets ---------------------------------------------------------------

// open(ctx, family, address, port, { reusePort, recvBufferSize, sendBufferSize }) -> handle
static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  ctx_t* c = ctx_args(env, info, 5, argv);
  if (!c) return NULL;
  uint32_t family;
  struct sockaddr_storage ss;
  socklen_t sl;
  if (read_address(env, argv + 1, &family, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "udp-batch: open(ctx, 4|6, address, port, options)");
    return NULL;
  }
  udp_options_t options = udp_options_of(env, argv[4]);
  int fd = udp_socket(family, &ss, sl, &options);
  if (fd < 0) return throw_errno(env, -fd, "bind");
  return handle_or_throw(env, c, fd, family, 0, "open");
}

// adopt(ctx, fd) -> handle: reads and sends through a duplicate of `fd` (the original stays
// with whoever made it, see fd_helpers.c's dup_nonblocking).
static napi_value js_adopt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  ctx_t* c = ctx_args(env, info, 2, argv);
  if (!c) return NULL;
  int32_t original;
  if (napi_get_value_int32(env, argv[1], &original) != napi_ok || original < 0) {
    napi_throw_type_error(env, NULL, "udp-batch: adopt(ctx, fd)");
    return NULL;
  }
  uint32_t family;
  const char* failed;
  int fd = dup_nonblocking(original, &family, &failed);
  if (fd < 0) return throw_errno(env, -fd, failed);
  return handle_or_throw(env, c, fd, family, 1, "adopt");
}

// localPort(ctx, handle) -> the port the socket is bound to
static napi_value js_local_port(napi_env env, napi_callback_info info) {
  uint32_t handle;
  ctx_t* c = ctx_and_handle(env, info, &handle);
  if (!c) return NULL;
  sock_t* s = sock_of(c, handle);
  if (!s) return throw_errno(env, EBADF, "localPort");
  return fd_or_throw(env, fd_port(s->fd), "getsockname");
}

// close(ctx, handle) -> whether the handle named an open socket
static napi_value js_close(napi_env env, napi_callback_info info) {
  uint32_t handle;
  ctx_t* c = ctx_and_handle(env, info, &handle);
  if (!c) return NULL;
  sock_t* s = sock_of(c, handle);
  napi_value out;
  napi_get_boolean(env, s != NULL, &out);
  if (s) {
    close_sock(c, s);
    update_ref(c);
  }
  return out;
}

// flush(ctx): send what JavaScript queued outside a batch callback (timers, TCP input).
static napi_value js_flush(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  ctx_t* c = ctx_args(env, info, 1, argv);
  if (!c) return NULL;
  flush(c);
  return NULL;
}

// ---- fds without a context (fd_helpers.c) ----------------------------------------------

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
  udp_options_t options = udp_options_of(env, argv[3]);
  return fd_or_throw(env, udp_socket(family, &ss, sl, &options), "bind");
}

// tcpListen(family, address, port, backlog, steerGroup) -> fd for Node's
// server.listen({ fd }): see fd_helpers.c's tcp_listener.
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
  const char* failed;
  int fd = tcp_listener(family, &ss, sl, backlog, group, &failed);
  return fd_or_throw(env, fd, failed);
}

// tcpBind(4|6, address, port) -> fd of a TCP socket bound with SO_REUSEPORT, for
// net.Socket({ fd }).connect(): see fd_helpers.c's tcp_bound.
static napi_value js_tcp_bind(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t family;
  struct sockaddr_storage ss;
  socklen_t sl;
  if (argc < 3 || read_address(env, argv, &family, &ss, &sl) != 0) {
    napi_throw_type_error(env, NULL, "udp-batch: tcpBind(4|6, address, port)");
    return NULL;
  }
  const char* failed;
  int fd = tcp_bound(family, &ss, sl, &failed);
  return fd_or_throw(env, fd, failed);
}

// dupFd(fd) -> a duplicate (close-on-exec), for handing a listening socket to a thread that
// will own and close its copy.
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "udp-batch: dupFd(fd)", &fd)) return NULL;
  return fd_or_throw(env, dup_cloexec(fd), "dup");
}

// fdPort(fd) -> the local port a socket is bound to.
static napi_value js_fd_port(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!fd_arg(env, info, "udp-batch: fdPort(fd)", &fd)) return NULL;
  return fd_or_throw(env, fd_port(fd), "getsockname");
}

// closeFd(fd): for the supervisor's own copies at shutdown.
static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (fd_arg(env, info, "udp-batch: closeFd(fd)", &fd)) close(fd);
  return NULL;
}

// socketPoolCounters() -> [taken from the pool, made by `open` itself, IPv4 and IPv6 sockets
// held now] (socket_pool.c)
static napi_value js_socket_pool_counters(napi_env env, napi_callback_info info) {
  double c[4];
  socket_pool_counters(c);
  napi_value out;
  napi_create_array_with_length(env, 4, &out);
  for (uint32_t i = 0; i < 4; i++) {
    napi_value v;
    napi_create_double(env, c[i], &v);
    napi_set_element(env, out, i, v);
  }
  return out;
}

// ---- registration ----------------------------------------------------------------------

#define FUNCTION(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}

NAPI_MODULE_INIT() {
  napi_value layout = layout_object(env);
  if (layout == NULL) return NULL;
  napi_property_descriptor props[] = {
      FUNCTION("create", js_create),
      FUNCTION("open", js_open),
      FUNCTION("localPort", js_local_port),
      FUNCTION("close", js_close),
      FUNCTION("flush", js_flush),
      FUNCTION("destroy", js_destroy),
      FUNCTION("tcpListen", js_tcp_listen),
      FUNCTION("tcpBind", js_tcp_bind),
      FUNCTION("bindUdp", js_bind_udp),
      FUNCTION("adopt", js_adopt),
      FUNCTION("dupFd", js_dup_fd),
      FUNCTION("closeFd", js_close_fd),
      FUNCTION("fdPort", js_fd_port),
      FUNCTION("splicePipe", js_splice_pipe),
      FUNCTION("splicePipeStart", js_splice_pipe_start),
      FUNCTION("splicePipeCounters", js_splice_pipe_counters),
      FUNCTION("splicePipeEnd", js_splice_pipe_end),
      FUNCTION("splicePipeClose", js_splice_pipe_close),
      FUNCTION("splicePipePoolCounters", js_splice_pipe_pool_counters),
      FUNCTION("socketPoolCounters", js_socket_pool_counters),
      // The shared memory layout (layout.h), which src/layout.ts checks at load.
      {"layout", NULL, NULL, NULL, NULL, layout, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
