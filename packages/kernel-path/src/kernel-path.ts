// The kernel data path as the runtime drives it: open (load + attach), one bind per live
// channel binding (RFC 8656 §12), deadline and bucket updates as lifetimes and policy change,
// counters at metrics collection, unbind when the binding ends. Every call is synchronous and
// costs at most two bpf() system calls (bind, unbind); deadlines, buckets and counters are
// plain memory accesses to the mmapped slot. See bpf/layout.h for the maps.
import { isIP } from "node:net";
import { type AttachMode, interfaceProblem, missingCapabilities } from "./availability.js";
import {
  BUCKET_DROP_COUNT,
  COUNTER_FIELDS,
  KERNEL_PATH_STATS,
  type KernelPathStats,
} from "./layout.js";
import { loadNative, type NativeBinding, type NativeHandle, OBJECT_PATH } from "./native.js";

export interface KernelPathOptions {
  /** Interfaces carrying the listen and relayed addresses (TCX ingress on each). */
  readonly interfaces: readonly string[];
  readonly mode?: AttachMode;
  /** Channel bindings the maps hold (default 65536). */
  readonly maxBindings?: number;
  /** Token buckets (default 65536). */
  readonly maxBuckets?: number;
  /** Another BPF object (tests). */
  readonly objectPath?: string;
}

export interface TransportAddress {
  readonly address: string;
  readonly port: number;
}

/** One channel binding, both ways. The client side and the peer side are of one family. */
export interface ChannelRoute {
  readonly client: TransportAddress;
  /**
   * The listener the client sends to. For a listener on the wildcard address ("0.0.0.0",
   * "::") the program matches any destination address and answers from the address the
   * client's last in-kernel ChannelData was sent to; until it has seen one, the peer's
   * datagrams take the userspace path.
   */
  readonly listener: TransportAddress;
  /**
   * 0x4000-0x4fff (RFC 8656 §12), or up to 0x7fff for a server that accepts RFC 5766's range
   * (the program takes any number whose first two bits are 01).
   */
  readonly channel: number;
  /** The relay socket's bound address (not a 1:1 NAT's public one). */
  readonly relayed: TransportAddress;
  readonly peer: TransportAddress;
  /**
   * The kernel's monotonic clock (KernelPath.nowMs()) at which the binding stops: the earliest
   * of the channel's, its permission's and its allocation's expiry.
   */
  readonly deadlineMs: number;
  /** Token buckets (see setBucket) its traffic is charged to, e.g. allocation and user. */
  readonly buckets?: readonly number[];
}

/** Application data relayed in the kernel (ChannelData payload, header not counted). */
export interface BindingCounters {
  readonly toPeerPackets: number;
  readonly toPeerBytes: number;
  readonly toClientPackets: number;
  readonly toClientBytes: number;
  /** Dropped because a bucket was empty. */
  readonly limitedPackets: number;
  readonly limitedBytes: number;
}

/** What a worker thread needs to make its own handle over the same maps (postMessage it). */
export interface KernelPathShared {
  readonly fds: readonly number[];
}

export class KernelPathError extends Error {
  override name = "KernelPathError";
}

function native(): NativeBinding {
  const l = loadNative();
  if (!l.ok) throw new KernelPathError(l.reason);
  return l.binding;
}

function family(a: TransportAddress): 0 | 4 | 6 {
  return isIP(a.address) as 0 | 4 | 6;
}

function port(a: TransportAddress, what: string): number {
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 0xffff) {
    throw new RangeError(`${what} port ${a.port} is not a port`);
  }
  return a.port;
}

function toCounters(c: Float64Array): BindingCounters {
  const out: Record<string, number> = {};
  COUNTER_FIELDS.forEach((name, i) => {
    out[name] = c[i]!;
  });
  return out as unknown as BindingCounters;
}

export class KernelPath {
  readonly interfaces: readonly string[];
  readonly mode: AttachMode;
  readonly #native: NativeBinding;
  readonly #handle: NativeHandle;
  readonly #counters = new Float64Array(COUNTER_FIELDS.length);
  #closed = false;

  private constructor(
    n: NativeBinding,
    handle: NativeHandle,
    interfaces: readonly string[],
    mode: AttachMode,
  ) {
    this.#native = n;
    this.#handle = handle;
    this.interfaces = interfaces;
    this.mode = mode;
  }

  /**
   * Loads the program and attaches it to every interface through BPF links owned by this
   * process: when the process ends, however it ends, the kernel detaches it. Throws a
   * KernelPathError whose message is one line saying why not.
   */
  static open(options: KernelPathOptions): KernelPath {
    const n = native();
    const mode = options.mode ?? "tc";
    const caps = missingCapabilities();
    if (caps) {
      throw new KernelPathError(
        `the process lacks ${caps} (needed to load the program and attach it)`,
      );
    }
    for (const name of options.interfaces) {
      const problem = interfaceProblem(name, mode);
      if (problem) throw new KernelPathError(problem);
    }
    try {
      const handle = n.open(
        options.objectPath ?? OBJECT_PATH,
        options.interfaces,
        mode === "xdp",
        options.maxBindings ?? 65536,
        options.maxBuckets ?? 65536,
      );
      return new KernelPath(n, handle, [...options.interfaces], mode);
    } catch (err) {
      throw new KernelPathError((err as Error).message);
    }
  }

  /** A handle over the maps of an open KernelPath, e.g. in a worker thread (nothing reloaded). */
  static attach(shared: KernelPathShared): KernelPath {
    const n = native();
    const [c2p, p2c, slots, buckets, stats] = shared.fds;
    if (stats === undefined) throw new KernelPathError("shared state needs 5 fds");
    try {
      return new KernelPath(n, n.attach(c2p!, p2c!, slots!, buckets!, stats), [], "tc");
    } catch (err) {
      throw new KernelPathError((err as Error).message);
    }
  }

  /** The kernel's monotonic clock in ms (CLOCK_MONOTONIC, which bpf_ktime_get_ns reads). */
  static nowMs(): number {
    return native().nowMs();
  }

  /** The map fds, for KernelPath.attach in another thread of this process. */
  shared(): KernelPathShared {
    return { fds: this.#native.fds(this.#handle) };
  }

  /**
   * Puts a binding into the maps and returns its slot; the same client 5-tuple and channel
   * again returns the same slot with the new deadline and buckets. Undefined when the kernel
   * cannot carry it: the client and peer sides differ in family, or the maps are full (the
   * binding then simply stays in userspace). Throws on malformed input.
   */
  bind(route: ChannelRoute): number | undefined {
    const f = family(route.client);
    if (f === 0) throw new RangeError(`client address ${route.client.address} is not an IP`);
    if (family(route.listener) !== f) return undefined;
    if (family(route.relayed) !== family(route.peer) || family(route.peer) !== f) {
      return undefined;
    }
    if (!Number.isInteger(route.channel) || route.channel < 0x4000 || route.channel > 0x7fff) {
      throw new RangeError(`channel ${route.channel} is not a channel number (0x4000-0x7fff)`);
    }
    const [b0 = 0, b1 = 0] = route.buckets ?? [];
    const slot = this.#native.bind(
      this.#handle,
      f,
      route.client.address,
      port(route.client, "client"),
      route.listener.address,
      port(route.listener, "listener"),
      route.channel,
      route.relayed.address,
      port(route.relayed, "relayed"),
      route.peer.address,
      port(route.peer, "peer"),
      route.deadlineMs,
      b0,
      b1,
    );
    return slot < 0 ? undefined : slot;
  }

  /** Moves a binding's deadline (kernel monotonic ms): one store, seen by the next packet. */
  setDeadline(slot: number, deadlineMs: number): void {
    this.#native.setDeadline(this.#handle, slot, deadlineMs);
  }

  /** The buckets a binding's traffic is charged to (0 or none: no limit). */
  setBuckets(slot: number, buckets: readonly number[]): void {
    this.#native.setBuckets(this.#handle, slot, buckets[0] ?? 0, buckets[1] ?? 0);
  }

  counters(slot: number): BindingCounters {
    this.#native.counters(this.#handle, slot, this.#counters);
    return toCounters(this.#counters);
  }

  /**
   * The same counters into `out` (COUNTER_FIELDS order: to-peer packets and bytes, to-client
   * packets and bytes, limited packets and bytes), allocating nothing: for a caller reading
   * every binding at each metrics collection.
   */
  readCounters(slot: number, out: Float64Array): void {
    this.#native.counters(this.#handle, slot, out);
  }

  /** Takes a binding out (both routes) and returns its final counters; undefined if not bound. */
  unbind(slot: number): BindingCounters | undefined {
    return this.#native.unbind(this.#handle, slot, this.#counters)
      ? toCounters(this.#counters)
      : undefined;
  }

  /**
   * unbind, with the final counters into `out` (COUNTER_FIELDS order); false if not bound.
   * The counters include every datagram relayed until the routes were gone.
   */
  unbindInto(slot: number, out: Float64Array): boolean {
    return this.#native.unbind(this.#handle, slot, out);
  }

  /** Every bound slot of these maps, whichever thread bound it. */
  liveSlots(): number[] {
    return this.#native.liveSlots(this.#handle);
  }

  /**
   * The program's global counters, summed over CPUs, into `out` (KERNEL_PATH_STATS order),
   * allocating nothing: for a caller reading them at each metrics collection. They count
   * from the program's load, whichever handle reads them. After close() `out` keeps what it
   * held: the last reading stands for a program that is gone.
   */
  readStats(out: Float64Array): void {
    if (this.#closed) return;
    this.#native.stats(this.#handle, out);
  }

  /** The program's global counters, summed over CPUs. */
  stats(): KernelPathStats {
    const raw = new Float64Array(KERNEL_PATH_STATS.length);
    this.#native.stats(this.#handle, raw);
    const out: Record<string, number> = {};
    KERNEL_PATH_STATS.forEach((name, i) => {
      out[name] = raw[i]!;
    });
    return out as KernelPathStats;
  }

  /**
   * Configures token bucket `bucket` (1..maxBuckets) and fills it: a binding charged to it
   * relays at most `bytesPerSecond` of application data on average with bursts of
   * `burstBytes`; beyond that the kernel drops and counts ("over the limit is a counted drop,
   * never a disconnect"). A rate of 0 means no limit.
   */
  setBucket(bucket: number, limit: { bytesPerSecond: number; burstBytes: number }): void {
    this.#native.setBucket(this.#handle, bucket, limit.bytesPerSecond, limit.burstBytes);
  }

  /** Datagrams and bytes bucket `bucket` refused. */
  bucketDrops(bucket: number): { packets: number; bytes: number } {
    const out = new Float64Array(BUCKET_DROP_COUNT);
    this.#native.bucketDrops(this.#handle, bucket, out);
    return { packets: out[0]!, bytes: out[1]! };
  }

  /** Detaches the program (the opening handle) and closes the maps; idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close(this.#handle);
  }
}
