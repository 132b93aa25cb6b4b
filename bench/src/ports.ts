// Local ports for everything the bench binds itself: the generator's UDP sockets and the
// listening ports of the services it starts (relays, iperf3, sshd, the tunnel's admin API).
//
// The kernel's ephemeral range (32768-60999 on Linux) overlaps the relay range 49152-65535, so
// ports the kernel numbers itself could steal ports the relay under test wants to allocate.
// The bench takes its ports below both ranges instead, walking one cursor shared by every
// caller (so two callers do not race for the same port) and skipping ports already in use.
import dgram from "node:dgram";
import net from "node:net";

const FIRST = 12000;
const LAST = 32000;
/**
 * The bench's own local ports, FIRST..LAST - 1 (bench/native/turnpike-setupgen.c takes the same
 * ones for its setup sockets): a relay port range must stay clear of them, or the relay's binds
 * fail on ports the generator holds and every retry is counted against the server under test.
 */
export const BENCH_LOCAL_PORTS = { first: FIRST, last: LAST - 1 } as const;
let cursor = FIRST + Math.floor(Math.random() * 4000);

function nextPort(): number {
  const port = cursor;
  cursor = cursor + 1 >= LAST ? FIRST : cursor + 1;
  return port;
}

const ATTEMPTS = 200;

/** Binds a UDP socket on 127.0.0.1:port; undefined (socket closed) when the port is taken. */
async function bindUdp(port: number, bufferBytes?: number): Promise<dgram.Socket | undefined> {
  // A failed bind leaves a dgram socket unusable, so every attempt uses a new socket.
  const sock = dgram.createSocket({
    type: "udp4",
    ...(bufferBytes ? { recvBufferSize: bufferBytes, sendBufferSize: bufferBytes } : {}),
  });
  const ok = await new Promise<boolean>((resolve) => {
    const onError = () => resolve(false);
    sock.once("error", onError);
    sock.bind(port, "127.0.0.1", () => {
      sock.off("error", onError);
      resolve(true);
    });
  });
  if (ok) return sock;
  try {
    sock.close();
  } catch {
    // never bound
  }
  return undefined;
}

/** True when a TCP listener could take 127.0.0.1:port (it is closed again at once). */
function tcpPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/**
 * A UDP socket on 127.0.0.1, bound low, with large kernel buffers so bursts are not dropped
 * here (the generator's sockets).
 */
export async function lowPortSocket(bufferBytes = 1 << 20): Promise<dgram.Socket> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const sock = await bindUdp(nextPort(), bufferBytes);
    if (sock) return sock;
  }
  throw new Error("no free local UDP port for the generator");
}

/**
 * A port on 127.0.0.1 below the ephemeral and relay ranges that is free for every listed
 * protocol: ["udp", "tcp"] for a relay's listener (TURN over both), ["tcp"] for iperf3, sshd
 * or the tunnel's admin API. Free when asked: the caller binds it right after.
 */
export async function freePort(protocols: readonly ("udp" | "tcp")[]): Promise<number> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const port = nextPort();
    let free = true;
    for (const p of protocols) {
      if (p === "tcp") free = await tcpPortFree(port);
      else {
        const sock = await bindUdp(port);
        free = sock !== undefined;
        if (sock) await new Promise<void>((resolve) => sock.close(() => resolve()));
      }
      if (!free) break;
    }
    if (free) return port;
  }
  throw new Error(`no free local ${protocols.join("+").toUpperCase()} port`);
}

/** A free TCP port (see `freePort`). */
export function freeTcpPort(): Promise<number> {
  return freePort(["tcp"]);
}
