// @turnpike/kernel-path: bound ChannelData relayed by an eBPF program in the kernel (TC ingress
// through TCX links), the protocol staying in the Node runtime. See README.md for the design,
// bpf/kernel_path.bpf.c for the program and bpf/layout.h for the maps.
export {
  type AttachMode,
  type AvailabilityOptions,
  type KernelPathAvailability,
  kernelPathAvailability,
  missingForwarding,
  tcxIngressPrograms,
} from "./availability.js";
export {
  type BindingCounters,
  type ChannelRoute,
  KernelPath,
  KernelPathError,
  type KernelPathOptions,
  type KernelPathShared,
  type TransportAddress,
} from "./kernel-path.js";
export {
  COUNTER_FIELDS,
  KERNEL_PATH_STATS,
  type KernelPathStatName,
  type KernelPathStats,
} from "./layout.js";
