// Loopback ports for interop tests.
//
// - connectionRefused(): whether anything listens for TCP on a loopback port.
// - freePort(): a port free for BOTH UDP and TCP on 127.0.0.1 (TURN listens on both), found by
//   binding it over TCP and UDP; both are closed before returning, so there is a window in which
//   another process could take it before the test's server binds it. The ports come from BELOW
//   the kernel's ephemeral range, walked by a cursor: the kernel never numbers a port there
//   itself (port-0 binds, outgoing connections), which is what took a chosen port before (CI
//   saw EADDRINUSE on a relay's --listen twice when these were port-0 picks from the ephemeral
//   range, where every outgoing connection on the host draws its port).
// - reservePortRange(): a relay port range disjoint from every other test worker's, claimed with
//   an O_EXCL lock file in the temp dir, so suites running in parallel (vitest projects run side
//   by side) never hand out the same relay ports. Ranges lie ABOVE the kernel's ephemeral range
//   (ip_local_port_range, 32768-60999 by default) so port-0 binds never land inside them.
import { createSocket } from "node:dgram";
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const LOOPBACK = "127.0.0.1";

function bindTcp(port: number): Promise<{ port: number; close: () => Promise<void> } | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(undefined));
    server.listen({ host: LOOPBACK, port, exclusive: true }, () => {
      const addr = server.address();
      const bound = typeof addr === "object" && addr ? addr.port : 0;
      resolve({ port: bound, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}

function bindUdp(port: number): Promise<{ port: number; close: () => Promise<void> } | undefined> {
  return new Promise((resolve) => {
    const sock = createSocket("udp4");
    sock.once("error", () => {
      sock.close();
      resolve(undefined);
    });
    sock.bind({ address: LOOPBACK, port, exclusive: true }, () => {
      resolve({
        port: sock.address().port,
        close: () => new Promise((r) => sock.close(() => r())),
      });
    });
  });
}

/** A TCP connection to 127.0.0.1:`port` is refused (nothing listens there): true. */
export function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: LOOPBACK, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

/**
 * Where freePort looks: the 12,000 ports below the kernel's ephemeral range (20768-32767 with
 * Linux's default 32768-60999), above the well-known services' ports tests start (3478, 5201,
 * 5432, ...). Relay port ranges of tests lie above the ephemeral range (reservePortRange).
 */
const FREE_SPAN = 12000;

function ephemeralLower(): number {
  try {
    const [lo] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/)
      .map(Number);
    return lo && lo > FREE_SPAN + 1024 ? lo : 32768;
  } catch {
    return 32768;
  }
}

const freeBase = ephemeralLower() - FREE_SPAN;
/** Starts at a place of its own per process, so parallel test processes rarely probe the same. */
let freeCursor = (process.pid * 7919 + Math.floor(Math.random() * FREE_SPAN)) % FREE_SPAN;

function nextFreeCandidate(): number {
  const port = freeBase + freeCursor;
  freeCursor = (freeCursor + 1) % (FREE_SPAN - 1); // port+1 stays in the span too (alsoNext)
  return port;
}

/** A port free for TCP and UDP on 127.0.0.1 (optionally also `port+1`, e.g. turnutils_peer). */
export async function freePort(opts: { alsoNext?: boolean } = {}): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const tcp = await bindTcp(nextFreeCandidate());
    if (!tcp) continue;
    const held = [tcp];
    const wanted = [bindUdp(tcp.port)];
    if (opts.alsoNext) wanted.push(bindTcp(tcp.port + 1), bindUdp(tcp.port + 1));
    let ok = true;
    for (const s of await Promise.all(wanted)) {
      if (s) held.push(s);
      else ok = false;
    }
    await Promise.all(held.map((h) => h.close()));
    if (ok) return tcp.port;
  }
  throw new Error(
    `no free loopback port for TCP+UDP after 200 attempts in ${freeBase}-${freeBase + FREE_SPAN - 1}`,
  );
}

export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

export interface PortRange {
  min: number;
  max: number;
  /** Frees the claim (also done automatically when the worker exits). */
  release(): void;
}

function ephemeralUpper(): number {
  try {
    const [, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/)
      .map(Number);
    return hi && hi < 65000 ? hi : 60999;
  } catch {
    return 60999;
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

const claimed = new Set<string>();
let exitHook = false;

/**
 * Claims `size` consecutive relay ports (default 200) no other live test process holds.
 * Blocks are cut from (ephemeral upper bound, 65535]; on a host whose ephemeral range reaches the
 * top, from 61000 up. A claim whose owner PID is dead is taken over.
 */
export function reservePortRange(size = 200): PortRange {
  const base = ephemeralUpper() + 1;
  const blocks = Math.floor((65536 - base) / size);
  if (blocks < 1) throw new Error(`no room for a ${size}-port block above ${base}`);
  const start = process.pid % blocks; // spread workers before probing
  for (let i = 0; i < blocks; i++) {
    const block = (start + i) % blocks;
    const min = base + block * size;
    const lock = join(tmpdir(), `turnpike-test-ports-${min}-${size}.lock`);
    if (tryClaim(lock)) {
      claimed.add(lock);
      if (!exitHook) {
        exitHook = true;
        process.on("exit", () => {
          for (const l of claimed) unlinkQuiet(l);
        });
      }
      return {
        min,
        max: min + size - 1,
        release() {
          claimed.delete(lock);
          unlinkQuiet(lock);
        },
      };
    }
  }
  throw new Error(`all ${blocks} relay port blocks of ${size} are claimed by live processes`);
}

function tryClaim(lock: string): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lock, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") return false;
      let owner = Number.NaN;
      try {
        owner = Number(readFileSync(lock, "utf8"));
      } catch {
        // vanished between open and read: retry
      }
      if (Number.isInteger(owner) && owner > 0 && pidAlive(owner)) return false;
      unlinkQuiet(lock); // stale claim from a dead worker
    }
  }
  return false;
}

function unlinkQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}
