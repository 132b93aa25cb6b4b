// A TCP service's pipe in the kernel (RFC 6062 §5.4 data connection <-> the private target):
// both plain-TCP sockets joined by udp-batch's SplicePipe (splice(2) through a kernel pipe each
// way, on the event loop). The bytes never enter the tunnel's memory and no JavaScript runs per
// chunk; the JavaScript pipe (tcp-pipes.ts) was the tunnel's busiest cost under load.
//
// Where: --tcp-splice auto (the default), the relay reached over plain TCP (a turns: data
// connection carries TLS records), the native module loads, and under the descriptor budget
// below. Anywhere else, and when the native pipe cannot be made (EMFILE), the JavaScript pipe.
//
// How it takes over and ends: udp-batch's SplicedSockets, the lifecycle relay-server's
// stream/spliced-pipe.ts shares. Node keeps both sockets and their fds but reads neither from
// here on; the native pipe works on duplicates. The peer's bytes that came with the
// ConnectionBind answer are written to the target first; the native pipe starts once that
// write is out, so the byte order holds. The native pipe passes each side's FIN on
// (half-close, RFC 9293 §3.6) and ends when both went, or on an error (a reset); then both
// sockets are destroyed. Either socket closed by the tunnel (tunnel stopped, allocation gone,
// relay connection lost: closeAll) closes the pipe and the other socket.
//
// Counting: the tunnel's traffic (bytes in/out, tunnel.bytes) is brought up to the native
// counters when GET /list or the metrics read it (SplicedSockets.sync), and when the pipe ends.

import type net from "node:net";
import { type Logger, openFilesLimit } from "@turnpike/runtime-kit";
import {
  batchIoAvailability,
  SPLICE_PIPE_FDS,
  SPLICE_POOL_IDLE_FDS,
  SplicedSockets,
} from "@turnpike/udp-batch";
import type { Traffic } from "./traffic.js";

/** Whether SplicePipe can be used in this process (Linux, native module built and loaded). */
export function spliceAvailable(): boolean {
  return batchIoAvailability().available;
}

/**
 * Spliced pipes this process may hold at once: a quarter of RLIMIT_NOFILE (the rest stays for
 * sockets, which a JavaScript pipe needs anyway), less the idle kernel pipes udp-batch's pool
 * keeps, each pipe counted at the most it holds (both directions mid-transfer). Unknown limit:
 * no practical bound.
 */
export function splicePipeBudget(limit: number | undefined = openFilesLimit()): number {
  if (limit === undefined) return 1_000_000;
  return Math.max(0, Math.floor((limit / 4 - SPLICE_POOL_IDLE_FDS) / SPLICE_PIPE_FDS));
}

/**
 * Join the relay's data connection and the target in the kernel (both connected plain-TCP
 * sockets, SplicedSockets.canJoin, read by `onread` only, so Node buffered nothing). `early`:
 * the peer's bytes that came with the ConnectionBind answer. Throws when the native pipe
 * cannot be made (EMFILE, ...): nothing has changed then, the caller pipes in JavaScript.
 */
export function spliceTcpPipe(
  data: net.Socket,
  target: net.Socket,
  early: Uint8Array,
  traffic: Traffic,
  log: Logger,
  /** Called once when the pipe is over (ended or closed), after its last count. */
  onDone: () => void,
): SplicedSockets {
  // data (a) -> target (b) is the tunnel's "in", target -> data its "out".
  const pipe = new SplicedSockets(data, target, {
    moved: (d) => {
      if (d.aToBBytes > 0) traffic.in(d.aToBBytes);
      if (d.bToABytes > 0) traffic.out(d.bToABytes);
    },
    done: (errno) => {
      if (errno !== undefined && errno !== 0) {
        log.debug("spliced pipe ended by a socket error", { errno });
      }
      onDone();
    },
  });
  if (early.length > 0) {
    traffic.in(early.length);
    target.write(early);
  }
  pipe.start();
  return pipe;
}
