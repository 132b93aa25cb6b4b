// A context's life: create (its arenas as ArrayBuffers JavaScript wraps in typed arrays, its
// epoll set under a libuv poll handle, the batch callback), the one call into JavaScript per
// batch, and destroy (at destroy() or when the JavaScript environment tears down).
#include "udp_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/** The batch callback, onBatch(n): once per batch, never per packet. */
void deliver(ctx_t* c, uint32_t n) {
  napi_env env = c->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, arg;
  napi_get_reference_value(env, c->callback, &cb);
  napi_get_global(env, &recv); /* make_callback needs an object receiver */
  napi_create_uint32(env, n, &arg);
  c->stats[ST_COUNTERS + C_BATCHES] += 1;
  // make_callback: process.nextTick and microtasks run after it, as after any I/O callback.
  napi_status st = napi_make_callback(env, c->async, recv, cb, 1, &arg, NULL);
  if (st == napi_pending_exception) {
    napi_value err;
    napi_get_and_clear_last_exception(env, &err);
    napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
  // Entries queued during the callback may point into the rx arena: send them before the
  // arena is reused by the next receive.
  if (!c->destroyed) flush(c);
}

// ---- destroy ---------------------------------------------------------------------------

static void free_ctx(ctx_t* c) {
  sockets_free(c);
  free(c->rmsgs);
  free(c->riov);
  free(c->raddrs);
  free(c);
}

static void on_poll_closed(uv_handle_t* handle) { free_ctx((ctx_t*)handle->data); }

static void destroy_ctx(ctx_t* c) {
  if (c->destroyed) return;
  c->destroyed = 1;
  for (uint32_t i = 0; i < c->cap; i++)
    if (c->socks[i].fd >= 0) close_sock(c, &c->socks[i]);
  for (int i = 0; i < 6; i++)
    if (c->refs[i]) napi_delete_reference(c->env, c->refs[i]);
  if (c->callback) napi_delete_reference(c->env, c->callback);
  if (c->async) napi_async_destroy(c->env, c->async);
  if (c->poll_active) {
    // libuv frees nothing until the handle is closed: free the context in its close callback.
    uv_poll_stop(&c->poll);
    close(c->epfd);
    uv_close((uv_handle_t*)&c->poll, on_poll_closed);
  } else {
    close(c->epfd);
    free_ctx(c);
  }
}

static void on_env_cleanup(void* arg) {
  // Environment teardown (worker exit, process exit): close every socket we own.
  destroy_ctx((ctx_t*)arg);
}

/** The context behind JavaScript's `ctx`; NULL (with an error thrown) if gone or not one. */
ctx_t* unwrap(napi_env env, napi_value v) {
  void* p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "udp-batch: not a context");
    return NULL;
  }
  ctx_t* c = p;
  if (c->destroyed) {
    napi_throw_error(env, "ERR_DESTROYED", "udp-batch: context destroyed");
    return NULL;
  }
  return c;
}

// destroy(ctx): close every socket and stop polling.
napi_value js_destroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void* p = NULL;
  if (napi_get_value_external(env, argv[0], &p) != napi_ok || p == NULL) return NULL;
  ctx_t* c = p;
  if (c->destroyed) return NULL;
  napi_remove_env_cleanup_hook(env, on_env_cleanup, c);
  destroy_ctx(c);
  return NULL;
}

// ---- create ----------------------------------------------------------------------------

static void read_options(napi_env env, ctx_t* c, napi_value options) {
  c->max_batch = get_u32(env, options, "maxBatch", 64);
  if (c->max_batch < 1) c->max_batch = 1;
  if (c->max_batch > 1024) c->max_batch = 1024;
  c->max_tx = get_u32(env, options, "maxTx", 256);
  if (c->max_tx < 1) c->max_tx = 1;
  c->tx_bytes = get_u32(env, options, "txBytes", 1 << 20);
  if (c->tx_bytes < MAX_DATAGRAM + 8) c->tx_bytes = MAX_DATAGRAM + 8;
  c->max_backlog = get_u32(env, options, "maxBacklog", 1 << 20);
  c->max_backlog_total = get_u32(env, options, "maxBacklogTotal", 64 << 20);
  c->bucket_tags = get_u32(env, options, "bucketTags", 0xffffffffu);
  napi_value bounds;
  if (napi_get_named_property(env, options, "bounds", &bounds) != napi_ok) return;
  bool is_array = false;
  napi_is_array(env, bounds, &is_array);
  if (!is_array) return;
  uint32_t len;
  napi_get_array_length(env, bounds, &len);
  if (len > MAX_BUCKETS - 1) len = MAX_BUCKETS - 1;
  for (uint32_t i = 0; i < len; i++) {
    napi_value v;
    napi_get_element(env, bounds, i, &v);
    napi_get_value_uint32(env, v, &c->bounds[i]);
  }
  c->nbounds = len;
}

/**
 * A zeroed ArrayBuffer of `bytes` named `name` in `result`, held by refs[slot]; its memory.
 * V8's allocator hands an ArrayBuffer zeroed memory (Node's: calloc), so it is not cleared again
 * here: for the 4 MB of receive slots that would make every page resident at start, where a
 * slot's pages otherwise become resident only as datagrams that long arrive (an idle relay
 * held ~5 MB per engine for nothing; bench/README.md, "Footprint").
 */
static void* share(napi_env env, ctx_t* c, napi_value result, int slot, const char* name,
                   size_t bytes) {
  napi_value ab;
  void* data;
  if (napi_create_arraybuffer(env, bytes, &data, &ab) != napi_ok) return NULL;
  napi_create_reference(env, ab, 1, &c->refs[slot]);
  napi_set_named_property(env, result, name, ab);
  return data;
}

// create(onBatch, { maxBatch, maxTx, txBytes, maxBacklog, maxBacklogTotal, bounds, bucketTags })
//   -> { ctx, rx, rxMeta, tx, txMeta, ctl, stats } (ArrayBuffers laid out as layout.h says)
napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (argc < 2 || t != napi_function) {
    napi_throw_type_error(env, NULL, "udp-batch: create(onBatch, options)");
    return NULL;
  }
  ctx_t* c = calloc(1, sizeof(ctx_t));
  if (c == NULL) return throw_errno(env, ENOMEM, "calloc");
  c->env = env;
  read_options(env, c, argv[1]);
  const char* failed;
  int err = sockets_init(c, &failed);
  if (err != 0) {
    free(c);
    return throw_errno(env, err, failed);
  }
  c->rmsgs = calloc(c->max_batch, sizeof(struct mmsghdr));
  c->riov = calloc(c->max_batch, sizeof(struct iovec));
  c->raddrs = calloc(c->max_batch, sizeof(struct sockaddr_storage));

  napi_value result, ext;
  napi_create_object(env, &result);
  c->rx = share(env, c, result, 0, "rx", (size_t)c->max_batch * SLOT_SIZE);
  c->rx_meta = share(env, c, result, 1, "rxMeta", (size_t)c->max_batch * RX_STRIDE * 4);
  c->tx = share(env, c, result, 2, "tx", c->tx_bytes);
  c->tx_meta = share(env, c, result, 3, "txMeta", (size_t)c->max_tx * TX_STRIDE * 4);
  c->ctl = share(env, c, result, 4, "ctl", CTL_SIZE * 4);
  c->stats = share(env, c, result, 5, "stats", ST_SIZE * 8);
  // Every slot's message points at its own part of the arena, once: recvmmsg fills them.
  for (uint32_t i = 0; i < c->max_batch; i++) {
    c->riov[i].iov_base = c->rx + (size_t)i * SLOT_SIZE + HEADROOM;
    c->riov[i].iov_len = MAX_DATAGRAM;
    c->rmsgs[i].msg_hdr.msg_name = &c->raddrs[i];
    c->rmsgs[i].msg_hdr.msg_iov = &c->riov[i];
    c->rmsgs[i].msg_hdr.msg_iovlen = 1;
  }

  napi_create_reference(env, argv[0], 1, &c->callback);
  napi_value resource_name;
  napi_create_string_utf8(env, "UDPBATCH", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &c->async);

  uv_loop_t* loop;
  napi_get_uv_event_loop(env, &loop);
  if (uv_poll_init(loop, &c->poll, c->epfd) != 0) {
    destroy_ctx(c);
    return throw_errno(env, EIO, "uv_poll_init");
  }
  c->poll.data = c;
  uv_poll_start(&c->poll, UV_READABLE, on_poll);
  c->poll_active = 1;
  c->refed = 1;
  update_ref(c);
  napi_add_env_cleanup_hook(env, on_env_cleanup, c);

  napi_create_external(env, c, NULL, NULL, &ext);
  napi_set_named_property(env, result, "ctx", ext);
  return result;
}
