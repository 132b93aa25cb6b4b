// What this host says about the configuration, asked before anything starts (main.ts), so that a
// relay that cannot serve stops at once with one line naming the option instead of starting
// and failing every client:
//
//   --listen, --tls-listen   each address is free: a plain bind (no SO_REUSEPORT) of UDP and
//                            TCP there is refused while another relay's SO_REUSEPORT group (or
//                            any program) holds it, where the relay's own SO_REUSEPORT sockets
//                            would silently join that group and split its clients
//   --relay-ip               each relay address is an address of this host (a bind to IP:0)
//   --min-port.., pinned     ranges the kernel may hand out as ephemeral ports: a warning
//                            naming the sysctl that reserves them (runtime-kit's check)
//   --listen (UDP)           the kernel's caps on socket buffers below what the listeners
//                            ask for: a warning naming the sysctls (udp/listener-buffers.ts)
//   --listen, --min-port     connection tracking following the relay's flows: a warning
//                            naming the recipe that exempts them (conntrack.ts)
//
// The probes are closed before the relay binds; the listeners themselves report a bind that
// fails later (a program that took the address in between) through listenFailure().

import dgram from "node:dgram";
import net from "node:net";
import {
  ConfigError,
  ephemeralPortWarnings,
  type PortSysctls,
  type PortWarning,
  readPortSysctls,
} from "@turnpike/runtime-kit";
import type { RelayConfig, SocketAddress } from "./config/types.js";
import { formatSocketAddress } from "./config/values.js";
import {
  type ConntrackFinding,
  conntrackWarnings,
  probeConntrack,
  relayPortToProbe,
} from "./conntrack.js";
import { type BufferCaps, listenerBufferWarnings, readBufferCaps } from "./udp/listener-buffers.js";

export interface PreflightOptions {
  /** The kernel's port sysctls (default: read from /proc). */
  readonly sysctls?: PortSysctls;
  /** net.core.rmem_max and wmem_max (default: read from /proc). */
  readonly bufferCaps?: BufferCaps;
  /** What connection tracking does with the relay's datagrams (default: probed). */
  readonly conntrack?: ConntrackFinding | undefined;
}

/**
 * Throws a ConfigError naming the option when a listen address is taken or a relay address is
 * not this host's; returns the warnings to log (relay ports the kernel may give away, listener
 * buffers the kernel caps, flows the kernel tracks).
 */
export async function preflight(
  config: RelayConfig,
  options: PreflightOptions = {},
): Promise<PortWarning[]> {
  for (const at of config.listen) {
    if (at.port === 0) continue; // any free port: nothing to collide with
    await probe("--listen", at, "udp");
    await probe("--listen", at, "tcp");
  }
  for (const at of config.tlsListen) {
    if (at.port !== 0) await probe("--tls-listen", at, "tcp");
  }
  for (const ip of [config.relayIp4, config.relayIp6]) {
    if (ip !== undefined) await probeRelayIp(ip);
  }
  return [
    ...ephemeralPortWarnings(
      [
        { name: "relay ports", range: { min: config.minPort, max: config.maxPort } },
        ...(config.pinnedPorts !== undefined
          ? [{ name: "pinned ports", range: config.pinnedPorts }]
          : []),
      ],
      options.sysctls ?? readPortSysctls(),
    ),
    ...(config.listen.length > 0
      ? listenerBufferWarnings(options.bufferCaps ?? readBufferCaps())
      : []),
    ...conntrackWarnings(
      "conntrack" in options
        ? options.conntrack
        : await probeConntrack(conntrackProbePorts(config)),
    ),
  ];
}

/**
 * The ports whose datagrams the conntrack probe sends from: each UDP listener's (free until the
 * relay binds it) and one of the relay range.
 */
function conntrackProbePorts(config: RelayConfig): number[] {
  const listeners = config.listen.map((at) => at.port).filter((p) => p !== 0);
  return [...new Set(listeners), relayPortToProbe(config.minPort, config.maxPort)];
}

/**
 * A listener's bind failed: the one line that says which option and why, as a ConfigError
 * (exit 2) where the configuration or the host is the cause, else the error itself.
 */
export function listenFailure(
  option: "--listen" | "--tls-listen" | "--health-listen",
  at: SocketAddress,
  err: unknown,
): Error {
  // Node's errors and udp-batch's carry the same codes.
  const code = (err as NodeJS.ErrnoException).code;
  const shown = `${option} ${formatSocketAddress(at)}`;
  switch (code) {
    case "EADDRINUSE":
      return new ConfigError(
        `${shown}: address already in use (another relay or program is listening there)`,
      );
    case "EADDRNOTAVAIL":
      return new ConfigError(`${shown}: ${at.ip} is not an address of this host`);
    case "EACCES":
      return new ConfigError(
        `${shown}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)`,
      );
    default:
      return err instanceof Error ? err : new Error(String(err));
  }
}

/** A bind of `at` without SO_REUSEPORT, closed again; throws listenFailure's error. */
async function probe(
  option: "--listen" | "--tls-listen",
  at: SocketAddress,
  transport: "udp" | "tcp",
): Promise<void> {
  try {
    if (transport === "udp") await bindUdp(at.ip, at.port, at.family);
    else await listenTcp(at);
  } catch (err) {
    throw listenFailure(option, at, err);
  }
}

/**
 * Relay sockets bind on `ip`: it must be one of this host's addresses. (A relay address that
 * defaults to a --listen address was checked as that one, and one from the host's interfaces
 * is the host's: what can fail here is --relay-ip.)
 */
async function probeRelayIp(ip: string): Promise<void> {
  const family = ip.includes(":") ? 6 : 4;
  try {
    await bindUdp(ip, 0, family);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "bind failed";
    throw new ConfigError(
      `--relay-ip ${ip} is not an address of this host (${code}): relay sockets bind there; give an address of one of its interfaces, and --public-ip${family} for the address clients reach behind 1:1 NAT`,
    );
  }
}

function bindUdp(ip: string, port: number, family: 4 | 6): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({
      type: family === 6 ? "udp6" : "udp4",
      ipv6Only: family === 6,
    });
    socket.once("error", (err) => {
      socket.close();
      reject(err);
    });
    socket.bind({ address: ip, port, exclusive: true }, () => {
      socket.close(() => resolve());
    });
  });
}

function listenTcp(at: SocketAddress): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen({ host: at.ip, port: at.port, ipv6Only: at.family === 6, exclusive: true }, () =>
      server.close(() => resolve()),
    );
  });
}
