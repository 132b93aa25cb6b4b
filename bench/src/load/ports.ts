// Local ports for the generator's own sockets. The kernel's ephemeral range (32768-60999 on
// Linux) overlaps the relay range 49152-65535, so sockets the kernel numbers itself would
// steal ports the relay under test wants to allocate. The bench binds its UDP sockets below
// both ranges instead, walking a cursor and skipping ports already in use.
import dgram from "node:dgram";

const FIRST = 12000;
const LAST = 32000;
let cursor = FIRST + Math.floor(Math.random() * 4000);

function nextPort(): number {
  const port = cursor;
  cursor = cursor + 1 >= LAST ? FIRST : cursor + 1;
  return port;
}

/** A UDP socket on 127.0.0.1, bound low, with large kernel buffers so bursts are not dropped here. */
export async function lowPortSocket(bufferBytes = 1 << 20): Promise<dgram.Socket> {
  // A failed bind leaves a dgram socket unusable, so every attempt uses a new socket.
  for (let attempt = 0; attempt < 200; attempt++) {
    const sock = dgram.createSocket({
      type: "udp4",
      recvBufferSize: bufferBytes,
      sendBufferSize: bufferBytes,
    });
    const ok = await new Promise<boolean>((resolve) => {
      const onError = () => resolve(false);
      sock.once("error", onError);
      sock.bind(nextPort(), "127.0.0.1", () => {
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
  }
  throw new Error("no free local UDP port for the generator");
}
