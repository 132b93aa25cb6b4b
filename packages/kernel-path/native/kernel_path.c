// kernel-path: the loader of Turnpike's kernel data path (bpf/kernel_path.bpf.c), as a Node-API
// addon over libbpf.
//
//   open     loads the BPF object (sizing its maps), attaches the program to each named
//            interface through a BPF link (TCX ingress, or XDP in native mode), mmaps the slot
//            array. Links are file descriptors of this process only (nothing is pinned), so the
//            program is detached when the process ends, however it ends (kill -9 included).
//   attach   a handle over the maps of an open one (their fds, duplicated), for worker threads
//            of the same process: nothing is loaded or attached again.
//   bind     puts a channel binding in (both routes and a slot): two bpf() calls. unbind takes
//            it out and returns its final counters. Deadlines and buckets of a live binding are
//            plain stores into the mmapped slot; counters are plain loads. No per-packet work
//            here: the kernel program counts.
//
// Slots are shared by every handle over the same maps (workers' bindings go into the same
// maps): a process-wide registry, keyed by the slot map's id, hands them out under a mutex and
// remembers each slot's route keys for unbind. A freed slot goes to the back of the free queue,
// so a datagram the kernel was relaying at the instant of the unbind cannot land on the next
// binding's counters.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../bpf/kernel_path.h"

// The TCX attach point (Linux 6.6). Debian 12's uapi headers (6.1) predate it; the value is the
// kernel's own (enum bpf_attach_type in its BTF: BPF_TCX_INGRESS = 46).
#define TP_BPF_TCX_INGRESS 46

#define MAX_INTERFACES 16
#define LOG_CAPACITY (64 * 1024)

// ---- libbpf's messages, kept while loading so a failure can say why ----------------------

static __thread char *log_buf;
static __thread size_t log_len;

static int on_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (!log_buf || level == LIBBPF_DEBUG) return 0;
  // Keep the last LOG_CAPACITY - 1 bytes: the verifier's reason is at the end of its log,
  // which libbpf hands over in one piece however long it is.
  char *msg = NULL;
  int n = vasprintf(&msg, fmt, args);
  if (n <= 0 || !msg) return 0;
  size_t len = (size_t)n, cap = LOG_CAPACITY - 1;
  const char *src = msg;
  if (len > cap) src += len - cap, len = cap;
  if (log_len + len > cap) {
    size_t drop = log_len + len - cap;
    memmove(log_buf, log_buf + drop, log_len - drop);
    log_len -= drop;
  }
  memcpy(log_buf + log_len, src, len);
  log_len += len;
  log_buf[log_len] = 0;
  free(msg);
  return 0;
}

// The verifier's reason: the last line of the program's load log that is not its statistics.
static void verifier_reason(const char *log, char *out, size_t cap) {
  const char *end = NULL;
  for (const char *p = strstr(log, "-- END PROG LOAD LOG --"); p; p = strstr(p + 1, "-- END PROG LOAD LOG --"))
    end = p;
  out[0] = 0;
  while (end && end > log) {
    const char *line_end = end - 1; // the newline before `end`
    const char *start = line_end;
    while (start > log && start[-1] != '\n') start--;
    size_t len = (size_t)(line_end - start);
    if (len > 0 && strncmp(start, "processed ", 10) != 0 &&
        strncmp(start, "verification time", 17) != 0 && strncmp(start, "stack depth", 11) != 0 &&
        strncmp(start, "max_states_per_insn", 19) != 0) {
      snprintf(out, cap, "%.*s", (int)(len < 300 ? len : 300), start);
      return;
    }
    end = start;
  }
}

// The first line libbpf printed that says what failed (for failures before the verifier).
static void libbpf_reason(const char *log, char *out, size_t cap) {
  out[0] = 0;
  const char *line = log;
  while (line && *line) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    if (strstr(line, "failed") || strstr(line, "error") || strstr(line, "Error")) {
      if (strncmp(line, "libbpf: ", 8) == 0) line += 8, len -= 8;
      snprintf(out, cap, "%.*s", (int)(len < 300 ? len : 300), line);
      return;
    }
    line = nl ? nl + 1 : NULL;
  }
}

// ---- the registry of slots, shared by every handle of the process ------------------------

struct route_keys {
  struct tp_c2p_key c2p;
  struct tp_p2c_key p2c;
};

struct shared_slots {
  struct shared_slots *next;
  uint32_t map_id;
  int refs;
  uint32_t capacity;
  uint32_t *free_queue; // ring of free slot indexes
  uint32_t free_head, free_count;
  uint8_t *live;
  struct route_keys *keys;
  uint32_t live_count;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_slots *registry;

static struct shared_slots *registry_join(uint32_t map_id, uint32_t capacity) {
  pthread_mutex_lock(&registry_lock);
  struct shared_slots *s = registry;
  while (s && s->map_id != map_id) s = s->next;
  if (s) {
    s->refs++;
  } else {
    s = calloc(1, sizeof(*s));
    if (s) {
      s->free_queue = calloc(capacity, sizeof(uint32_t));
      s->live = calloc(capacity, 1);
      s->keys = calloc(capacity, sizeof(struct route_keys));
      if (!s->free_queue || !s->live || !s->keys) {
        free(s->free_queue), free(s->live), free(s->keys), free(s);
        s = NULL;
      } else {
        s->map_id = map_id;
        s->refs = 1;
        s->capacity = capacity;
        for (uint32_t i = 0; i < capacity; i++) s->free_queue[i] = i;
        s->free_count = capacity;
        s->next = registry;
        registry = s;
      }
    }
  }
  pthread_mutex_unlock(&registry_lock);
  return s;
}

static void registry_leave(struct shared_slots *s) {
  pthread_mutex_lock(&registry_lock);
  if (--s->refs == 0) {
    struct shared_slots **p = &registry;
    while (*p != s) p = &(*p)->next;
    *p = s->next;
    free(s->free_queue), free(s->live), free(s->keys), free(s);
  }
  pthread_mutex_unlock(&registry_lock);
}

// ---- handles ------------------------------------------------------------------------------

struct handle {
  struct bpf_object *obj; // the owner's (it loaded the object); NULL for an attached handle
  int links[MAX_INTERFACES];
  int n_links;
  int fd_c2p, fd_p2c, fd_slots, fd_buckets, fd_stats;
  struct tp_slot *slots;
  size_t slots_len;
  uint32_t capacity, bucket_capacity;
  int ncpus;
  struct shared_slots *shared;
  int closed;
};

static void handle_close(struct handle *h) {
  if (h->closed) return;
  h->closed = 1;
  for (int i = 0; i < h->n_links; i++) close(h->links[i]);
  h->n_links = 0;
  if (h->slots) munmap(h->slots, h->slots_len);
  h->slots = NULL;
  if (h->shared) registry_leave(h->shared);
  h->shared = NULL;
  if (h->obj) {
    bpf_object__close(h->obj); // closes the maps and the program
    h->obj = NULL;
  } else {
    int fds[] = {h->fd_c2p, h->fd_p2c, h->fd_slots, h->fd_buckets, h->fd_stats};
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
      if (fds[i] >= 0) close(fds[i]);
  }
}

static void handle_finalize(napi_env env, void *data, void *hint) {
  handle_close(data);
  free(data);
}

// The slot array, mapped into this process, and this handle's share of the registry.
static int handle_map_slots(struct handle *h, char *why, size_t cap) {
  struct bpf_map_info info;
  uint32_t len = sizeof(info);
  memset(&info, 0, len);
  if (bpf_obj_get_info_by_fd(h->fd_slots, &info, &len) < 0) {
    snprintf(why, cap, "cannot read the slot map's info: %s", strerror(errno));
    return -1;
  }
  h->capacity = info.max_entries;
  long page = sysconf(_SC_PAGESIZE);
  h->slots_len = ((size_t)info.value_size * info.max_entries + page - 1) / page * page;
  void *p = mmap(NULL, h->slots_len, PROT_READ | PROT_WRITE, MAP_SHARED, h->fd_slots, 0);
  if (p == MAP_FAILED) {
    snprintf(why, cap, "cannot mmap the slot map: %s", strerror(errno));
    return -1;
  }
  h->slots = p;
  memset(&info, 0, sizeof(info));
  len = sizeof(info);
  uint32_t slots_id = 0;
  if (bpf_obj_get_info_by_fd(h->fd_slots, &info, &len) == 0) slots_id = info.id;
  memset(&info, 0, sizeof(info));
  len = sizeof(info);
  if (bpf_obj_get_info_by_fd(h->fd_buckets, &info, &len) == 0) h->bucket_capacity = info.max_entries;
  h->ncpus = libbpf_num_possible_cpus();
  h->shared = registry_join(slots_id, h->capacity);
  if (!h->shared || h->ncpus <= 0) {
    snprintf(why, cap, "out of memory");
    return -1;
  }
  return 0;
}

// ---- N-API helpers ------------------------------------------------------------------------

#define CHECK(call)                                                                              \
  do {                                                                                           \
    if ((call) != napi_ok) return NULL;                                                          \
  } while (0)

static napi_value throw_error(napi_env env, const char *fmt, ...) {
  char msg[512];
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

static napi_value wrap_handle(napi_env env, struct handle *h) {
  napi_value ext;
  if (napi_create_external(env, h, handle_finalize, NULL, &ext) != napi_ok) {
    handle_close(h);
    free(h);
    return NULL;
  }
  return ext;
}

static struct handle *new_handle(void) {
  struct handle *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->fd_c2p = h->fd_p2c = h->fd_slots = h->fd_buckets = h->fd_stats = -1;
  return h;
}

// ---- loading --------------------------------------------------------------------------------

// Opens and loads the object; on failure writes the reason. Maps sized to `capacity` bindings.
static struct bpf_object *load_object(const char *path, const char *program, uint32_t capacity,
                                      uint32_t buckets, char *why, size_t cap) {
  log_buf = calloc(1, LOG_CAPACITY);
  log_len = 0;
  struct bpf_object *obj = bpf_object__open_file(path, NULL);
  int err = libbpf_get_error(obj);
  if (err) {
    snprintf(why, cap, "cannot open the BPF object %s: %s", path, strerror(-err));
    obj = NULL;
    goto out;
  }
  struct bpf_program *prog;
  int found = 0;
  bpf_object__for_each_program(prog, obj) {
    int wanted = strcmp(bpf_program__name(prog), program) == 0;
    found |= wanted;
    bpf_program__set_autoload(prog, wanted);
  }
  if (!found) {
    snprintf(why, cap, "the BPF object %s has no program %s", path, program);
    goto fail;
  }
  const char *sized[] = {"tp_c2p", "tp_p2c", "tp_slots"};
  for (size_t i = 0; i < 3; i++) {
    struct bpf_map *m = bpf_object__find_map_by_name(obj, sized[i]);
    if (!m || bpf_map__set_max_entries(m, capacity) < 0) {
      snprintf(why, cap, "the BPF object %s has no map %s", path, sized[i]);
      goto fail;
    }
  }
  struct bpf_map *b = bpf_object__find_map_by_name(obj, "tp_buckets");
  if (!b || bpf_map__set_max_entries(b, buckets) < 0) {
    snprintf(why, cap, "the BPF object %s has no map tp_buckets", path);
    goto fail;
  }
  err = bpf_object__load(obj);
  if (err && getenv("TURNPIKE_KERNEL_PATH_LOG")) fputs(log_buf, stderr);
  if (err) {
    char line[400];
    verifier_reason(log_buf, line, sizeof(line));
    if (line[0]) {
      snprintf(why, cap, "the kernel's verifier rejected the program: %s", line);
    } else {
      libbpf_reason(log_buf, line, sizeof(line));
      snprintf(why, cap, "loading the BPF object failed: %s", line[0] ? line : strerror(-err));
    }
    goto fail;
  }
  goto out;
fail:
  bpf_object__close(obj);
  obj = NULL;
out:
  free(log_buf);
  log_buf = NULL;
  return obj;
}

// verify(objectPath, program) -> null | reason: loads and unloads (nothing attached).
static napi_value js_verify(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[4096], program[64], why[512];
  if (get_args(env, info, 2, argv)) return NULL;
  if (get_string(env, argv[0], path, sizeof(path)) || get_string(env, argv[1], program, sizeof(program)))
    return throw_error(env, "bad arguments");
  struct bpf_object *obj = load_object(path, program, 64, 64, why, sizeof(why));
  napi_value result;
  if (obj) {
    bpf_object__close(obj);
    napi_get_null(env, &result);
  } else {
    napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &result);
  }
  return result;
}

// tcxSupport(ifindex) -> null | reason: a read-only query of the TCX attach point.
static napi_value js_tcx_support(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  uint32_t ifindex = get_u32(env, argv[0]);
  uint32_t ids[1], count = 1, flags = 0;
  int err = bpf_prog_query((int)ifindex, TP_BPF_TCX_INGRESS, 0, &flags, ids, &count);
  napi_value result;
  if (err == 0 || errno == ENOSPC) {
    napi_get_null(env, &result);
  } else {
    char why[200];
    if (errno == EINVAL)
      snprintf(why, sizeof(why), "the kernel has no TCX attach point (BPF links for TC need Linux 6.6)");
    else
      snprintf(why, sizeof(why), "querying the TCX attach point failed: %s", strerror(errno));
    napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &result);
  }
  return result;
}

// tcxPrograms(ifindex) -> how many programs are attached at the interface's TCX ingress (-1:
// the query failed). Read-only.
static napi_value js_tcx_programs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv)) return NULL;
  uint32_t ids[64], count = 64, flags = 0;
  int err = bpf_prog_query((int)get_u32(env, argv[0]), TP_BPF_TCX_INGRESS, 0, &flags, ids, &count);
  return make_number(env, err == 0 ? (double)count : -1);
}

// open(objectPath, interfaces[], xdp, capacity, buckets) -> handle (throws the reason)
static napi_value js_open(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char path[4096], why[512];
  if (get_args(env, info, 5, argv)) return NULL;
  if (get_string(env, argv[0], path, sizeof(path))) return throw_error(env, "bad object path");
  uint32_t n_if = 0;
  napi_get_array_length(env, argv[1], &n_if);
  if (n_if == 0 || n_if > MAX_INTERFACES)
    return throw_error(env, "between 1 and %d interfaces", MAX_INTERFACES);
  bool xdp = false;
  napi_get_value_bool(env, argv[2], &xdp);
  uint32_t capacity = get_u32(env, argv[3]), buckets = get_u32(env, argv[4]);

  char names[MAX_INTERFACES][IF_NAMESIZE + 1];
  unsigned ifindexes[MAX_INTERFACES];
  for (uint32_t i = 0; i < n_if; i++) {
    napi_value el;
    CHECK(napi_get_element(env, argv[1], i, &el));
    if (get_string(env, el, names[i], sizeof(names[i])))
      return throw_error(env, "interface name too long");
    ifindexes[i] = if_nametoindex(names[i]);
    if (ifindexes[i] == 0) return throw_error(env, "interface %s not found", names[i]);
  }

  struct handle *h = new_handle();
  if (!h) return throw_error(env, "out of memory");
  h->obj = load_object(path, xdp ? "turnpike_xdp" : "turnpike_tc", capacity, buckets, why, sizeof(why));
  if (!h->obj) {
    free(h);
    return throw_error(env, "%s", why);
  }
  int prog_fd = bpf_program__fd(
      bpf_object__find_program_by_name(h->obj, xdp ? "turnpike_xdp" : "turnpike_tc"));
  h->fd_c2p = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_c2p"));
  h->fd_p2c = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_p2c"));
  h->fd_slots = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_slots"));
  h->fd_buckets = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_buckets"));
  h->fd_stats = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_stats"));
  if (handle_map_slots(h, why, sizeof(why)) < 0) goto fail;

  for (uint32_t i = 0; i < n_if; i++) {
    LIBBPF_OPTS(bpf_link_create_opts, opts);
    if (xdp) opts.flags = XDP_FLAGS_DRV_MODE; // native only: generic XDP saves nothing here
    int link = bpf_link_create(prog_fd, (int)ifindexes[i], xdp ? BPF_XDP : TP_BPF_TCX_INGRESS, &opts);
    if (link < 0) {
      int e = errno;
      if (xdp && (e == EOPNOTSUPP || e == EINVAL))
        snprintf(why, sizeof(why), "%s has no native XDP support (%s)", names[i], strerror(e));
      else if (!xdp && e == EINVAL)
        snprintf(why, sizeof(why), "the kernel has no TCX attach point (BPF links for TC need Linux 6.6)");
      else
        snprintf(why, sizeof(why), "attaching to %s failed: %s", names[i], strerror(e));
      goto fail;
    }
    h->links[h->n_links++] = link;
  }
  return wrap_handle(env, h);
fail:
  handle_close(h);
  free(h);
  return throw_error(env, "%s", why);
}

// attach({c2p, p2c, slots, buckets, stats}) -> handle over duplicates of those fds
static napi_value js_attach(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  char why[256];
  if (get_args(env, info, 5, argv)) return NULL;
  struct handle *h = new_handle();
  if (!h) return throw_error(env, "out of memory");
  int *fds[] = {&h->fd_c2p, &h->fd_p2c, &h->fd_slots, &h->fd_buckets, &h->fd_stats};
  for (int i = 0; i < 5; i++) {
    int fd = fcntl((int)get_u32(env, argv[i]), F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      handle_close(h);
      free(h);
      return throw_error(env, "cannot use the shared map fds: %s", strerror(errno));
    }
    *fds[i] = fd;
  }
  if (handle_map_slots(h, why, sizeof(why)) < 0) {
    handle_close(h);
    free(h);
    return throw_error(env, "%s", why);
  }
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

static uint64_t ms_to_ns(double ms) {
  if (!(ms > 0)) return 0;
  if (ms >= 1.8e13) return UINT64_MAX; // ~570 years: "no deadline"
  return (uint64_t)(ms * 1e6);
}

static int parse_ip(napi_env env, napi_value v, uint8_t family, uint8_t out[16]) {
  char text[64];
  memset(out, 0, 16);
  if (get_string(env, v, text, sizeof(text))) return -1;
  return inet_pton(family == TP_FAMILY_V4 ? AF_INET : AF_INET6, text, out) == 1 ? 0 : -1;
}

static void slot_counters(const struct tp_slot *s, double out[6]) {
  out[0] = (double)__atomic_load_n(&s->to_peer_packets, __ATOMIC_RELAXED);
  out[1] = (double)__atomic_load_n(&s->to_peer_bytes, __ATOMIC_RELAXED);
  out[2] = (double)__atomic_load_n(&s->to_client_packets, __ATOMIC_RELAXED);
  out[3] = (double)__atomic_load_n(&s->to_client_bytes, __ATOMIC_RELAXED);
  out[4] = (double)__atomic_load_n(&s->limited_packets, __ATOMIC_RELAXED);
  out[5] = (double)__atomic_load_n(&s->limited_bytes, __ATOMIC_RELAXED);
}

// bind(h, family, client, clientPort, listener, listenerPort, channel, relayed, relayedPort,
//      peer, peerPort, deadlineMs, bucket0, bucket1) -> slot, or -1 when the maps are full.
// The same client 5-tuple and channel again: its slot, with the new deadline and buckets.
static napi_value js_bind(napi_env env, napi_callback_info info) {
  napi_value argv[14];
  struct handle *h = handle_args(env, info, 14, argv);
  if (!h) return NULL;
  uint8_t family = (uint8_t)get_u32(env, argv[1]);
  if (family != TP_FAMILY_V4 && family != TP_FAMILY_V6) return throw_error(env, "family must be 4 or 6");
  struct tp_c2p_key k = {0};
  struct tp_c2p_value v = {0};
  struct tp_p2c_key k2 = {0};
  struct tp_p2c_value v2 = {0};
  if (parse_ip(env, argv[2], family, k.client_ip) || parse_ip(env, argv[4], family, k.listener_ip) ||
      parse_ip(env, argv[7], family, v.relayed_ip) || parse_ip(env, argv[9], family, v.peer_ip))
    return throw_error(env, "an address is not an IPv%d address", family);
  k.client_port = htons((uint16_t)get_u32(env, argv[3]));
  k.listener_port = htons((uint16_t)get_u32(env, argv[5]));
  k.channel = htons((uint16_t)get_u32(env, argv[6]));
  k.family = family;
  v.relayed_port = htons((uint16_t)get_u32(env, argv[8]));
  v.peer_port = htons((uint16_t)get_u32(env, argv[10]));
  uint64_t deadline = ms_to_ns(get_f64(env, argv[11]));
  uint32_t b0 = get_u32(env, argv[12]), b1 = get_u32(env, argv[13]);
  if (b0 > h->bucket_capacity || b1 > h->bucket_capacity) return throw_error(env, "no such bucket");

  memcpy(k2.peer_ip, v.peer_ip, 16);
  memcpy(k2.relayed_ip, v.relayed_ip, 16);
  k2.peer_port = v.peer_port;
  k2.relayed_port = v.relayed_port;
  k2.family = family;
  memcpy(v2.listener_ip, k.listener_ip, 16);
  memcpy(v2.client_ip, k.client_ip, 16);
  v2.listener_port = k.listener_port;
  v2.client_port = k.client_port;
  v2.channel = k.channel;

  struct shared_slots *sh = h->shared;
  int64_t result = -1;
  char why[200] = "";
  pthread_mutex_lock(&registry_lock);
  struct tp_c2p_value existing;
  if (bpf_map_lookup_elem(h->fd_c2p, &k, &existing) == 0 && existing.slot < sh->capacity &&
      sh->live[existing.slot]) {
    struct tp_slot *s = &h->slots[existing.slot];
    __atomic_store_n(&s->bucket[0], b0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->bucket[1], b1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->deadline_ns, deadline, __ATOMIC_RELEASE);
    result = existing.slot;
  } else if (sh->free_count > 0) {
    uint32_t slot = sh->free_queue[sh->free_head];
    struct tp_slot *s = &h->slots[slot];
    memset(s, 0, sizeof(*s));
    s->bucket[0] = b0;
    s->bucket[1] = b1;
    __atomic_store_n(&s->deadline_ns, deadline, __ATOMIC_RELEASE);
    v.slot = v2.slot = slot;
    if (bpf_map_update_elem(h->fd_c2p, &k, &v, BPF_NOEXIST) < 0) {
      if (errno != E2BIG && errno != ENOMEM && errno != ENOSPC)
        snprintf(why, sizeof(why), "adding the client route failed: %s", strerror(errno));
      __atomic_store_n(&s->deadline_ns, 0, __ATOMIC_RELEASE);
    } else if (bpf_map_update_elem(h->fd_p2c, &k2, &v2, BPF_NOEXIST) < 0) {
      if (errno == EEXIST)
        snprintf(why, sizeof(why), "the peer already has a channel on that relayed address");
      else if (errno != E2BIG && errno != ENOMEM && errno != ENOSPC)
        snprintf(why, sizeof(why), "adding the peer route failed: %s", strerror(errno));
      bpf_map_delete_elem(h->fd_c2p, &k);
      __atomic_store_n(&s->deadline_ns, 0, __ATOMIC_RELEASE);
    } else {
      sh->free_head = (sh->free_head + 1) % sh->capacity;
      sh->free_count--;
      sh->live[slot] = 1;
      sh->live_count++;
      sh->keys[slot].c2p = k;
      sh->keys[slot].p2c = k2;
      result = slot;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  if (why[0]) return throw_error(env, "%s", why);
  return make_number(env, (double)result);
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

// setDeadline(h, slot, deadlineMs): one store; the kernel stops using the binding at it.
static napi_value js_set_deadline(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  pthread_mutex_lock(&registry_lock);
  if (h->shared->live[slot])
    __atomic_store_n(&h->slots[slot].deadline_ns, ms_to_ns(get_f64(env, argv[2])), __ATOMIC_RELEASE);
  pthread_mutex_unlock(&registry_lock);
  return NULL;
}

static napi_value js_set_buckets(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t slot;
  struct handle *h = slot_args(env, info, 4, argv, &slot);
  if (!h) return NULL;
  uint32_t b0 = get_u32(env, argv[2]), b1 = get_u32(env, argv[3]);
  if (b0 > h->bucket_capacity || b1 > h->bucket_capacity) return throw_error(env, "no such bucket");
  __atomic_store_n(&h->slots[slot].bucket[0], b0, __ATOMIC_RELAXED);
  __atomic_store_n(&h->slots[slot].bucket[1], b1, __ATOMIC_RELAXED);
  return NULL;
}

// 0, or -1 with a JavaScript exception pending.
static int write_counters(napi_env env, napi_value target, const double c[6]) {
  double *out = float64_arg(env, target, 6);
  if (!out) return -1;
  memcpy(out, c, 6 * sizeof(double));
  return 0;
}

// counters(h, slot, Float64Array(6)): to-peer packets, bytes, to-client packets, bytes, limited
// packets, bytes.
static napi_value js_counters(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  double c[6] = {0};
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  slot_counters(&h->slots[slot], c);
  write_counters(env, argv[2], c);
  return NULL;
}

// unbind(h, slot, Float64Array(6)) -> bool: routes deleted, final counters written, slot freed.
static napi_value js_unbind(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t slot;
  double c[6] = {0};
  struct handle *h = slot_args(env, info, 3, argv, &slot);
  if (!h) return NULL;
  struct shared_slots *sh = h->shared;
  bool was_live = false;
  pthread_mutex_lock(&registry_lock);
  if (sh->live[slot]) {
    was_live = true;
    __atomic_store_n(&h->slots[slot].deadline_ns, 0, __ATOMIC_RELEASE);
    bpf_map_delete_elem(h->fd_c2p, &sh->keys[slot].c2p);
    bpf_map_delete_elem(h->fd_p2c, &sh->keys[slot].p2c);
    slot_counters(&h->slots[slot], c);
    sh->live[slot] = 0;
    sh->live_count--;
    sh->free_queue[(sh->free_head + sh->free_count) % sh->capacity] = slot;
    sh->free_count++;
  }
  pthread_mutex_unlock(&registry_lock);
  if (write_counters(env, argv[2], c) < 0) return NULL;
  napi_value result;
  napi_get_boolean(env, was_live, &result);
  return result;
}

// liveSlots(h) -> number[]: every binding in the maps, whichever thread made it.
static napi_value js_live_slots(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  struct handle *h = handle_args(env, info, 1, argv);
  if (!h) return NULL;
  CHECK(napi_create_array(env, &arr));
  pthread_mutex_lock(&registry_lock);
  uint32_t n = 0;
  for (uint32_t i = 0; i < h->capacity; i++)
    if (h->shared->live[i]) napi_set_element(env, arr, n++, make_number(env, i));
  pthread_mutex_unlock(&registry_lock);
  return arr;
}

// stats(h, Float64Array(TP_STAT_COUNT)): the global counters summed over CPUs.
static napi_value js_stats(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct handle *h = handle_args(env, info, 2, argv);
  if (!h) return NULL;
  double *out = float64_arg(env, argv[1], TP_STAT_COUNT);
  if (!out) return NULL;
  uint64_t *per_cpu = calloc((size_t)h->ncpus, sizeof(uint64_t));
  if (!per_cpu) return throw_error(env, "out of memory");
  for (uint32_t k = 0; k < TP_STAT_COUNT; k++) {
    double sum = 0;
    if (bpf_map_lookup_elem(h->fd_stats, &k, per_cpu) == 0)
      for (int c = 0; c < h->ncpus; c++) sum += (double)per_cpu[c];
    out[k] = sum;
  }
  free(per_cpu);
  return NULL;
}

static uint64_t monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

// setBucket(h, bucket, bytesPerSecond, burstBytes): configures (and fills) a token bucket.
static napi_value js_set_bucket(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct handle *h = handle_args(env, info, 4, argv);
  if (!h) return NULL;
  uint32_t ref = get_u32(env, argv[1]);
  if (ref == 0 || ref > h->bucket_capacity) return throw_error(env, "no such bucket");
  double rate = get_f64(env, argv[2]), burst = get_f64(env, argv[3]);
  if (!(rate >= 0) || !(burst >= 0) || burst > 1e12 || rate > 1e12)
    return throw_error(env, "bucket rate and burst must be between 0 and 1e12");
  uint32_t index = ref - 1;
  struct tp_bucket b;
  memset(&b, 0, sizeof(b));
  bpf_map_lookup_elem_flags(h->fd_buckets, &index, &b, BPF_F_LOCK);
  b.rate = (uint64_t)rate;
  b.burst = (uint64_t)burst;
  b.fill_ns = b.rate ? (uint64_t)(burst * 1e9 / rate) : 0;
  b.tokens = b.burst;
  b.stamp_ns = monotonic_ns();
  if (bpf_map_update_elem(h->fd_buckets, &index, &b, BPF_F_LOCK) < 0)
    return throw_error(env, "configuring bucket %u failed: %s", ref, strerror(errno));
  return NULL;
}

// bucketDrops(h, bucket, Float64Array(2)): packets and bytes the bucket refused.
static napi_value js_bucket_drops(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct handle *h = handle_args(env, info, 3, argv);
  if (!h) return NULL;
  uint32_t ref = get_u32(env, argv[1]);
  if (ref == 0 || ref > h->bucket_capacity) return throw_error(env, "no such bucket");
  uint32_t index = ref - 1;
  struct tp_bucket b;
  memset(&b, 0, sizeof(b));
  bpf_map_lookup_elem_flags(h->fd_buckets, &index, &b, BPF_F_LOCK);
  double *out = float64_arg(env, argv[2], 2);
  if (!out) return NULL;
  out[0] = (double)b.dropped_packets;
  out[1] = (double)b.dropped_bytes;
  return NULL;
}

// nowMs() -> the kernel's monotonic clock (bpf_ktime_get_ns) in milliseconds.
static napi_value js_now_ms(napi_env env, napi_callback_info info) {
  return make_number(env, (double)monotonic_ns() / 1e6);
}

static napi_value js_ifindex(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[IF_NAMESIZE + 1];
  if (get_args(env, info, 1, argv)) return NULL;
  if (get_string(env, argv[0], name, sizeof(name))) return make_number(env, 0);
  return make_number(env, if_nametoindex(name));
}

NAPI_MODULE_INIT() {
  // libbpf's messages are only kept while this module loads an object (see load_object).
  libbpf_set_print(on_libbpf_print);
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
  return exports;
}
