// Handing a Node TCP socket to SplicePipe: which sockets have a plain-TCP fd to give, and how
// Node stops reading one for good. Both the relay's RFC 6062 pipes and turnpike-tunnel's TCP
// pipes do exactly this before SplicePipe takes the bytes over.
//
// Node's net.Socket keeps its libuv handle (and fd) in `_handle`, a TCPWrap; nothing public
// exposes the fd or stops a socket's reading for good, so this reaches into those two fields
// (checked: a socket without them is refused and piped in JavaScript).
import net from "node:net";
import { Duplex } from "node:stream";

/** The parts of a net.Socket's libuv handle used here (Node's TCPWrap). */
interface TcpHandle {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
}

/**
 * The fd of a connected plain-TCP net.Socket, or undefined: not a net.Socket (a connection
 * another worker holds), a TLS socket (its bytes are TLS records: a subclass, so the exact
 * class is checked), destroyed, or without a TCP handle.
 */
export function tcpSocketFd(socket: unknown): number | undefined {
  if (!(socket instanceof net.Socket) || socket.constructor !== net.Socket || socket.destroyed) {
    return undefined;
  }
  const handle = (socket as unknown as { _handle?: TcpHandle })._handle;
  const fd = handle?.fd;
  return typeof fd === "number" && fd >= 0 && typeof handle?.readStop === "function"
    ? fd
    : undefined;
}

/**
 * Node stops reading `socket` for good: its handle stops now, and nothing starts it again
 * (Readable's _read, which resume() and read() reach, and net's own resume() and read(), which
 * start an `onread` socket's handle directly). What Node read before stays in its buffer;
 * writing and closing the socket work as before.
 */
export function stopNodeReading(socket: net.Socket): void {
  const handle = (socket as unknown as { _handle: TcpHandle })._handle;
  socket.pause();
  handle.reading = false;
  handle.readStop?.();
  const inert = socket as unknown as {
    _read: () => void;
    resume: () => net.Socket;
    read: (n?: number) => unknown;
  };
  inert._read = () => {};
  inert.resume = () => socket;
  inert.read = (n?: number) => Duplex.prototype.read.call(socket, n);
}
