// Numbers shared with bpf/kernel_path.h: keep in the same order as `enum tp_stat`.

/**
 * The program's global counters. `relayed-*` and `rate-limited` are datagrams it handled;
 * every `pass-*` is a datagram it left to userspace unchanged, and why.
 */
export const KERNEL_PATH_STATS = [
  "relayed-to-peer",
  "relayed-to-client",
  "relayed-chained",
  "rate-limited",
  "pass-no-entry",
  "pass-expired",
  "pass-channel-data-length",
  "pass-padding",
  "pass-fragment",
  "pass-ip-options",
  "pass-malformed",
  "pass-gso",
  "pass-checksum-offload",
  "pass-listener-unknown",
  "pass-local",
  "pass-no-route",
  "pass-forwarding-disabled",
  "pass-frag-needed",
  "pass-vlan",
  "error",
  "pass-no-neighbour",
] as const;
export type KernelPathStatName = (typeof KERNEL_PATH_STATS)[number];
export type KernelPathStats = Readonly<Record<KernelPathStatName, number>>;

/** Indexes of the Float64Array the addon fills with a binding's counters. */
export const COUNTER_FIELDS = [
  "toPeerPackets",
  "toPeerBytes",
  "toClientPackets",
  "toClientBytes",
  "limitedPackets",
  "limitedBytes",
] as const;
