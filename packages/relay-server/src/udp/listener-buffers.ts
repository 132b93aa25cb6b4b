// The UDP listeners' socket buffers, and the kernel's caps on them.
//
// A listening socket takes every client's traffic, so a burst while the event loop is busy (GC,
// a batch of Allocates) must fit in the kernel's queue rather than be dropped there: the relay
// asks SO_RCVBUF and SO_SNDBUF of LISTENER_BUFFER_BYTES for each UDP listener (engine/driver.ts
// for one engine, workers/listen-sockets.ts for the workers' shared sockets). Linux caps such a
// request at net.core.rmem_max / wmem_max without an error (socket(7); SO_RCVBUFFORCE would
// need CAP_NET_ADMIN, which the systemd unit does not give), and the distributions' default is
// 212,992 bytes: a twentieth of what the relay asks for, and the datagrams a burst brings beyond
// it are dropped by the kernel before the relay sees them. So the preflight (preflight.ts) says
// so at start, one warning naming both sysctls and the sysctl.d file that raises them
// (deploy/sysctl/92-turnpike-udp-buffers.conf). Pure but for readBufferCaps.

import { type PortWarning, readSysctlNumbers } from "@turnpike/runtime-kit";

/** SO_RCVBUF and SO_SNDBUF the relay asks for each UDP listener. */
export const LISTENER_BUFFER_BYTES = 4 << 20;

/** net.core.rmem_max and wmem_max in bytes; undefined where they could not be read. */
export interface BufferCaps {
  readonly rmemMax?: number;
  readonly wmemMax?: number;
}

const PROC = {
  rmemMax: "/proc/sys/net/core/rmem_max",
  wmemMax: "/proc/sys/net/core/wmem_max",
} as const;

/** Reads both caps from /proc; what cannot be read (not Linux, no /proc) is left out. */
export function readBufferCaps(read?: (path: string) => string): BufferCaps {
  return readSysctlNumbers(PROC, read);
}

/**
 * One warning when the kernel caps the listeners' buffers below what the relay asks for,
 * naming what each gets and the sysctls that raise them; none when both fit or could not be
 * read.
 */
export function listenerBufferWarnings(
  caps: BufferCaps,
  asked: number = LISTENER_BUFFER_BYTES,
): PortWarning[] {
  const short = (["rmemMax", "wmemMax"] as const).filter((k) => {
    const cap = caps[k];
    return cap !== undefined && cap < asked;
  });
  if (short.length === 0) return [];
  const sysctl = (k: "rmemMax" | "wmemMax") =>
    k === "rmemMax" ? "net.core.rmem_max" : "net.core.wmem_max";
  return [
    {
      msg: `the kernel caps the UDP listeners' socket buffers below the ${asked} bytes the relay asks for (${short.map(sysctl).join(", ")}): a burst beyond them is dropped before the relay reads it`,
      fields: {
        asked,
        ...(caps.rmemMax !== undefined ? { rmemMax: caps.rmemMax } : {}),
        ...(caps.wmemMax !== undefined ? { wmemMax: caps.wmemMax } : {}),
        raise: `sysctl -w ${short.map((k) => `${sysctl(k)}=${asked}`).join(" ")}`,
        file: "deploy/sysctl/92-turnpike-udp-buffers.conf",
      },
    },
  ];
}
