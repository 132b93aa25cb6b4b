// TCP and TLS listeners (RFC 8656 §3.1): where a client connection is accepted, admitted
// (admission.ts) and, for TURNS, given a fixed deadline for its handshake before it becomes a
// client connection (clients.ts). A reload hands the TLS listeners a new certificate and key
// (setSecureContext): handshakes from then on use them, connections already open keep theirs.
//
// Workers share each listening address with SO_REUSEPORT. Where the native module loads, the
// supervisor's sockets also steer by source address, so an RFC 6062 data connection reaches
// the worker of its control connection (udp-batch's tcpListen); otherwise the kernel's
// 4-tuple hash spreads them and ConnectionBinds are handed over (shared/worker-link.ts).

import net from "node:net";
import tls from "node:tls";
import { type ListenerId, listenerId } from "@turnpike/relay-core";
import type { Logger } from "@turnpike/runtime-kit";
import { batchIoAvailability, dupFd, tcpListen } from "@turnpike/udp-batch";
import type { SocketAddress } from "../config/types.js";
import type { WorkerContext } from "../shared/context.js";
import type { Admission, Admissions } from "./admission.js";
import type { StreamClients } from "./clients.js";
import type { ProxyGate } from "./proxy-gate.js";

/**
 * Upper bound on a TLS handshake (a few round trips, even on a slow mobile link), counted from
 * the TCP accept whatever arrives meanwhile: a handshake dribbled a byte at a time ends too.
 */
const TLS_HANDSHAKE_MS = 10_000;

export class StreamListeners {
  private readonly servers: net.Server[] = [];
  private readonly tlsServers: tls.Server[] = [];
  /** Connections the PROXY gate admitted, on their way to the TLS server (tlsFront). */
  private readonly proxied = new WeakMap<net.Socket, Admission>();
  /** TLS handshakes under way by 4-tuple ("addr|port|localPort"), with their deadline. */
  private readonly handshakes = new Map<
    string,
    { readonly admission: Admission; readonly raw: net.Socket; readonly timer: NodeJS.Timeout }
  >();

  constructor(
    private readonly admissions: Admissions,
    private readonly clients: StreamClients,
    private readonly log: Logger,
    /** --tcp-idle-timeout, in ms: a TLS handshake gets at most this too. */
    private readonly idleTimeoutMs: number,
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
    const server =
      transport === "tls"
        ? tls.createServer(
            // The handshake deadline is ours (onTlsAccept): Node's is off.
            { ...tlsOptions, handshakeTimeout: 0, allowHalfOpen: true },
            (socket) => this.onTlsSecure(listener, socket),
          )
        : // Half-open: an RFC 6062 data connection may send FIN after its request and still
          // be owed the peer's reply; each side's end is forwarded, not imposed.
          net.createServer({ noDelay: true, allowHalfOpen: true }, (socket) => {
            if (this.gate.trusts(socket.remoteAddress)) {
              this.gate.accept(socket, (admission) => {
                this.clients.open(listener, "tcp", socket, admission);
                socket.resume(); // paused by the gate, the bytes after the header put back
              });
              return;
            }
            const admission = this.admissions.admit(socket);
            if (admission) this.clients.open(listener, "tcp", socket, admission);
          });
    // TLS behind --proxy-protocol: a plain listener reads the PROXY header, then hands the
    // socket to the TLS server (proxy-gate.ts), which never listens itself.
    const front =
      server instanceof tls.Server && this.gate.enabled ? this.tlsFront(server) : server;
    this.servers.push(front);
    if (server instanceof tls.Server) this.tlsServers.push(server);
    server.on("error", (err) =>
      this.log.warn(`${transport} listener error`, { error: err.message }),
    );
    if (transport === "tls") {
      // The TCP accept, before any TLS byte: admission and the handshake's own clock.
      server.on("connection", (raw: net.Socket) => this.onTlsAccept(raw));
      // With a listener attached Node leaves the socket open: a failed handshake would
      // otherwise hold its connection until the client gives up.
      server.on("tlsClientError", (err, socket) => {
        this.log.debug("tls handshake failed", { error: err.message });
        socket.destroy();
      });
    }
    // Plain TCP on a TURN port may still start a TLS handshake or garbage: the framer rejects it.
    const at = this.listenTarget(addr, transport, listener);
    return new Promise((resolve, reject) => {
      front.once("error", reject);
      front.listen(at, () => {
        front.off("error", reject);
        const a = front.address() as net.AddressInfo;
        resolve({ ip: a.address, port: a.port, family: addr.family });
      });
    });
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
   * The listener in front of TLS server `tls` under --proxy-protocol: a trusted balancer's
   * connection reaches the TLS server once its PROXY header is read (admitted by the gate),
   * any other at once.
   */
  private tlsFront(server: tls.Server): net.Server {
    const front = net.createServer({ noDelay: true, allowHalfOpen: true }, (raw) => {
      if (!this.gate.trusts(raw.remoteAddress)) {
        server.emit("connection", raw);
        return;
      }
      this.gate.accept(raw, (admission) => {
        // The socket stays paused: the TLS socket reads what the gate put back, then the
        // handle itself (resuming the raw socket would take the handshake's bytes from it).
        this.proxied.set(raw, admission);
        server.emit("connection", raw);
      });
    });
    front.on("error", (err) => this.log.warn("tls listener error", { error: err.message }));
    return front;
  }

  /** TURNS: the TCP accept. The handshake gets a fixed deadline, whatever bytes arrive. */
  private onTlsAccept(raw: net.Socket): void {
    // Admitted already when the PROXY gate read its header (tlsFront).
    const admission = this.proxied.get(raw) ?? this.admissions.admit(raw);
    this.proxied.delete(raw);
    if (admission === undefined) return;
    const key = fourTuple(raw);
    const timer = setTimeout(
      () => {
        this.handshakes.delete(key);
        this.log.debug("tls handshake timed out", { remote: key });
        raw.destroy();
      },
      Math.min(this.idleTimeoutMs, TLS_HANDSHAKE_MS),
    );
    this.handshakes.set(key, { admission, raw, timer });
    raw.once("close", () => {
      const pending = this.handshakes.get(key);
      if (pending?.raw !== raw) return;
      clearTimeout(pending.timer);
      this.handshakes.delete(key);
    });
  }

  /** TURNS: the handshake completed in time. */
  private onTlsSecure(listener: ListenerId, socket: tls.TLSSocket): void {
    const key = fourTuple(socket);
    const pending = this.handshakes.get(key);
    if (pending === undefined) {
      socket.destroy(); // its deadline passed as the handshake finished
      return;
    }
    clearTimeout(pending.timer);
    this.handshakes.delete(key);
    this.clients.open(listener, "tls", socket, pending.admission);
  }

  /**
   * The TLS certificate chain and key for handshakes from now on, on every TLS listener
   * (tls.Server#setSecureContext). Throws when the pair does not load; the listeners keep the
   * pair they had then.
   */
  setSecureContext(pair: { readonly cert: string; readonly key: string }): void {
    tls.createSecureContext(pair);
    for (const server of this.tlsServers)
      server.setSecureContext({ cert: pair.cert, key: pair.key });
  }

  /** Stop listening; handshakes under way end. */
  async close(): Promise<void> {
    this.gate.close();
    for (const h of this.handshakes.values()) h.raw.destroy();
    await Promise.all(
      this.servers.map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))),
    );
  }
}

function fourTuple(socket: net.Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localPort}`;
}
