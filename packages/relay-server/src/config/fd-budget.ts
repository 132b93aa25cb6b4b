// The process's file descriptors (RLIMIT_NOFILE), shared out when the configuration is resolved
// so that no listener's clients can take the descriptors the relay needs for relay sockets. With
// the defaults (--max-connections 10000) and a 1,024 limit, 1,100 idle connections to the
// health port made every UDP Allocate answer 508 and stopped TCP accepts: the kernel had no
// descriptor left for a relay socket or an accept.
//
//   - a quarter of the limit (at least RESERVED_MIN) is kept for what is not a client
//     connection: relay sockets (one per UDP allocation and family), RFC 6062 peer
//     connections, listeners, the workers' own;
//   - --health-max-connections gets at most a sixteenth (at least 8);
//   - TCP/TLS client connections (--max-connections, TLS handshakes included) the rest.
//
// An RFC 6062 pipe spliced in the kernel (--tcp-splice auto, stream/spliced-pipe.ts) holds up
// to SPLICE_PIPE_FDS descriptors beyond its two sockets (two duplicates, and a kernel pipe per
// direction while it has bytes in flight, borrowed from udp-batch's pool, which keeps up to
// SPLICE_POOL_IDLE_FDS of idle ones). They come out of the reserve: spliced pipes, each counted
// at its most, and the idle pool may take at most half of it (splicePipeBudget), and a pipe
// beyond that runs in JavaScript, which holds no descriptor of its own. So relay sockets and
// peer connections keep at least the other half whatever the TCP traffic.
//
// udp-batch's socket pool (native/socket_pool.c) holds up to one unbound UDP socket per 256
// descriptors of the limit (at most 64 per family) ahead of time: the relay sockets of the next
// allocations, made early, so they come out of the same reserve.
//
// A limit lower than the options ask for is a warning naming the option, the limit and how to
// raise it. The limit is runtime-kit's openFilesLimit (the soft limit, which Node raised to the
// hard one when it started, as coturn does; there is no setrlimit in Node to do more); where it
// cannot be read (not Linux) nothing is lowered.

import { SPLICE_PIPE_FDS, SPLICE_POOL_IDLE_FDS } from "@turnpike/udp-batch";

/** Descriptors kept for relay sockets and the process itself, at the least. */
export const RESERVED_MIN = 128;
/** Health connections, at the least, whatever the limit. */
const HEALTH_MIN = 8;
/** Client connections, at the least, whatever the limit. */
const CONNECTIONS_MIN = 16;

/**
 * Spliced pipes this process may hold at once within `limit` (RLIMIT_NOFILE): half the reserve
 * above. Without a known limit, a number no relay reaches.
 */
export function splicePipeBudget(limit: number | undefined): number {
  if (limit === undefined) return 1_000_000;
  const reserved = Math.max(RESERVED_MIN, Math.floor(limit / 4));
  return Math.max(0, Math.floor((reserved / 2 - SPLICE_POOL_IDLE_FDS) / SPLICE_PIPE_FDS));
}

export interface FdBudget {
  readonly maxConnections: number;
  readonly healthMaxConnections: number;
}

/** --max-connections and --health-max-connections within `limit`, with a warning when lowered. */
export function budgetFds(
  asked: FdBudget,
  limit: number | undefined,
  warnings: string[],
): FdBudget {
  if (limit === undefined) return asked;
  const reserved = Math.max(RESERVED_MIN, Math.floor(limit / 4));
  const healthMaxConnections = Math.min(
    asked.healthMaxConnections,
    Math.max(HEALTH_MIN, Math.floor(limit / 16)),
  );
  const maxConnections = Math.min(
    asked.maxConnections,
    Math.max(CONNECTIONS_MIN, limit - reserved - healthMaxConnections),
  );
  const lowered: string[] = [];
  if (maxConnections < asked.maxConnections) {
    lowered.push(`--max-connections ${asked.maxConnections} to ${maxConnections}`);
  }
  if (healthMaxConnections < asked.healthMaxConnections) {
    lowered.push(
      `--health-max-connections ${asked.healthMaxConnections} to ${healthMaxConnections}`,
    );
  }
  if (lowered.length > 0) {
    warnings.push(
      `lowered ${lowered.join(" and ")}: this process may open ${limit} files (RLIMIT_NOFILE) and keeps ${reserved} for relay sockets; raise the limit for more (systemd LimitNOFILE=, ulimit -n, a container's nofile ulimit)`,
    );
  }
  return { maxConnections, healthMaxConnections };
}
