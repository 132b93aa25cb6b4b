// TCP and TLS listeners (RFC 8656 §3.1): where a client connection is accepted, admitted
// (admission.ts) and, for TURNS, handed to its handshake (tls-handshakes.ts: bounded in number,
// per source and in time) before it becomes a client connection (clients.ts). A reload hands
// the TLS listeners a new certificate and key (setSecureContext): handshakes from then on use
// them, connections already open keep theirs. Behind a load balancer (--proxy-protocol) a
// trusted balancer's connection is admitted once its PROXY header named the client
// (proxy-gate.ts), then goes on the same way.
//
// Workers share each listening address with SO_REUSEPORT. Where the native module loads, the
// supervisor's sockets also steer by source address, so an RFC 6062 data connection reaches
// the worker of its control connection (udp-batch's tcpListen); otherwise the kernel's
// 4-tuple hash spreads them and ConnectionBinds are handed over (shared/worker-link.ts).

import net from "node:net";
import type tls from "node:tls";
import { type ListenerId, listenerId } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, dupFd, tcpListen } from "@turnpike/udp-batch";
import type { SocketAddress } from "../config/types.js";
import type { WorkerContext } from "../shared/context.js";
import type { Admission, Admissions } from "./admission.js";
import type { StreamClients } from "./clients.js";
import type { ProxyGate } from "./proxy-gate.js";
import type { TlsHandshakes } from "./tls-handshakes.js";

export class StreamListeners {
  private readonly servers: net.Server[] = [];

  constructor(
    private readonly admissions: Admissions,
    private readonly clients: StreamClients,
    private readonly log: Logger,
    /** TURNS handshakes under way, bounded (tls-handshakes.ts). */
    private readonly handshakes: TlsHandshakes,
    /** How many --listen addresses come before the --tls-listen ones (listener ids). */
    private readonly tcpListeners: number,
    private readonly worker: WorkerContext | undefined,
    /** --proxy-protocol: connections from trusted balancers start with a PROXY header. */
    private readonly gate: ProxyGate,
  ) {}

  /** Listen on `addr`; resolves with the bound address (the real port for port 0). */
  listen(
    addr: SocketAddress,
    transport: "tcp" | "tls",
    tlsOptions?: tls.TlsOptions,
  ): Promise<SocketAddress> {
    const listener = listenerId(this.servers.length);
    if (tlsOptions !== undefined) this.handshakes.setSecureContext(tlsOptions);
    // Half-open: an RFC 6062 data connection may send FIN after its request and still be owed
    // the peer's reply; each side's end is forwarded, not imposed. A TLS listener is a TCP one
    // whose connections go through their handshake first (tls-handshakes.ts builds the TLS
    // socket, so the handshake is bounded from the TCP accept, before any TLS byte).
    const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
      if (this.gate.trusts(socket.remoteAddress)) {
        this.gate.accept(socket, (admission) => {
          this.opened(listener, transport, socket, admission);
          // Paused by the gate, the bytes after the header put back. A TLS socket reads them
          // itself, then the handle (resuming the TCP socket would take them from it).
          if (transport === "tcp") socket.resume();
        });
        return;
      }
      const admission = this.admissions.admit(socket);
      if (admission !== undefined) this.opened(listener, transport, socket, admission);
    });
    this.servers.push(server);
    server.on("error", (err) =>
      this.log.warn(`${transport} listener error`, { error: err.message }),
    );
    // Plain TCP on a TURN port may still start a TLS handshake or garbage: the framer rejects it.
    const at = this.listenTarget(addr, transport, listener);
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(at, () => {
        server.off("error", reject);
        const a = server.address() as net.AddressInfo;
        resolve({ ip: a.address, port: a.port, family: addr.family });
      });
    });
  }

  /** An admitted connection: a TCP client, or a TLS one once its handshake completes. */
  private opened(
    listener: ListenerId,
    transport: "tcp" | "tls",
    socket: net.Socket,
    admission: Admission,
  ): void {
    if (transport === "tcp") this.clients.open(listener, "tcp", socket, admission);
    else
      this.handshakes.begin(socket, admission, (secure) =>
        this.clients.open(listener, "tls", secure, admission),
      );
  }

  /** Where a listener binds: its address, or the supervisor's socket for this worker. */
  private listenTarget(
    addr: SocketAddress,
    transport: "tcp" | "tls",
    listener: ListenerId,
  ): net.ListenOptions {
    const w = this.worker;
    if (w === undefined) return { host: addr.ip, port: addr.port, ipv6Only: addr.family === 6 };
    // The supervisor's socket: this worker owns (and closes) a duplicate of it.
    const fds = w.listenFds;
    const kept = transport === "tcp" ? fds?.tcp[listener] : fds?.tls[listener - this.tcpListeners];
    if (kept !== undefined) return { fd: dupFd(kept) } as net.ListenOptions;
    if (batchIoAvailability().available) {
      const fd = tcpListen({
        family: addr.family,
        address: addr.ip,
        port: addr.port,
        steerGroup: w.count,
      });
      return { fd } as net.ListenOptions;
    }
    return {
      host: addr.ip,
      port: addr.port,
      ipv6Only: addr.family === 6,
      ...({ reusePort: true } as object),
    };
  }

  /**
   * The TLS certificate chain and key for handshakes from now on, on every TLS listener
   * (tls.Server#setSecureContext). Throws when the pair does not load; the listeners keep the
   * pair they had then.
   */
  setSecureContext(pair: { readonly cert: string; readonly key: string }): void {
    this.handshakes.setSecureContext({ cert: pair.cert, key: pair.key });
  }

  /** Stop listening; handshakes under way end. */
  async close(): Promise<void> {
    this.gate.close();
    this.handshakes.closeAll();
    await Promise.all(
      this.servers.map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))),
    );
  }
}
