// kernel-path: the loader of Turnpike's kernel data path (bpf/kernel_path.bpf.c), as a Node-API
// addon over libbpf. This header holds what the loader's C files share: the handle, the
// registry of slots, and the functions one file calls in another.
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
//
// The files: loader.c (load, attach through BPF links, detach: a handle's life), errors.c
// (why a load or an attach failed, in one line, from errno and libbpf's messages), registry.c
// (the slots shared by every handle of the process), bindings.c (routes and slots in and out,
// deadlines, a binding's counters), buckets.c (token buckets and the global counters),
// addon.c (the functions JavaScript calls: arguments, exceptions, registration), layout.c
// (the map layout, ../bpf/layout.h, handed to JavaScript at load).
#ifndef KERNEL_PATH_NATIVE_H
#define KERNEL_PATH_NATIVE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* vasprintf, F_DUPFD_CLOEXEC */
#endif
#define NAPI_VERSION 8 /* one build serves every supported Node line */
#include <node_api.h>

#include <bpf/libbpf.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../bpf/layout.h"

// The TCX attach point (Linux 6.6). Debian 12's uapi headers (6.1) predate it; the value is the
// kernel's own (enum bpf_attach_type in its BTF: BPF_TCX_INGRESS = 46).
#define TP_BPF_TCX_INGRESS 46

#define MAX_INTERFACES 16
#define WHY_LEN 512 /* a reason for JavaScript, one line */

// ---- registry.c: the slots, shared by every handle of the process ------------------------

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

// Held for every read or change of a shared_slots (and the map entries it stands for).
extern pthread_mutex_t registry_lock;

struct shared_slots *registry_join(uint32_t map_id, uint32_t capacity);
void registry_leave(struct shared_slots *s);
// With registry_lock held: the slot the next binding gets (the front of the free queue), or -1.
int64_t slots_next_free(const struct shared_slots *s);
// With registry_lock held: the front slot becomes live with these route keys.
void slots_take(struct shared_slots *s, uint32_t slot, const struct route_keys *keys);
// With registry_lock held: a live slot goes to the back of the free queue.
void slots_release(struct shared_slots *s, uint32_t slot);

// ---- loader.c: a handle's life ------------------------------------------------------------

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

// The interfaces open() attaches to.
struct interfaces {
  char names[MAX_INTERFACES][IF_NAMESIZE + 1];
  unsigned ifindexes[MAX_INTERFACES];
  uint32_t count;
};

struct handle *handle_new(void);
// Loads the object, attaches it to every interface, maps the slots; 0, or -1 with `why`.
int handle_open(struct handle *h, const char *path, const struct interfaces *ifs, bool xdp,
                uint32_t capacity, uint32_t buckets, char *why, size_t cap);
// Takes duplicates of another handle's map fds (c2p, p2c, slots, buckets, stats); 0, or -1.
int handle_attach(struct handle *h, const int fds[5], char *why, size_t cap);
// Detaches (the owner's links) and closes; idempotent. The handle's memory stays.
void handle_close(struct handle *h);
// Loads and unloads the object's program (nothing attached): 0, or -1 with `why`.
int object_verify(const char *path, const char *program, char *why, size_t cap);
// Whether the kernel has the TCX attach point: 0, or -1 with `why`.
int tcx_support(unsigned ifindex, char *why, size_t cap);
// Programs attached at the interface's TCX ingress, or -1.
int tcx_programs(unsigned ifindex);

// ---- errors.c: why, in one line -----------------------------------------------------------

// libbpf's messages are kept between these two calls only (the thread's own buffer).
int libbpf_log_start(void);
void libbpf_log_stop(void);
// libbpf's callback (libbpf_set_print).
int libbpf_log_print(enum libbpf_print_level level, const char *fmt, va_list args);
// A failed bpf_object__load (`err` its result): the verifier's reason, else libbpf's.
void load_failure(int err, char *why, size_t cap);
// A failed bpf_link_create (`err` its errno).
void attach_failure(bool xdp, const char *name, int err, char *why, size_t cap);
// A failed query of the TCX attach point (`err` its errno).
void tcx_failure(int err, char *why, size_t cap);

// ---- bindings.c: routes and slots in and out ---------------------------------------------

// Puts both routes of a binding in (the p2c route is derived from the c2p one) with its slot's
// deadline and buckets, or refreshes those of the same client route. The slot, or -1 when the
// maps are full (`why` empty) or a map update failed (`why` says why).
int64_t binding_put(struct handle *h, const struct tp_c2p_key *k, const struct tp_c2p_value *v,
                    uint64_t deadline_ns, uint32_t bucket0, uint32_t bucket1, char *why,
                    size_t cap);
void binding_set_deadline(struct handle *h, uint32_t slot, uint64_t deadline_ns);
void binding_set_buckets(struct handle *h, uint32_t slot, uint32_t bucket0, uint32_t bucket1);
void binding_counters(const struct handle *h, uint32_t slot, double out[TP_COUNTER_COUNT]);
// Takes both routes out and frees the slot; the final counters into `out`. False if not live.
bool binding_remove(struct handle *h, uint32_t slot, double out[TP_COUNTER_COUNT]);
// The live slots into `out` (h->capacity of room); how many.
uint32_t binding_live_slots(const struct handle *h, uint32_t *out);

// A deadline from JavaScript (kernel monotonic ms) in the slot's ns; 0 for none.
uint64_t ms_to_ns(double ms);

// CLOCK_MONOTONIC in ns: what bpf_ktime_get_ns() reads.
static inline uint64_t monotonic_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

// ---- buckets.c: token buckets and the global counters ------------------------------------

// Configures (and fills) bucket `ref` (1-based); 0, or -1 with `why`.
int bucket_configure(struct handle *h, uint32_t ref, double rate, double burst, char *why,
                     size_t cap);
// Packets and bytes bucket `ref` refused.
void bucket_drops(const struct handle *h, uint32_t ref, double out[TP_BUCKET_DROP_COUNT]);
// The global counters summed over CPUs; 0, or -1 (out of memory).
int stats_read(const struct handle *h, double out[TP_STAT_COUNT]);

// ---- layout.c -----------------------------------------------------------------------------

napi_value layout_object(napi_env env);

#endif
