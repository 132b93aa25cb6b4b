// The registry of slots, shared by every handle of the process: each handle over the same maps
// (the opener's and every worker thread's) joins the entry keyed by the slot map's id, so a
// slot is handed out once whichever thread binds. A freed slot goes to the back of the free
// queue: a datagram the kernel was relaying at the instant of an unbind cannot land on the next
// binding's counters.
#include "kernel_path.h"

#include <stdlib.h>

pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shared_slots *registry;

struct shared_slots *registry_join(uint32_t map_id, uint32_t capacity) {
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

void registry_leave(struct shared_slots *s) {
  pthread_mutex_lock(&registry_lock);
  if (--s->refs == 0) {
    struct shared_slots **p = &registry;
    while (*p != s) p = &(*p)->next;
    *p = s->next;
    free(s->free_queue), free(s->live), free(s->keys), free(s);
  }
  pthread_mutex_unlock(&registry_lock);
}

int64_t slots_next_free(const struct shared_slots *s) {
  return s->free_count > 0 ? (int64_t)s->free_queue[s->free_head] : -1;
}

void slots_take(struct shared_slots *s, uint32_t slot, const struct route_keys *keys) {
  s->free_head = (s->free_head + 1) % s->capacity;
  s->free_count--;
  s->live[slot] = 1;
  s->live_count++;
  s->keys[slot] = *keys;
}

void slots_release(struct shared_slots *s, uint32_t slot) {
  s->live[slot] = 0;
  s->live_count--;
  s->free_queue[(s->free_head + s->free_count) % s->capacity] = slot;
  s->free_count++;
}
