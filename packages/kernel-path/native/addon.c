// The functions JavaScript calls (src/native.ts declares them, src/kernel-path.ts wraps them),
// and the module's registration. Each checks its arguments, calls the file that does the work
// (loader.c, bindings.c, buckets.c) and turns a reason into a thrown Error whose message is
// that one line. None of them is on the per-packet path: the kernel program is.
#include "kernel_path.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- arguments and errors -------------------------------------------------------------------

#define CHECK(call)                                                                              \
  do {                                                                                           \
    if ((call) != napi_ok) return NULL;                                                          \
  } while (0)

static napi_value throw_error(napi_env env, const char *fmt, ...) {
  char msg[WHY_LEN];
  va_list args;
  va_start(args, fmt);
  vsnprintf(msg, sizeof(msg), fmt, args);
  va_end(args);
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return -1;
  }
  return 0;
}

static struct handle *get_handle(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || !data) {
    napi_throw_type_error(env, NULL, "not a kernel path handle");
    return NULL;
  }
  struct handle *h = data;
  if (h->closed) {
    napi_throw_error(env, NULL, "the kernel path is closed");
    return NULL;
  }
  return h;
}

// The arguments of a call whose first one is a handle; NULL (exception pending) if unusable.
static struct handle *handle_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv) {
  if (get_args(env, info, n, argv)) return NULL;
  return get_handle(env, argv[0]);
}

// The storage of a Float64Array of at least `min` elements; NULL (exception pending) if not one.
static double *float64_arg(napi_env env, napi_value v, size_t min) {
  double *data = NULL;
  size_t len = 0, offset = 0;
  napi_typedarray_type type;
  napi_value ab;
  if (napi_get_typedarray_info(env, v, &type, &len, (void **)&data, &ab, &offset) != napi_ok ||
      type != napi_float64_array || len < min) {
    throw_error(env, "expected a Float64Array of %zu numbers", min);
    return NULL;
  }
  return data;
}

static uint32_t get_u32(napi_env env, napi_value v) {
  uint32_t x = 0;
  napi_get_value_uint32(env, v, &x);
  return x;
}

static double get_f64(napi_env env, napi_value v) {
  double x = 0;
  napi_get_value_double(env, v, &x);
  return x;
}

static int get_string(napi_env env, napi_value v, char *buf, size_t cap) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, buf, cap, &len) != napi_ok) return -1;
  return len + 1 < cap ? 0 : -1;
}

static napi_value make_number(napi_env env, double x) {
  napi_value v;
  napi_create_double(env, x, &v);
  return v;
}

// The arguments of a call on (handle, slot, ...); NULL (exception pending) if unusable.
static struct handle *slot_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv,
                                uint32_t *slot) {
  struct handle *h = handle_args(env, info, n, argv);
  if (!h) return NULL;
  *slot = get_u32(env, argv[1]);
  if (*slot >= h->capacity) {
    throw_error(env, "no such slot");
    return NULL;
  }
  return h;
}

// null, or the reason as a string: what the availability checks answer.
static napi_value null_or_reason(napi_env env, int failed, const char *why) {
  napi_value result;
  if (failed)
    napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &result);
  else
    napi_get_null(env, &result);
  return result;
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  handle_close(data);
  free(data);
}

static napi_value wrap_handle(napi_env env, struct handle *h) {
  napi_value ext;
  if (napi_create_external(env, h, handle_finalize, NULL, &ext) != napi_ok) {
    handle_close(h);
    free(h);
    return NULL;
  }
  return ext;
}

// A handle that could not be made: closed (detached), freed, and the reason thrown.
static napi_value handle_failed(napi_env env, struct handle *h, const char *why) {
  handle_close(h);
  free(h);
  return throw_error(env, "%s", why);
}

// ---- loading and attaching ------------------------------------------------------------------

// verify(objectPath, program) -> null | reason: loads and unloads (nothing attached).
static napi_value js_verify(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[4096], program[64], why[WHY_LEN];
  if (get_args(env, info, 2, argv)) return NULL;
  if (get_string(env, argv[0], path, sizeof(path)) || get_string(env, argv[1], program, sizeof(program)))
    return throw_error(env, "bad arguments");
  return null_or_reason(env, object_verify(path, program, why, sizeof(why)) < 0, why);
}

// tcxSupport(ifindex) -> null | reason: a read-only query of the TCX attach point.
static napi_value js_tcx_support(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char why[WHY_LEN];
  if (get_args(env, info, 1, argv)) return NULL;
  return null_or_reason(env, tcx_support(get_u32(env, argv[0]), why, sizeof(why)) < 0, why);
}

// tcxPrograms(ifindex) -> how many programs are attached at the interface's TCX ingress (-1:
// the query failed). Read-only.
static napi_value js_tcx_programs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  return make_number(env, tcx_programs(get_u32(env, argv[0])));
}

// open(objectPath, interfaces[], xdp, capacity, buckets) -> handle (throws the reason)
static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[4096], why[WHY_LEN];
  if (get_args(env, info, 5, argv)) return NULL;
  if (get_string(env, argv[0], path, sizeof(path))) return throw_error(env, "bad object path");
  struct interfaces ifs = {.count = 0};
  napi_get_array_length(env, argv[1], &ifs.count);
  if (ifs.count == 0 || ifs.count > MAX_INTERFACES)
    return throw_error(env, "between 1 and %d interfaces", MAX_INTERFACES);
  bool xdp = false;
  napi_get_value_bool(env, argv[2], &xdp);
  uint32_t capacity = get_u32(env, argv[3]), buckets = get_u32(env, argv[4]);
  for (uint32_t i = 0; i < ifs.count; i++) {
    napi_value el;
    CHECK(napi_get_element(env, argv[1], i, &el));
    if (get_string(env, el, ifs.names[i], sizeof(ifs.names[i])))
      return throw_error(env, "interface name too long");
    ifs.ifindexes[i] = if_nametoindex(ifs.names[i]);
    if (ifs.ifindexes[i] == 0) return throw_error(env, "interface %s not found", ifs.names[i]);
  }

  struct handle *h = handle_new();
  if (!h) return throw_error(env, "out of memory");
  if (handle_open(h, path, &ifs, xdp, capacity, buckets, why, sizeof(why)) < 0)
    return handle_failed(env, h, why);
  return wrap_handle(env, h);
}

// attach(c2p, p2c, slots, buckets, stats) -> handle over duplicates of those fds
static napi_value js_attach(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char why[WHY_LEN];
  if (get_args(env, info, 5, argv)) return NULL;
  int fds[5];
  for (int i = 0; i < 5; i++) fds[i] = (int)get_u32(env, argv[i]);
  struct handle *h = handle_new();
  if (!h) return throw_error(env, "out of memory");
  if (handle_attach(h, fds, why, sizeof(why)) < 0) return handle_failed(env, h, why);
  return wrap_handle(env, h);
}

static napi_value js_fds(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  struct handle *h = handle_args(env, info, 1, argv);
  if (!h) return NULL;
  int fds[] = {h->fd_c2p, h->fd_p2c, h->fd_slots, h->fd_buckets, h->fd_stats};
  CHECK(napi_create_array_with_length(env, 5, &arr));
  for (uint32_t i = 0; i < 5; i++) CHECK(napi_set_element(env, arr, i, make_number(env, fds[i])));
  return arr;
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  void *data = NULL;
  if (napi_get_value_external(env, argv[0], &data) == napi_ok && data) handle_close(data);
  return NULL;
}

// ---- bindings -------------------------------------------------------------------------------

static int parse_ip(napi_env env, napi_value v, uint8_t family, uint8_t out[16]) {
  char text[64];
  memset(out, 0, 16);
  if (get_string(env, v, text, sizeof(text))) return -1;
  return inet_pton(family == TP_FAMILY_V4 ? AF_INET : AF_INET6, text, out) == 1 ? 0 : -1;
}

static uint16_t get_port(napi_env env, napi_value v) { return htons((uint16_t)get_u32(env, v)); }

// bind(h, family, client, clientPort, listener, listenerPort, channel, relayed, relayedPort,
//      peer, peerPort, deadlineMs, bucket0, bucket1) -> slot, or -1 when the maps are full.
// The same client 5-tuple and channel again: its slot, with the new deadline and buckets.
static napi_value js_bind(napi_env env, napi_callback_info info) {
  napi_value argv[14];
  char why[WHY_LEN];
  struct handle *h = handle_args(env, info, 14, argv);
  if (!h) return NULL;
  uint8_t family = (uint8_t)get_u32(env, argv[1]);
  if (family != TP_FAMILY_V4 && family != TP_FAMILY_V6) return throw_error(env, "family must be 4 or 6");
  struct tp_c2p_key k = {0};
  struct tp_c2p_value v = {0};
  if (parse_ip(env, argv[2], family, k.client_ip) || parse_ip(env, argv[4], family, k.listener_ip) ||
      parse_ip(env, argv[7], family, v.relayed_ip) || parse_ip(env, argv[9], family, v.peer_ip))
    return throw_error(env, "an address is not an IPv%d address", family);
  k.client_port = get_port(env, argv[3]);
  k.listener_port = get_port(env, argv[5]);
  k.channel = get_port(env, argv[6]); // network order, like the ports
  k.family = family;
  v.relayed_port = get_port(env, argv[8]);
  v.peer_port = get_port(env, argv[10]);
  uint64_t deadline = ms_to_ns(get_f64(env, argv[11]));
  uint32_t b0 = get_u32(env, argv[12]), b1 = get_u32(env, argv[13]);
  if (b0 > h->bucket_capacity || b1 > h->bucket_capacity) return throw_error(env, "no such bucket");
  int64_t slot = binding_put(h, &k, &v, deadline, b0, b1, why, sizeof(why));
  if (why[0]) return throw_error(env, "%s", why);
  return make_number(env, (double)slot);
}

// setDeadline(h, slot, deadlineMs): one store; the kernel stops using the binding at it.
static napi_value js_set_deadline(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  binding_set_deadline(h, slot, ms_to_ns(get_f64(env, argv[2])));
  return NULL;
}

static napi_value js_set_buckets(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t slot;
  struct handle *h = slot_args(env, info, 4, argv, &slot);
  if (!h) return NULL;
  uint32_t b0 = get_u32(env, argv[2]), b1 = get_u32(env, argv[3]);
  if (b0 > h->bucket_capacity || b1 > h->bucket_capacity) return throw_error(env, "no such bucket");
  binding_set_buckets(h, slot, b0, b1);
  return NULL;
}

// counters(h, slot, Float64Array(TP_COUNTER_COUNT)): in layout.h's TP_BINDING_COUNTERS order.
static napi_value js_counters(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  double *out = float64_arg(env, argv[2], TP_COUNTER_COUNT);
  if (out) binding_counters(h, slot, out);
  return NULL;
}

// unbind(h, slot, Float64Array(TP_COUNTER_COUNT)) -> bool: routes deleted, final counters
// written, slot freed.
static napi_value js_unbind(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  double c[TP_COUNTER_COUNT] = {0};
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  bool was_live = binding_remove(h, slot, c);
  double *out = float64_arg(env, argv[2], TP_COUNTER_COUNT);
  if (!out) return NULL;
  memcpy(out, c, sizeof(c));
  napi_value result;
  napi_get_boolean(env, was_live, &result);
  return result;
}

// liveSlots(h) -> number[]: every binding in the maps, whichever thread made it.
static napi_value js_live_slots(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  struct handle *h = handle_args(env, info, 1, argv);
  if (!h) return NULL;
  uint32_t *slots = calloc(h->capacity ? h->capacity : 1, sizeof(uint32_t));
  if (!slots) return throw_error(env, "out of memory");
  uint32_t n = binding_live_slots(h, slots);
  napi_status status = napi_create_array_with_length(env, n, &arr);
  for (uint32_t i = 0; status == napi_ok && i < n; i++)
    status = napi_set_element(env, arr, i, make_number(env, slots[i]));
  free(slots);
  return status == napi_ok ? arr : NULL;
}

// nowMs() -> the kernel's monotonic clock (bpf_ktime_get_ns) in milliseconds.
static napi_value js_now_ms(napi_env env, napi_callback_info info) {
  return make_number(env, (double)monotonic_ns() / 1e6);
}

// ---- buckets and the global counters --------------------------------------------------------

// stats(h, Float64Array(TP_STAT_COUNT)): the global counters summed over CPUs.
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct handle *h = handle_args(env, info, 2, argv);
  if (!h) return NULL;
  double *out = float64_arg(env, argv[1], TP_STAT_COUNT);
  if (!out) return NULL;
  if (stats_read(h, out) < 0) return throw_error(env, "out of memory");
  return NULL;
}

// The bucket a call names (1..bucket capacity); 0 (exception pending) if none.
static uint32_t bucket_arg(napi_env env, const struct handle *h, napi_value v) {
  uint32_t ref = get_u32(env, v);
  if (ref == 0 || ref > h->bucket_capacity) {
    throw_error(env, "no such bucket");
    return 0;
  }
  return ref;
}

// setBucket(h, bucket, bytesPerSecond, burstBytes): configures (and fills) a token bucket.
static napi_value js_set_bucket(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char why[WHY_LEN];
  struct handle *h = handle_args(env, info, 4, argv);
  if (!h) return NULL;
  uint32_t ref = bucket_arg(env, h, argv[1]);
  if (!ref) return NULL;
  double rate = get_f64(env, argv[2]), burst = get_f64(env, argv[3]);
  if (!(rate >= 0) || !(burst >= 0) || burst > 1e12 || rate > 1e12)
    return throw_error(env, "bucket rate and burst must be between 0 and 1e12");
  if (bucket_configure(h, ref, rate, burst, why, sizeof(why)) < 0) return throw_error(env, "%s", why);
  return NULL;
}

// bucketDrops(h, bucket, Float64Array(TP_BUCKET_DROP_COUNT)): packets and bytes it refused.
static napi_value js_bucket_drops(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct handle *h = handle_args(env, info, 3, argv);
  if (!h) return NULL;
  uint32_t ref = bucket_arg(env, h, argv[1]);
  if (!ref) return NULL;
  double *out = float64_arg(env, argv[2], TP_BUCKET_DROP_COUNT);
  if (out) bucket_drops(h, ref, out);
  return NULL;
}

static napi_value js_ifindex(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[IF_NAMESIZE + 1];
  if (get_args(env, info, 1, argv)) return NULL;
  if (get_string(env, argv[0], name, sizeof(name))) return make_number(env, 0);
  return make_number(env, if_nametoindex(name));
}

NAPI_MODULE_INIT() {
  // libbpf's messages are only kept while this module loads an object (loader.c, errors.c).
  libbpf_set_print(libbpf_log_print);
#define EXPORT(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default, NULL}
  napi_property_descriptor props[] = {
      EXPORT("verify", js_verify),
      EXPORT("tcxSupport", js_tcx_support),
      EXPORT("tcxPrograms", js_tcx_programs),
      EXPORT("open", js_open),
      EXPORT("attach", js_attach),
      EXPORT("fds", js_fds),
      EXPORT("close", js_close),
      EXPORT("bind", js_bind),
      EXPORT("setDeadline", js_set_deadline),
      EXPORT("setBuckets", js_set_buckets),
      EXPORT("counters", js_counters),
      EXPORT("unbind", js_unbind),
      EXPORT("liveSlots", js_live_slots),
      EXPORT("stats", js_stats),
      EXPORT("setBucket", js_set_bucket),
      EXPORT("bucketDrops", js_bucket_drops),
      EXPORT("nowMs", js_now_ms),
      EXPORT("ifindex", js_ifindex),
  };
#undef EXPORT

  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok)
    return NULL;
  napi_value layout = layout_object(env);
  if (!layout || napi_set_named_property(env, exports, "layout", layout) != napi_ok) return NULL;
  return exports;
}
