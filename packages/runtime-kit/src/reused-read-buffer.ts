// Reading a TCP socket into one reused buffer (net.Socket's public `onread` option) instead of a
// fresh 64 KiB Buffer per read.
//
// Why: a byte pipe (RFC 6062 data connections, the tunnel's target connections) reads ~10,000
// times a second at a few Gbit/s. Node's default read path allocates a new 64 KiB backing store
// for each read; a profile of turnpike-tunnel under iperf3 showed that as page faults and memory
// cgroup charging in the kernel, and V8 counts the buffers as external memory, so every 64 MB
// read starts a major GC (measured: ~15 Mark-Compacts a second, a fifth of a core in marking).
// With the bytes read into the same memory every time, none of that happens.
//
// The catch: a write that cannot finish at once keeps referring to the memory it was given.
// So after handing a read to `to.write()`, the forwarder checks whether the write is still
// pending (`writableLength > 0`) and, if so, `retain()`s the buffer: the next read goes into a
// fresh one and the old one belongs to the pending write (then freed by GC as before). When the
// destination keeps up, which is the common case, the buffer is never replaced.

import type { Socket } from "node:net";

/** Node's own read size for stream sockets (libuv's suggested size). */
export const READ_BUFFER_BYTES = 64 * 1024;

export class ReusedReadBuffer {
  private buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  private retained = false;
  /**
   * What to do with each read: `chunk` is a view of the buffer, valid only during the call
   * (copy it, or write it and call `retain()` if the write stays pending). Return false to
   * pause the socket (resume it with `socket.resume()`).
   */
  sink: (chunk: Buffer) => boolean = () => true;
  /** Replacements made because a write still held the buffer (for tests and profiling). */
  replaced = 0;

  /** Pass as `onread` to `net.connect()` / `new net.Socket()`. */
  readonly onread = {
    // Called once at start and after every read: the buffer for the next read.
    buffer: (): Buffer => {
      if (this.retained) {
        this.buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
        this.retained = false;
        this.replaced++;
      }
      return this.buffer;
    },
    callback: (bytes: number, buffer: Uint8Array): boolean =>
      this.sink((buffer as Buffer).subarray(0, bytes)),
  };

  /** The last chunk is still referenced (a pending write): do not read into this memory again. */
  retain(): void {
    this.retained = true;
  }
}

/**
 * Writes `chunk` (a read of `from`, possibly a view of `reads`' buffer) to `to` with ws-style
 * backpressure: returns false (pause `from`) while `to` buffers more than its high-water mark,
 * and resumes `from` on 'drain'.
 */
export function forwardChunk(
  chunk: Buffer,
  from: Socket,
  to: Socket,
  reads: ReusedReadBuffer | undefined,
): boolean {
  const flushed = to.write(chunk);
  if (reads !== undefined && to.writableLength > 0) reads.retain();
  if (flushed) return true;
  to.once("drain", () => from.resume());
  return false;
}
