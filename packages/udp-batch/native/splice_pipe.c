// A zero-copy byte pipe between two connected TCP sockets: splice(2) socket -> kernel pipe ->
// socket, one kernel pipe per direction, driven on the Node event loop (uv_poll_t on each
// socket). No JavaScript runs per chunk and no byte enters user space.
//
// What it is for: the RFC 6062 §5.4 pipe a TURN relay makes between a client's data connection
// and a peer connection after ConnectionBind. In JavaScript every 64 KiB chunk is copied into
// a Buffer and out again and costs a libuv callback and a write; a relay forwarding a few
// Gbit/s spends a core on that. Here the kernel moves page references (SPLICE_F_MOVE).
//
// Rules, per direction (src -> dst):
//   - bytes are read from src into the direction's kernel pipe only when that pipe is empty, so
//     an EAGAIN from the read means "src has nothing" and never "the pipe is full";
//   - what is in the pipe is written to dst; EAGAIN parks the direction until dst is writable
//     (EPOLLOUT), src is not read meanwhile: backpressure holds no more than the kernel pipe;
//   - a read of 0 (the peer's FIN) is forwarded, after the pipe drained, as shutdown(SHUT_WR)
//     on dst (RFC 6062 §5.5: each side's close is passed on);
//   - an error on either socket (a reset, a broken pipe) ends the whole pipe.
// The pipe ends when both directions forwarded their FIN, on an error, or when JavaScript
// closes it. Then its fds (the two socket duplicates and the pipe ends it holds) are closed and,
// unless JavaScript closed it, `onEnd(errno)` is called (0: both directions ended cleanly).
//
// Kernel pipes are borrowed, not owned: a direction takes one from its thread's pool when it
// reads from src and gives it back as soon as it is empty again, so an idle connection holds no
// kernel pipe, only its two socket duplicates. Why: the kernel charges every pipe's capacity
// (64 KiB, 16 pages) to its user at creation, and past fs.pipe-user-pages-soft (16,384 pages,
// 1,024 pipes) gives an unprivileged user's new pipes 2 pages: a relay running as its own user
// (the systemd unit's DynamicUser) with more than 512 spliced connections, each owning two
// pipes, made every further one splice through 8 KiB (half the throughput, 2.5x the CPU per
// byte measured here: udp-batch README, "Spliced TCP pipes"). Borrowed, the pipes alive are
// those with bytes in flight plus at most POOL_IDLE_MAX idle ones per thread. A pipe is only
// ever given back empty (in_pipe 0); one that still holds bytes when its connection ends is
// closed.
//
// The sockets are duplicates (F_DUPFD_CLOEXEC) of fds the caller keeps: the caller must not read
// or write its own fds while the pipe runs, and closes them after `onEnd`.
#include "udp_batch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/** Bytes asked of one splice call; the kernel pipe's capacity bounds what it moves. */
#define SPLICE_REQUEST (1 << 20)
/** Splice rounds per direction and wake-up, so one busy pipe does not starve the loop. */
#define SPLICE_ROUNDS 16
/** Empty kernel pipes a thread keeps for the next borrower (SPLICE_POOL_IDLE_FDS in layout.h). */
#define POOL_IDLE_MAX (SPLICE_POOL_IDLE_FDS / 2)

// The pool: this thread's empty kernel pipes (one JavaScript environment per thread, and a
// SplicePipe runs on the loop of the thread that made it). Closed when the environment goes.
typedef struct {
  int r, w;
} kernel_pipe_t;
static __thread kernel_pipe_t pool_idle[POOL_IDLE_MAX];
static __thread int pool_idle_len;
static __thread int pool_hooked;
/** Kernel pipes made, and those lent out now (this thread's). */
static __thread double pool_made, pool_lent;

typedef struct direction direction_t;
static void give_back(direction_t* d);

struct direction {
  int pipe_r, pipe_w;
  size_t in_pipe; /* bytes in the kernel pipe */
  int eof;        /* nothing more is read from src: its FIN, or a graceful end */
  int done;       /* dst was shut down for writing */
  double bytes;   /* bytes written to dst */
  double chunks;  /* splice calls that wrote to dst */
};

typedef struct {
  napi_env env;
  napi_ref on_end;
  napi_async_context async;
  int fd[2];          /* A and B, duplicates; -1 once closed */
  uv_poll_t poll[2];  /* poll[i] watches fd[i] */
  int events[2];      /* what poll[i] waits for now */
  direction_t dir[2]; /* dir[0]: A -> B, dir[1]: B -> A */
  int ended;          /* fds closed, polls closing */
  int refs;           /* the JavaScript external, and the open poll handles */
} splice_pipe_t;

static void release(splice_pipe_t* p) {
  if (--p->refs == 0) free(p);
}

static void on_poll_closed(uv_handle_t* h) { release(h->data); }

static void close_fd(int* fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static void on_env_cleanup(void* arg);

/** Close everything now; the polls release their reference when libuv has closed them. */
static void shut(splice_pipe_t* p) {
  p->ended = 1;
  for (int i = 0; i < 2; i++) {
    uv_close((uv_handle_t*)&p->poll[i], on_poll_closed); /* stops the watcher at once */
    close_fd(&p->fd[i]);
    give_back(&p->dir[i]); /* closed instead when bytes are left in it */
  }
  napi_remove_env_cleanup_hook(p->env, on_env_cleanup, p);
  if (p->on_end) napi_delete_reference(p->env, p->on_end);
  p->on_end = NULL;
  if (p->async) napi_async_destroy(p->env, p->async);
  p->async = NULL;
}

/** The pipe ended by itself: close it, then tell JavaScript (on the loop, not inside a call). */
static void finish(splice_pipe_t* p, int err) {
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) {
    shut(p);
    return;
  }
  napi_value cb = NULL, recv, arg;
  if (p->on_end) napi_get_reference_value(env, p->on_end, &cb);
  napi_async_context async = p->async;
  p->async = NULL;
  p->refs++; /* shut() may let the polls go; the callback below still needs `async` alive */
  shut(p);
  if (cb != NULL) {
    napi_get_global(env, &recv);
    napi_create_int32(env, err, &arg);
    napi_status st = napi_make_callback(env, async, recv, cb, 1, &arg, NULL);
    if (st == napi_pending_exception) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      napi_fatal_exception(env, e);
    }
  }
  if (async) napi_async_destroy(env, async);
  napi_close_handle_scope(env, scope);
  release(p);
}

/** A kernel pipe for `d` (an idle one, else a new one): 0, or -errno (EMFILE, ENFILE, ...). */
static int borrow(direction_t* d) {
  if (d->pipe_w >= 0) return 0;
  if (pool_idle_len > 0) {
    kernel_pipe_t k = pool_idle[--pool_idle_len];
    d->pipe_r = k.r;
    d->pipe_w = k.w;
  } else {
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return -errno;
    d->pipe_r = fds[0];
    d->pipe_w = fds[1];
    pool_made += 1;
  }
  pool_lent += 1;
  return 0;
}

/** `d` is done with its kernel pipe: an empty one goes back to the pool (or is closed). */
static void give_back(direction_t* d) {
  if (d->pipe_w < 0) return;
  pool_lent -= 1;
  if (d->in_pipe == 0 && pool_idle_len < POOL_IDLE_MAX) {
    pool_idle[pool_idle_len++] = (kernel_pipe_t){d->pipe_r, d->pipe_w};
    d->pipe_r = d->pipe_w = -1;
    return;
  }
  close_fd(&d->pipe_r);
  close_fd(&d->pipe_w);
  d->in_pipe = 0;
}

/** The environment goes (a worker exits, or the process): its idle pipes with it. */
static void on_pool_cleanup(void* arg) {
  (void)arg;
  while (pool_idle_len > 0) {
    kernel_pipe_t k = pool_idle[--pool_idle_len];
    close(k.r);
    close(k.w);
  }
  pool_hooked = 0;
}

/**
 * Move what can be moved from `src` to `dst` for direction `d`: 0, or -errno when a socket
 * failed (or no kernel pipe could be made). Stops when src has nothing (EAGAIN with an empty
 * pipe), dst takes nothing (EAGAIN), the FIN was forwarded, or after SPLICE_ROUNDS (the
 * level-triggered poll comes back). The kernel pipe is borrowed just before a read and given
 * back as soon as it is empty.
 */
static int pump(direction_t* d, int src, int dst) {
  for (int round = 0; round < SPLICE_ROUNDS; round++) {
    if (d->in_pipe > 0) {
      ssize_t n =
          splice(d->pipe_r, NULL, dst, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : -errno;
      }
      d->in_pipe -= (size_t)n;
      d->bytes += (double)n;
      d->chunks += 1;
      if (d->in_pipe > 0) continue;
      give_back(d);
    }
    if (d->eof) {
      if (!d->done) {
        d->done = 1;
        // ENOTCONN: the other side is already gone; the pipe ends when the other direction
        // reports it (or has already ended).
        if (shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN) return -errno;
      }
      return 0;
    }
    int err = borrow(d);
    if (err != 0) return err;
    ssize_t n = splice(src, NULL, d->pipe_w, NULL, SPLICE_REQUEST,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      give_back(d); /* still empty: nothing was read */
      if (n < 0 && e == EINTR) continue;
      if (n < 0) return e == EAGAIN ? 0 : -e;
      d->eof = 1; /* the FIN: forwarded once the pipe is empty (above) */
      continue;
    }
    d->in_pipe += (size_t)n;
  }
  return 0;
}

static void on_pipe_poll(uv_poll_t* handle, int status, int events);

/** Watch each socket for what its directions wait for; false when the pipe is over. */
static int rearm(splice_pipe_t* p) {
  if (p->dir[0].done && p->dir[1].done) return 0;
  for (int i = 0; i < 2; i++) {
    const direction_t* out = &p->dir[i];     /* fd[i] is its source */
    const direction_t* in = &p->dir[1 - i];  /* fd[i] is its destination */
    int want = 0;
    if (!out->eof && out->in_pipe == 0) want |= UV_READABLE;
    // Bytes to write, or a FIN still to pass on: a FIN read in pump's last round is
    // forwarded on the next wake-up, which only the destination's EPOLLOUT brings.
    if (in->in_pipe > 0 || (in->eof && !in->done)) want |= UV_WRITABLE;
    if (want == p->events[i]) continue;
    p->events[i] = want;
    if (want == 0) uv_poll_stop(&p->poll[i]);
    else uv_poll_start(&p->poll[i], want, on_pipe_poll);
  }
  return 1;
}

/** Pump both directions; end the pipe on an error or when both are done. */
static void run(splice_pipe_t* p) {
  for (int i = 0; i < 2; i++) {
    int r = pump(&p->dir[i], p->fd[i], p->fd[1 - i]);
    if (r < 0) {
      finish(p, -r);
      return;
    }
  }
  if (!rearm(p)) finish(p, 0);
}

static void on_pipe_poll(uv_poll_t* handle, int status, int events) {
  splice_pipe_t* p = handle->data;
  if (p->ended) return;
  if (status < 0) {
    // POLLERR: libuv stopped the watcher; the socket's pending error says what happened.
    int fd = p->fd[handle == &p->poll[0] ? 0 : 1];
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err == 0) err = EIO;
    finish(p, err);
    return;
  }
  run(p);
}

/** The JavaScript environment goes away (a worker exits) with the pipe still running. */
static void on_env_cleanup(void* arg) {
  splice_pipe_t* p = arg;
  if (!p->ended) shut(p);
}

static void on_external_finalize(napi_env env, void* data, void* hint) { release(data); }

static splice_pipe_t* pipe_arg(napi_env env, napi_value v) {
  void* data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  return data;
}

// splicePipe(fdA, fdB, onEnd) -> pipe: relay A <-> B on duplicates of the two sockets, once
// started (splicePipeStart).
napi_value js_splice_pipe(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t a, b;
  napi_valuetype cb_type = napi_undefined;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &a) != napi_ok ||
      napi_get_value_int32(env, argv[1], &b) != napi_ok || a < 0 || b < 0 || a == b ||
      napi_typeof(env, argv[2], &cb_type) != napi_ok || cb_type != napi_function) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipe(fdA, fdB, onEnd)");
    return NULL;
  }
  splice_pipe_t* p = calloc(1, sizeof *p);
  if (p == NULL) return throw_errno(env, ENOMEM, "splicePipe");
  p->env = env;
  p->fd[0] = p->fd[1] = -1;
  for (int i = 0; i < 2; i++) p->dir[i].pipe_r = p->dir[i].pipe_w = -1;
  const char* failed = "dup";
  int err = 0;
  for (int i = 0; i < 2 && err == 0; i++) {
    p->fd[i] = fcntl(i == 0 ? a : b, F_DUPFD_CLOEXEC, 0);
    if (p->fd[i] < 0) err = errno;
  }
  uv_loop_t* loop = NULL;
  if (err == 0 && napi_get_uv_event_loop(env, &loop) != napi_ok) err = EIO;
  int polls = 0;
  for (int i = 0; i < 2 && err == 0; i++) {
    if (uv_poll_init(loop, &p->poll[i], p->fd[i]) != 0) {
      err = EIO;
      failed = "uv_poll_init";
    } else {
      p->poll[i].data = p;
      polls++;
    }
  }
  if (err != 0) {
    for (int i = 0; i < 2; i++) close_fd(&p->fd[i]);
    if (polls == 0) {
      free(p);
    } else {
      p->refs = polls;
      for (int i = 0; i < polls; i++) uv_close((uv_handle_t*)&p->poll[i], on_poll_closed);
    }
    return throw_errno(env, err, failed);
  }
  napi_create_reference(env, argv[2], 1, &p->on_end);
  napi_value resource_name;
  napi_create_string_utf8(env, "SPLICEPIPE", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &p->async);
  p->refs = 3; /* two polls, one external */
  // The pool's hook first: hooks run last-added first, so every pipe of this environment has
  // given its kernel pipes back before the pool closes them.
  if (!pool_hooked) {
    napi_add_env_cleanup_hook(env, on_pool_cleanup, NULL);
    pool_hooked = 1;
  }
  napi_add_env_cleanup_hook(env, on_env_cleanup, p);
  napi_value out;
  napi_create_external(env, p, on_external_finalize, NULL, &out);
  return out;
}

// splicePipeStart(pipe): start moving bytes. Separate from splicePipe so that the caller can
// first write out what it already read from either socket (bytes read before the pipe go
// before the pipe's). Level-triggered polls: bytes already waiting in a socket are seen on
// the next loop turn; nothing is moved inside this call, so onEnd never comes from it.
napi_value js_splice_pipe_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  splice_pipe_t* p = argc < 1 ? NULL : pipe_arg(env, argv[0]);
  if (p == NULL) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipeStart(pipe)");
    return NULL;
  }
  if (!p->ended) rearm(p);
  return NULL;
}

// splicePipeCounters(pipe, Float64Array(SPLICE_COUNTERS)): bytes and chunks, each way.
napi_value js_splice_pipe_counters(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  splice_pipe_t* p = argc < 2 ? NULL : pipe_arg(env, argv[0]);
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (p == NULL ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || length < SPLICE_COUNTERS) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipeCounters(pipe, Float64Array)");
    return NULL;
  }
  double* out = data;
  out[SPLICE_A_TO_B_BYTES] = p->dir[0].bytes;
  out[SPLICE_B_TO_A_BYTES] = p->dir[1].bytes;
  out[SPLICE_A_TO_B_CHUNKS] = p->dir[0].chunks;
  out[SPLICE_B_TO_A_CHUNKS] = p->dir[1].chunks;
  return NULL;
}

// splicePipeEnd(pipe): stop reading both sockets, write out what the kernel pipes hold, then
// shut both down for writing; onEnd follows as for a pipe that ended by itself.
napi_value js_splice_pipe_end(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  splice_pipe_t* p = argc < 1 ? NULL : pipe_arg(env, argv[0]);
  if (p == NULL) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipeEnd(pipe)");
    return NULL;
  }
  if (p->ended) return NULL;
  p->dir[0].eof = p->dir[1].eof = 1;
  // onEnd must not run inside this call: the pumping and the end wait for the loop.
  for (int i = 0; i < 2; i++) {
    int want = p->dir[1 - i].in_pipe > 0 || !p->dir[1 - i].done ? UV_WRITABLE : 0;
    if (want == p->events[i]) continue;
    p->events[i] = want;
    if (want == 0) uv_poll_stop(&p->poll[i]);
    else uv_poll_start(&p->poll[i], want, on_pipe_poll);
  }
  return NULL;
}

// splicePipeClose(pipe) -> whether it was still running: closes its fds now, no onEnd.
napi_value js_splice_pipe_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  splice_pipe_t* p = argc < 1 ? NULL : pipe_arg(env, argv[0]);
  if (p == NULL) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipeClose(pipe)");
    return NULL;
  }
  int was_running = !p->ended;
  if (was_running) shut(p);
  napi_value out;
  napi_get_boolean(env, was_running, &out);
  return out;
}

// splicePipePoolCounters(Float64Array(3)): this thread's kernel pipes made, lent out now, idle.
napi_value js_splice_pipe_pool_counters(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_typedarray_type type;
  size_t length;
  void* data;
  if (argc < 1 ||
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || length < SPLICE_POOL_COUNTERS) {
    napi_throw_type_error(env, NULL, "udp-batch: splicePipePoolCounters(Float64Array)");
    return NULL;
  }
  double* out = data;
  out[SPLICE_POOL_MADE] = pool_made;
  out[SPLICE_POOL_LENT] = pool_lent;
  out[SPLICE_POOL_IDLE] = pool_idle_len;
  return NULL;
}
