// Token buckets (tp_buckets: bytes per second with a burst; over the limit is a drop the
// program counts, never a disconnect) and the program's global counters (tp_stats, per CPU).
// A bucket is read and written whole under its spin lock (BPF_F_LOCK), so configuring one
// never tears the program's refill.
#include "kernel_path.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bucket_configure(struct handle *h, uint32_t ref, double rate, double burst, char *why,
                     size_t cap) {
  uint32_t index = ref - 1;
  struct tp_bucket b;
  memset(&b, 0, sizeof(b));
  bpf_map_lookup_elem_flags(h->fd_buckets, &index, &b, BPF_F_LOCK);
  b.rate = (uint64_t)rate;
  b.burst = (uint64_t)burst;
  b.fill_ns = b.rate ? (uint64_t)(burst * 1e9 / rate) : 0;
  b.tokens = b.burst;
  b.stamp_ns = monotonic_ns();
  if (bpf_map_update_elem(h->fd_buckets, &index, &b, BPF_F_LOCK) < 0) {
    snprintf(why, cap, "configuring bucket %u failed: %s", ref, strerror(errno));
    return -1;
  }
  return 0;
}

void bucket_drops(const struct handle *h, uint32_t ref, double out[TP_BUCKET_DROP_COUNT]) {
  uint32_t index = ref - 1;
  struct tp_bucket b;
  memset(&b, 0, sizeof(b));
  bpf_map_lookup_elem_flags(h->fd_buckets, &index, &b, BPF_F_LOCK);
  out[0] = (double)b.dropped_packets;
  out[1] = (double)b.dropped_bytes;
}

int stats_read(const struct handle *h, double out[TP_STAT_COUNT]) {
  uint64_t *per_cpu = calloc((size_t)h->ncpus, sizeof(uint64_t));
  if (!per_cpu) return -1;
  for (uint32_t k = 0; k < TP_STAT_COUNT; k++) {
    double sum = 0;
    if (bpf_map_lookup_elem(h->fd_stats, &k, per_cpu) == 0)
      for (int c = 0; c < h->ncpus; c++) sum += (double)per_cpu[c];
    out[k] = sum;
  }
  free(per_cpu);
  return 0;
}
