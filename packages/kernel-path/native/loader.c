// A handle's life: load the BPF object (its maps sized and checked against ../bpf/layout.h),
// attach the program to each interface through a BPF link, map the slot array; or take another
// handle's maps (a worker thread); and close, which detaches. Links are file descriptors of
// this process only (nothing is pinned), so the program is detached when the process ends,
// however it ends (kill -9 included).
#include "kernel_path.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

// The maps as layout.h lays them out, checked in every object before it loads: an object built
// from another layout would have the loader misread the slots it mmaps and the keys it writes.
static const struct {
  const char *name;
  uint32_t key_size, value_size;
} MAP_LAYOUT[] = {
    {"tp_c2p", sizeof(struct tp_c2p_key), sizeof(struct tp_c2p_value)},
    {"tp_p2c", sizeof(struct tp_p2c_key), sizeof(struct tp_p2c_value)},
    {"tp_slots", sizeof(uint32_t), sizeof(struct tp_slot)},
    {"tp_buckets", sizeof(uint32_t), sizeof(struct tp_bucket)},
    {"tp_stats", sizeof(uint32_t), sizeof(uint64_t)},
};

// The object's maps against MAP_LAYOUT; 0, or -1 with `why`.
static int check_map_layout(struct bpf_object *obj, const char *path, char *why, size_t cap) {
  for (size_t i = 0; i < sizeof(MAP_LAYOUT) / sizeof(MAP_LAYOUT[0]); i++) {
    struct bpf_map *m = bpf_object__find_map_by_name(obj, MAP_LAYOUT[i].name);
    if (!m) {
      snprintf(why, cap, "the BPF object %s has no map %s", path, MAP_LAYOUT[i].name);
      return -1;
    }
    uint32_t key = bpf_map__key_size(m), value = bpf_map__value_size(m);
    if (key != MAP_LAYOUT[i].key_size || value != MAP_LAYOUT[i].value_size) {
      snprintf(why, cap,
               "the BPF object %s does not match the loader's map layout (%s: key %u and value %u "
               "bytes in the object, %u and %u in the loader); rebuild it (pnpm install)",
               path, MAP_LAYOUT[i].name, key, value, MAP_LAYOUT[i].key_size,
               MAP_LAYOUT[i].value_size);
      return -1;
    }
  }
  uint32_t stats = bpf_map__max_entries(bpf_object__find_map_by_name(obj, "tp_stats"));
  if (stats != TP_STAT_COUNT) {
    snprintf(why, cap,
             "the BPF object %s does not match the loader's map layout (tp_stats: %u counters in "
             "the object, %d in the loader); rebuild it (pnpm install)",
             path, stats, TP_STAT_COUNT);
    return -1;
  }
  return 0;
}

// Opens and loads the object; on failure writes the reason. Maps sized to `capacity` bindings.
static struct bpf_object *load_object(const char *path, const char *program, uint32_t capacity,
                                      uint32_t buckets, char *why, size_t cap) {
  if (libbpf_log_start() < 0) {
    snprintf(why, cap, "out of memory");
    return NULL;
  }
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
  if (check_map_layout(obj, path, why, cap) < 0) goto fail;
  const char *sized[] = {"tp_c2p", "tp_p2c", "tp_slots"};
  for (size_t i = 0; i < 3; i++) {
    if (bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, sized[i]), capacity) < 0) {
      snprintf(why, cap, "the BPF object %s has no map %s", path, sized[i]);
      goto fail;
    }
  }
  if (bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "tp_buckets"), buckets) < 0) {
    snprintf(why, cap, "the BPF object %s has no map tp_buckets", path);
    goto fail;
  }
  err = bpf_object__load(obj);
  if (err) {
    load_failure(err, why, cap);
    goto fail;
  }
  goto out;
fail:
  bpf_object__close(obj);
  obj = NULL;
out:
  libbpf_log_stop();
  return obj;
}

int object_verify(const char *path, const char *program, char *why, size_t cap) {
  struct bpf_object *obj = load_object(path, program, 64, 64, why, cap);
  if (!obj) return -1;
  bpf_object__close(obj);
  return 0;
}

int tcx_support(unsigned ifindex, char *why, size_t cap) {
  uint32_t ids[1], count = 1, flags = 0;
  int err = bpf_prog_query((int)ifindex, TP_BPF_TCX_INGRESS, 0, &flags, ids, &count);
  if (err == 0 || errno == ENOSPC) return 0;
  tcx_failure(errno, why, cap);
  return -1;
}

int tcx_programs(unsigned ifindex) {
  uint32_t ids[64], count = 64, flags = 0;
  int err = bpf_prog_query((int)ifindex, TP_BPF_TCX_INGRESS, 0, &flags, ids, &count);
  return err == 0 ? (int)count : -1;
}

// ---- handles ------------------------------------------------------------------------------

struct handle *handle_new(void) {
  struct handle *h = calloc(1, sizeof(*h));
  if (!h) return NULL;
  h->fd_c2p = h->fd_p2c = h->fd_slots = h->fd_buckets = h->fd_stats = -1;
  return h;
}

void handle_close(struct handle *h) {
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

int handle_open(struct handle *h, const char *path, const struct interfaces *ifs, bool xdp,
                uint32_t capacity, uint32_t buckets, char *why, size_t cap) {
  const char *program = xdp ? "turnpike_xdp" : "turnpike_tc";
  h->obj = load_object(path, program, capacity, buckets, why, cap);
  if (!h->obj) return -1;
  int prog_fd = bpf_program__fd(bpf_object__find_program_by_name(h->obj, program));
  h->fd_c2p = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_c2p"));
  h->fd_p2c = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_p2c"));
  h->fd_slots = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_slots"));
  h->fd_buckets = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_buckets"));
  h->fd_stats = bpf_map__fd(bpf_object__find_map_by_name(h->obj, "tp_stats"));
  if (handle_map_slots(h, why, cap) < 0) return -1;

  for (uint32_t i = 0; i < ifs->count; i++) {
    LIBBPF_OPTS(bpf_link_create_opts, opts);
    if (xdp) opts.flags = XDP_FLAGS_DRV_MODE; // native only: generic XDP saves nothing here
    int link =
        bpf_link_create(prog_fd, (int)ifs->ifindexes[i], xdp ? BPF_XDP : TP_BPF_TCX_INGRESS, &opts);
    if (link < 0) {
      attach_failure(xdp, ifs->names[i], errno, why, cap);
      return -1;
    }
    h->links[h->n_links++] = link;
  }
  return 0;
}

int handle_attach(struct handle *h, const int fds[5], char *why, size_t cap) {
  int *own[] = {&h->fd_c2p, &h->fd_p2c, &h->fd_slots, &h->fd_buckets, &h->fd_stats};
  for (int i = 0; i < 5; i++) {
    int fd = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
    if (fd < 0) {
      snprintf(why, cap, "cannot use the shared map fds: %s", strerror(errno));
      return -1;
    }
    *own[i] = fd;
  }
  return handle_map_slots(h, why, cap);
}
