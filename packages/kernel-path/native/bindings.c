// A channel binding (RFC 8656 §12) in and out of the maps: its two routes (tp_c2p, tp_p2c) and
// its slot (tp_slots, mmapped), under the registry's lock so every handle of the process sees
// one set of slots. bind and unbind are two bpf() calls each; a deadline or bucket change is a
// store into the slot and the counters are loads, seen by the program's next datagram.
#include "kernel_path.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

uint64_t ms_to_ns(double ms) {
  if (!(ms > 0)) return 0;
  if (ms >= 1.8e13) return UINT64_MAX; // ~570 years: "no deadline"
  return (uint64_t)(ms * 1e6);
}

// Whether a failed map update just means the maps are full (the binding stays in userspace).
static bool maps_full(int err) { return err == E2BIG || err == ENOMEM || err == ENOSPC; }

// The peer -> client route of a binding, from its client -> peer one.
static void peer_route(const struct tp_c2p_key *k, const struct tp_c2p_value *v,
                       struct tp_p2c_key *k2, struct tp_p2c_value *v2) {
  memset(k2, 0, sizeof(*k2));
  memset(v2, 0, sizeof(*v2));
  memcpy(k2->peer_ip, v->peer_ip, 16);
  memcpy(k2->relayed_ip, v->relayed_ip, 16);
  k2->peer_port = v->peer_port;
  k2->relayed_port = v->relayed_port;
  k2->family = k->family;
  memcpy(v2->listener_ip, k->listener_ip, 16);
  memcpy(v2->client_ip, k->client_ip, 16);
  v2->listener_port = k->listener_port;
  v2->client_port = k->client_port;
  v2->channel = k->channel;
}

int64_t binding_put(struct handle *h, const struct tp_c2p_key *k, const struct tp_c2p_value *value,
                    uint64_t deadline, uint32_t b0, uint32_t b1, char *why, size_t cap) {
  struct route_keys keys = {.c2p = *k};
  struct tp_c2p_value v = *value;
  struct tp_p2c_value v2;
  peer_route(k, &v, &keys.p2c, &v2);

  struct shared_slots *sh = h->shared;
  int64_t result = -1;
  why[0] = 0;
  pthread_mutex_lock(&registry_lock);
  struct tp_c2p_value existing;
  int64_t free_slot;
  if (bpf_map_lookup_elem(h->fd_c2p, k, &existing) == 0 && existing.slot < sh->capacity &&
      sh->live[existing.slot]) {
    // The same client route again: its slot, with the new deadline and buckets.
    struct tp_slot *s = &h->slots[existing.slot];
    __atomic_store_n(&s->bucket[0], b0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->bucket[1], b1, __ATOMIC_RELAXED);
    __atomic_store_n(&s->deadline_ns, deadline, __ATOMIC_RELEASE);
    result = existing.slot;
  } else if ((free_slot = slots_next_free(sh)) >= 0) {
    uint32_t slot = (uint32_t)free_slot;
    struct tp_slot *s = &h->slots[slot];
    memset(s, 0, sizeof(*s));
    s->bucket[0] = b0;
    s->bucket[1] = b1;
    __atomic_store_n(&s->deadline_ns, deadline, __ATOMIC_RELEASE);
    v.slot = v2.slot = slot;
    if (bpf_map_update_elem(h->fd_c2p, k, &v, BPF_NOEXIST) < 0) {
      if (!maps_full(errno))
        snprintf(why, cap, "adding the client route failed: %s", strerror(errno));
      __atomic_store_n(&s->deadline_ns, 0, __ATOMIC_RELEASE);
    } else if (bpf_map_update_elem(h->fd_p2c, &keys.p2c, &v2, BPF_NOEXIST) < 0) {
      if (errno == EEXIST)
        snprintf(why, cap, "the peer already has a channel on that relayed address");
      else if (!maps_full(errno))
        snprintf(why, cap, "adding the peer route failed: %s", strerror(errno));
      bpf_map_delete_elem(h->fd_c2p, k);
      __atomic_store_n(&s->deadline_ns, 0, __ATOMIC_RELEASE);
    } else {
      slots_take(sh, slot, &keys);
      result = slot;
    }
  }
  pthread_mutex_unlock(&registry_lock);
  return why[0] ? -1 : result;
}

void binding_set_deadline(struct handle *h, uint32_t slot, uint64_t deadline_ns) {
  pthread_mutex_lock(&registry_lock);
  if (h->shared->live[slot]) __atomic_store_n(&h->slots[slot].deadline_ns, deadline_ns, __ATOMIC_RELEASE);
  pthread_mutex_unlock(&registry_lock);
}

void binding_set_buckets(struct handle *h, uint32_t slot, uint32_t b0, uint32_t b1) {
  __atomic_store_n(&h->slots[slot].bucket[0], b0, __ATOMIC_RELAXED);
  __atomic_store_n(&h->slots[slot].bucket[1], b1, __ATOMIC_RELAXED);
}

void binding_counters(const struct handle *h, uint32_t slot, double out[TP_COUNTER_COUNT]) {
  const struct tp_slot *s = &h->slots[slot];
#define LOAD(field, name) out[TP_COUNTER_##field] = (double)__atomic_load_n(&s->field, __ATOMIC_RELAXED);
  TP_BINDING_COUNTERS(LOAD)
#undef LOAD
}

bool binding_remove(struct handle *h, uint32_t slot, double out[TP_COUNTER_COUNT]) {
  struct shared_slots *sh = h->shared;
  bool was_live = false;
  pthread_mutex_lock(&registry_lock);
  if (sh->live[slot]) {
    was_live = true;
    __atomic_store_n(&h->slots[slot].deadline_ns, 0, __ATOMIC_RELEASE);
    bpf_map_delete_elem(h->fd_c2p, &sh->keys[slot].c2p);
    bpf_map_delete_elem(h->fd_p2c, &sh->keys[slot].p2c);
    binding_counters(h, slot, out);
    slots_release(sh, slot);
  }
  pthread_mutex_unlock(&registry_lock);
  return was_live;
}

uint32_t binding_live_slots(const struct handle *h, uint32_t *out) {
  uint32_t n = 0;
  pthread_mutex_lock(&registry_lock);
  for (uint32_t i = 0; i < h->capacity; i++)
    if (h->shared->live[i]) out[n++] = i;
  pthread_mutex_unlock(&registry_lock);
  return n;
}
