// The listening sockets the supervisor binds for its workers and keeps for the life of the
// process: a worker that dies leaves its socket (and its place in the SO_REUSEPORT group) to
// its successor, so the kernel's spread of clients over the workers never reshuffles. Each
// worker reads through a duplicate (udp-batch's adopt/dupFd).

import { bindUdp, closeFd, fdPort, tcpListen } from "@turnpike/udp-batch";
import type { RelayConfig, SocketAddress } from "../config/types.js";
import { listenFailure } from "../preflight.js";
import type { ListenFds } from "../shared/context.js";
import { LISTENER_BUFFER_BYTES } from "../udp/listener-buffers.js";

/**
 * One UDP and one TCP listening socket per worker for each --listen, one TCP socket per
 * worker for each --tls-listen: SO_REUSEPORT groups, TCP steered by source address. A port 0
 * becomes the first socket's port for the rest of its group.
 */
export function bindListenSockets(config: RelayConfig, count: number): ListenFds[] {
  const perWorker = Array.from({ length: count }, () => ({
    udp: [] as number[],
    tcp: [] as number[],
    tls: [] as number[],
  }));
  const group = (kind: "udp" | "tcp" | "tls", at: SocketAddress) => {
    let port = at.port;
    for (let w = 0; w < count; w++) {
      let fd: number;
      try {
        fd =
          kind === "udp"
            ? bindUdp({
                family: at.family,
                address: at.ip,
                port,
                reusePort: true,
                recvBufferSize: LISTENER_BUFFER_BYTES,
                sendBufferSize: LISTENER_BUFFER_BYTES,
              })
            : tcpListen({ family: at.family, address: at.ip, port, steerGroup: count });
      } catch (err) {
        throw listenFailure(kind === "tls" ? "--tls-listen" : "--listen", at, err);
      }
      perWorker[w]![kind].push(fd);
      if (port === 0) port = fdPort(fd);
    }
  };
  try {
    for (const at of config.listen) {
      group("udp", at);
      group("tcp", at);
    }
    for (const at of config.tlsListen) group("tls", at);
  } catch (err) {
    closeListenSockets(perWorker);
    throw err;
  }
  return perWorker;
}

export function closeListenSockets(perWorker: readonly ListenFds[]): void {
  for (const fds of perWorker) for (const fd of [...fds.udp, ...fds.tcp, ...fds.tls]) closeFd(fd);
}
