// @turnpike/udp-batch: batched UDP sockets for Node.js on Linux (recvmmsg/sendmmsg under one
// epoll set watched by libuv). See native/udp_batch.h for the design; this file is the typed view
// of the memory the native side shares with JavaScript, whose layout (native/layout.h) the
// module hands over at load and layout.ts checks.
//
// Receive: `onBatch(count)` is called once per batch. Packet i has its payload at
// rx[slotOffset(i) .. slotOffset(i) + length) and its metadata in rxMeta[i * RX_STRIDE ...].
// HEADROOM bytes in front of every payload are free for a header written in place.
// The arena is reused by the next receive: keep nothing from it past the callback.
//
// Send: queue with `queueFromRx` (a range of the rx arena, no copy) or `queueCopy` (bytes
// copied into the tx arena); everything queued during onBatch is flushed right after it
// returns; elsewhere call `flush()`. Counters (sent packets/bytes per tag, size buckets, drops
// by reason, syscalls) are in `stats`, read them when metrics are collected.
import { createRequire } from "node:module";
import {
  ARENA_RX,
  ARENA_TX,
  BATCH_DROP_REASONS,
  type BatchDropReason,
  CTL_TX_BYTES,
  CTL_TX_COUNT,
  checkLayout,
  HEADROOM,
  SLOT_SIZE,
  SPLICE_A_TO_B_BYTES,
  SPLICE_A_TO_B_CHUNKS,
  SPLICE_B_TO_A_BYTES,
  SPLICE_B_TO_A_CHUNKS,
  SPLICE_COUNTERS,
  SPLICE_POOL_COUNTERS,
  SPLICE_POOL_IDLE,
  SPLICE_POOL_IDLE_FDS,
  SPLICE_POOL_LENT,
  SPLICE_POOL_MADE,
  type StatsLayout,
  TX_ADDR,
  TX_ARENA,
  TX_FAMILY,
  TX_HANDLE,
  TX_LENGTH,
  TX_OFFSET,
  TX_OVERHEAD,
  TX_PORT,
  TX_STRIDE,
  TX_TAG,
} from "./layout.js";

export {
  BATCH_DROP_REASONS,
  type BatchDropReason,
  HEADROOM,
  MAX_DATAGRAM,
  MAX_TAGS,
  RX_ADDR,
  RX_FAMILY,
  RX_HANDLE,
  RX_LENGTH,
  RX_PORT,
  RX_SCOPED,
  RX_STRIDE,
  SLOT_SIZE,
} from "./layout.js";

export { stopNodeReading, tcpSocketFd } from "./node-socket.js";
export { SplicedSockets, type SplicedSocketsHooks } from "./spliced-sockets.js";

export interface BatchIoCounters {
  /** recvmmsg calls that returned packets */
  readonly recvCalls: number;
  /** sendmmsg calls */
  readonly sendCalls: number;
  readonly packetsReceived: number;
  /** JavaScript callbacks (crossings from the event loop into JS) */
  readonly batches: number;
  /** sends that found the socket buffer full (the rest waited for EPOLLOUT) */
  readonly eagain: number;
  /** bytes waiting in per-socket backlogs now */
  readonly backlogBytes: number;
  /** libuv wake-ups */
  readonly wakeups: number;
}

interface NativeShared {
  ctx: object;
  rx: ArrayBuffer;
  rxMeta: ArrayBuffer;
  tx: ArrayBuffer;
  txMeta: ArrayBuffer;
  ctl: ArrayBuffer;
  stats: ArrayBuffer;
}

interface NativeBinding {
  /** The shared memory layout (native/layout.h), checked by checkLayout at load. */
  readonly layout: unknown;
  create(onBatch: (count: number) => void, options: object): NativeShared;
  open(ctx: object, family: number, address: string, port: number, options: object): number;
  localPort(ctx: object, handle: number): number;
  close(ctx: object, handle: number): boolean;
  flush(ctx: object): void;
  destroy(ctx: object): void;
  tcpListen(family: number, address: string, port: number, backlog: number, group: number): number;
  tcpBind(family: number, address: string, port: number): number;
  bindUdp(family: number, address: string, port: number, options: object): number;
  adopt(ctx: object, fd: number): number;
  dupFd(fd: number): number;
  closeFd(fd: number): void;
  fdPort(fd: number): number;
  splicePipe(fdA: number, fdB: number, onEnd: (errno: number) => void): object;
  splicePipeStart(pipe: object): void;
  splicePipeCounters(pipe: object, out: Float64Array): void;
  splicePipeEnd(pipe: object): void;
  splicePipeClose(pipe: object): boolean;
  splicePipePoolCounters(out: Float64Array): void;
  socketPoolCounters(): [number, number, number, number];
}

export interface BatchIoOptions {
  /** Called once per received batch with the number of packets (see the file comment). */
  readonly onBatch: (count: number) => void;
  /** Packets per receive batch (default 64). */
  readonly maxBatch?: number;
  /** Queued sends before a flush is forced (default 256). */
  readonly maxTx?: number;
  /** Bytes of the tx arena for copied payloads (default 1 MiB). */
  readonly txBytes?: number;
  /** Bytes a socket may hold while the kernel says EAGAIN (default 1 MiB); beyond: dropped. */
  readonly maxBacklog?: number;
  /** Bytes all sockets together may hold that way (default 64 MiB). */
  readonly maxBacklogTotal?: number;
  /** Upper bounds (inclusive) of the sent-size histogram buckets (at most 15). */
  readonly sizeBounds?: readonly number[];
  /** Tags whose packets count in the size histogram (default: all). */
  readonly bucketTags?: readonly number[];
}

export interface OpenOptions {
  readonly family: 4 | 6;
  readonly address: string;
  /** 0 for an ephemeral port. */
  readonly port: number;
  readonly reusePort?: boolean;
  readonly recvBufferSize?: number;
  readonly sendBufferSize?: number;
}

type Loaded =
  | { readonly ok: true; readonly binding: NativeBinding; readonly stats: StatsLayout }
  | { readonly ok: false; readonly reason: string };
let loaded: Loaded | undefined;

function load(): Loaded {
  if (loaded) return loaded;
  if (process.platform !== "linux") {
    loaded = { ok: false, reason: `${process.platform} is not Linux` };
    return loaded;
  }
  let binding: NativeBinding;
  try {
    const require = createRequire(import.meta.url);
    binding = require("../build/Release/udp_batch.node") as NativeBinding;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    loaded = {
      ok: false,
      reason:
        e.code === "MODULE_NOT_FOUND"
          ? "the native module was not built at install (see the install log)"
          : `the native module failed to load: ${e.message}`,
    };
    return loaded;
  }
  // A module built from other sources than this JavaScript (a stale build/) would misread
  // the shared memory: refuse it like one that did not build.
  const layout = checkLayout(binding.layout);
  loaded = layout.ok
    ? { ok: true, binding, stats: layout.stats }
    : { ok: false, reason: layout.reason };
  return loaded;
}

/** Whether batched I/O can run here, and if not, why (for the one log line at start). */
export function batchIoAvailability(): { available: true } | { available: false; reason: string } {
  const l = load();
  return l.ok ? { available: true } : { available: false, reason: l.reason };
}

/**
 * A listening TCP socket for workers that share an address (SO_REUSEPORT); with `steerGroup`
 * > 1 the kernel picks the worker by the client's source address only, so every connection
 * of one client host reaches the same worker. Returns the fd for `server.listen({ fd })`.
 * Throws an Error with `code` (EADDRINUSE, ...), or when the module is unavailable.
 */
export function tcpListen(options: {
  family: 4 | 6;
  address: string;
  port: number;
  backlog?: number;
  steerGroup?: number;
}): number {
  const l = load();
  if (!l.ok) throw new Error(`udp-batch unavailable: ${l.reason}`);
  return l.binding.tcpListen(
    options.family,
    options.address,
    options.port,
    options.backlog ?? 511,
    options.steerGroup ?? 1,
  );
}

/**
 * A TCP socket bound to `address`:`port` with SO_REUSEPORT, not connected: next to a
 * tcpListen socket on the same address, a connection from that very address and port
 * (`new net.Socket({ fd }).connect(...)`). Throws an Error with `code` (EADDRINUSE, ...), or
 * when the module is unavailable.
 */
export function tcpBind(options: { family: 4 | 6; address: string; port: number }): number {
  return binding().tcpBind(options.family, options.address, options.port);
}

function binding(): NativeBinding {
  const l = load();
  if (!l.ok) throw new Error(`udp-batch unavailable: ${l.reason}`);
  return l.binding;
}

/**
 * A bound UDP socket that no context reads: a supervisor keeps it open across the restarts of
 * the worker that `adopt`s it, so the socket's place in its SO_REUSEPORT group (and with it the
 * kernel's mapping of clients to workers) never changes. Returns the fd.
 */
export function bindUdp(options: OpenOptions): number {
  return binding().bindUdp(options.family, options.address, options.port, {
    reusePort: options.reusePort ? 1 : 0,
    recvBufferSize: options.recvBufferSize ?? 0,
    sendBufferSize: options.sendBufferSize ?? 0,
  });
}

/** A duplicate of `fd` for a thread that will own (and close) its copy. */
export function dupFd(fd: number): number {
  return binding().dupFd(fd);
}

/** The local port socket `fd` is bound to. */
export function fdPort(fd: number): number {
  return binding().fdPort(fd);
}

/** Where `open`'s sockets came from (native/socket_pool.c): the pool, or socket(2) inline. */
export interface SocketPoolCounters {
  /** sockets `open` and `bindUdp` took from the pool, made ahead of time on its thread */
  readonly taken: number;
  /** sockets they made themselves: the pool was empty, or off (TURNPIKE_UDP_SOCKET_POOL=off) */
  readonly inline: number;
  /** unbound sockets the pool holds now, of both families */
  readonly held: number;
  readonly heldIpv4: number;
  readonly heldIpv6: number;
}

/** The process's socket pool, since it started (zeros before the first `open`). */
export function socketPoolCounters(): SocketPoolCounters {
  const [taken, inline, heldIpv4, heldIpv6] = binding().socketPoolCounters();
  return { taken, inline, held: heldIpv4 + heldIpv6, heldIpv4, heldIpv6 };
}

/** Close a descriptor this process made with bindUdp, tcpListen or dupFd. */
export function closeFd(fd: number): void {
  binding().closeFd(fd);
}

/** What a SplicePipe moved so far: bytes written to each side, and the splice calls. */
export interface SplicePipeCounters {
  readonly aToBBytes: number;
  readonly bToABytes: number;
  readonly aToBChunks: number;
  readonly bToAChunks: number;
}

/**
 * Descriptors a SplicePipe holds beyond its caller's two sockets, at most: a duplicate of each,
 * and the two ends of a kernel pipe per direction while that direction has bytes in flight
 * (native/splice_pipe.c: kernel pipes are borrowed from the thread's pool and given back empty,
 * so an idle SplicePipe holds its two duplicates only). What callers budget pipes by, with
 * SPLICE_POOL_IDLE_FDS for the thread's idle kernel pipes.
 */
export const SPLICE_PIPE_FDS = 6;

export { SPLICE_POOL_IDLE_FDS };

/** This thread's kernel pipes for SplicePipes: made so far, lent out now, idle in the pool. */
export interface SplicePipePoolCounters {
  readonly made: number;
  readonly lent: number;
  readonly idle: number;
}

/** This thread's kernel pipe pool (zeros before the first SplicePipe moved a byte). */
export function splicePipePoolCounters(): SplicePipePoolCounters {
  const out = new Float64Array(SPLICE_POOL_COUNTERS);
  binding().splicePipePoolCounters(out);
  return {
    made: out[SPLICE_POOL_MADE]!,
    lent: out[SPLICE_POOL_LENT]!,
    idle: out[SPLICE_POOL_IDLE]!,
  };
}

/**
 * A zero-copy byte pipe between two connected TCP sockets (splice(2) through a kernel pipe per
 * direction, on the event loop: native/splice_pipe.c), moving bytes from `start()` on (so the
 * caller can first write what it already read). It works on duplicates of `fdA` and `fdB`:
 * the caller keeps its own fds, must neither read nor write them while the pipe runs (a
 * net.Socket: stop its reading first), and closes them after the pipe ended. Each side's
 * FIN is passed on as shutdown(SHUT_WR) of the other; the pipe ends when both were, or on an
 * error of either socket, and `onEnd(errno)` runs (0: both directions ended cleanly; never
 * inside a call of this class). Holds at most SPLICE_PIPE_FDS fds while it runs (two when idle).
 * Throws (`code` EMFILE, ...) when they cannot be made, or when the module is unavailable.
 */
export class SplicePipe {
  private readonly native: NativeBinding;
  private readonly pipe: object;
  private readonly out = new Float64Array(SPLICE_COUNTERS);
  private running = true;

  constructor(fdA: number, fdB: number, onEnd: (errno: number) => void) {
    this.native = binding();
    this.pipe = this.native.splicePipe(fdA, fdB, (errno) => {
      this.running = false;
      onEnd(errno);
    });
  }

  /** Start moving bytes (once; the constructor does not). */
  start(): void {
    this.native.splicePipeStart(this.pipe);
  }

  /** Still moving bytes, or able to once started (neither ended nor closed). */
  get active(): boolean {
    return this.running;
  }

  counters(): SplicePipeCounters {
    const o = this.out;
    this.native.splicePipeCounters(this.pipe, o);
    return {
      aToBBytes: o[SPLICE_A_TO_B_BYTES]!,
      bToABytes: o[SPLICE_B_TO_A_BYTES]!,
      aToBChunks: o[SPLICE_A_TO_B_CHUNKS]!,
      bToAChunks: o[SPLICE_B_TO_A_CHUNKS]!,
    };
  }

  /**
   * Stop reading both sockets, write out what the kernel pipes hold, shut both down for
   * writing; then `onEnd` as for a pipe that ended by itself.
   */
  end(): void {
    this.native.splicePipeEnd(this.pipe);
  }

  /** Close its fds now (what the kernel pipes hold is lost); `onEnd` does not run. */
  close(): void {
    this.running = false;
    this.native.splicePipeClose(this.pipe);
  }
}

export class BatchIo {
  /** Receive arena: packet i's payload starts at slotOffset(i). */
  readonly rx: Uint8Array;
  readonly rxMeta: Uint32Array;
  readonly tx: Uint8Array;
  readonly stats: Float64Array;
  private readonly txMeta: Uint32Array;
  private readonly ctl: Uint32Array;
  private readonly maxTx: number;
  private readonly native: NativeBinding;
  /** Where the counters sit in `stats`: the native module's layout, read at load. */
  private readonly st: StatsLayout;
  private readonly ctx: object;
  private destroyed = false;

  constructor(options: BatchIoOptions) {
    const l = load();
    if (!l.ok) throw new Error(`udp-batch unavailable: ${l.reason}`);
    this.native = l.binding;
    this.st = l.stats;
    this.maxTx = options.maxTx ?? 256;
    const shared = this.native.create(options.onBatch, {
      maxBatch: options.maxBatch ?? 64,
      maxTx: this.maxTx,
      txBytes: options.txBytes ?? 1 << 20,
      maxBacklog: options.maxBacklog ?? 1 << 20,
      maxBacklogTotal: options.maxBacklogTotal ?? 64 << 20,
      bounds: options.sizeBounds ?? [],
      bucketTags:
        options.bucketTags === undefined
          ? 0xffffffff
          : options.bucketTags.reduce((mask, tag) => (mask | (1 << tag)) >>> 0, 0),
    });
    this.ctx = shared.ctx;
    this.rx = new Uint8Array(shared.rx);
    this.rxMeta = new Uint32Array(shared.rxMeta);
    this.tx = new Uint8Array(shared.tx);
    this.txMeta = new Uint32Array(shared.txMeta);
    this.ctl = new Uint32Array(shared.ctl);
    this.stats = new Float64Array(shared.stats);
  }

  /** Where packet i's payload starts in `rx` (HEADROOM free bytes precede it). */
  static slotOffset(i: number): number {
    return i * SLOT_SIZE + HEADROOM;
  }

  /** Bind a UDP socket; returns its handle. Throws an Error with `code` (EADDRINUSE, ...). */
  open(options: OpenOptions): number {
    return this.native.open(this.ctx, options.family, options.address, options.port, {
      reusePort: options.reusePort ? 1 : 0,
      recvBufferSize: options.recvBufferSize ?? 0,
      sendBufferSize: options.sendBufferSize ?? 0,
    });
  }

  /** Read and send through a duplicate of `fd` (see bindUdp); returns its handle. */
  adopt(fd: number): number {
    return this.native.adopt(this.ctx, fd);
  }

  localPort(handle: number): number {
    return this.native.localPort(this.ctx, handle);
  }

  /** Close a socket at once; packets still queued for it are dropped and counted. */
  close(handle: number): boolean {
    if (this.destroyed) return false;
    return this.native.close(this.ctx, handle);
  }

  /**
   * Queue rx[offset .. offset + length) for `handle` to send to (family, address, port).
   * IPv4 addresses are `ip4` (a uint32); IPv6 are the 4 big-endian words in `ip6`. `tag`
   * names the counter the packet is counted under once the kernel accepts it; its first
   * `overhead` bytes are framing (a header), not counted as payload bytes.
   */
  queueFromRx(
    handle: number,
    offset: number,
    length: number,
    family: 4 | 6,
    ip4: number,
    ip6: Uint32Array | undefined,
    port: number,
    tag: number,
    overhead = 0,
  ): void {
    this.queue(handle, ARENA_RX, offset, length, family, ip4, ip6, port, tag, overhead);
  }

  /** Copy `bytes[start..end)` into the tx arena and queue it (control messages, TCP-sourced data). */
  queueCopy(
    handle: number,
    bytes: Uint8Array,
    start: number,
    end: number,
    family: 4 | 6,
    ip4: number,
    ip6: Uint32Array | undefined,
    port: number,
    tag: number,
    overhead = 0,
  ): void {
    const length = end - start;
    const ctl = this.ctl;
    let offset = ctl[CTL_TX_BYTES]!;
    if (offset + length > this.tx.length) {
      this.flush();
      offset = 0;
    }
    // A whole array (a STUN response as relay-core built it) is copied as is: a subarray was
    // an object per control message (bench/README.md, "2026-12-07, third pass").
    this.tx.set(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end), offset);
    // Keep every copy 8-byte aligned (cheap, and keeps the arena's layout predictable).
    ctl[CTL_TX_BYTES] = (offset + length + 7) & ~7;
    this.queue(handle, ARENA_TX, offset, length, family, ip4, ip6, port, tag, overhead);
  }

  private queue(
    handle: number,
    arena: number,
    offset: number,
    length: number,
    family: 4 | 6,
    ip4: number,
    ip6: Uint32Array | undefined,
    port: number,
    tag: number,
    overhead: number,
  ): void {
    const ctl = this.ctl;
    const n = ctl[CTL_TX_COUNT]!;
    const m = this.txMeta;
    const base = n * TX_STRIDE;
    m[base + TX_HANDLE] = handle;
    m[base + TX_ARENA] = arena;
    m[base + TX_OFFSET] = offset;
    m[base + TX_LENGTH] = length;
    m[base + TX_PORT] = port;
    m[base + TX_FAMILY] = family;
    if (family === 4) {
      m[base + TX_ADDR] = ip4;
    } else if (ip6 !== undefined) {
      m[base + TX_ADDR] = ip6[0]!;
      m[base + TX_ADDR + 1] = ip6[1]!;
      m[base + TX_ADDR + 2] = ip6[2]!;
      m[base + TX_ADDR + 3] = ip6[3]!;
    }
    m[base + TX_TAG] = tag;
    m[base + TX_OVERHEAD] = overhead;
    ctl[CTL_TX_COUNT] = n + 1;
    if (n + 1 >= this.maxTx) this.flush();
  }

  /** Send everything queued (one sendmmsg per run of packets for the same socket). */
  flush(): void {
    if (this.destroyed || this.ctl[CTL_TX_COUNT] === 0) return;
    this.native.flush(this.ctx);
  }

  /** Packets accepted by the kernel with this tag. */
  sentPackets(tag: number): number {
    return this.stats[this.st.ST_PACKETS + tag]!;
  }

  sentBytes(tag: number): number {
    return this.stats[this.st.ST_BYTES + tag]!;
  }

  /** Sent packets per size bucket (sizeBounds.length + 1 entries). */
  sizeBucket(i: number): number {
    return this.stats[this.st.ST_BUCKETS + i]!;
  }

  drops(reason: BatchDropReason): number {
    return this.stats[this.dropIndex(reason)]!;
  }

  /** Indices into `stats`, for readers that fold differences. */
  packetsIndex(tag: number): number {
    return this.st.ST_PACKETS + tag;
  }

  bytesIndex(tag: number): number {
    return this.st.ST_BYTES + tag;
  }

  bucketIndex(bucket: number): number {
    return this.st.ST_BUCKETS + bucket;
  }

  dropIndex(reason: BatchDropReason): number {
    return this.st.ST_DROPS + BATCH_DROP_REASONS.indexOf(reason);
  }

  counters(): BatchIoCounters {
    const s = this.stats;
    const st = this.st;
    const c = st.ST_COUNTERS;
    return {
      recvCalls: s[c + st.C_RECV_CALLS]!,
      sendCalls: s[c + st.C_SEND_CALLS]!,
      packetsReceived: s[c + st.C_RX_PACKETS]!,
      batches: s[c + st.C_BATCHES]!,
      eagain: s[c + st.C_EAGAIN]!,
      backlogBytes: s[c + st.C_BACKLOG_BYTES]!,
      wakeups: s[c + st.C_WAKEUPS]!,
    };
  }

  /** Close every socket and stop polling; the context cannot be used afterwards. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.native.destroy(this.ctx);
  }
}
