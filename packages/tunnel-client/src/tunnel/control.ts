// The control connection: one tunnel's connection to its relay, over which the TurnClient's
// requests, the relay's answers and UDP peer data travel (RFC 8656). A dgram socket for
// turn:?transport=udp, TCP for transport=tcp, TLS for turns: (RFC 6062 needs a stream, so a TCP
// service always gets one). Over a stream, StreamFramer cuts the bytes into messages (RFC 8489
// §6.2.2; ChannelData padded to 4 bytes, RFC 8656 §12.5).
//
// What it tells the driver (ControlEvents): opened, each message, failed. It calls nothing else:
// the driver feeds the messages to the lifecycle. Once closed it reports nothing more.

import { createSocket, type Socket as DgramSocket } from "node:dgram";
import { isIP, connect as netConnect, type Socket } from "node:net";
import type { ConnectionOptions } from "node:tls";
import { StreamFramer } from "@turnpike/relay-core/client";
import { nodeTls } from "@turnpike/runtime-kit";
import type { ControlTransport } from "../uri.js";

export interface ControlEvents {
  /** The connection is open (for TLS: the handshake is done and the relay verified). */
  opened(): void;
  /** One datagram, or one frame cut from the stream: STUN or ChannelData. */
  message(bytes: Uint8Array): void;
  /** It failed, or the relay closed it. */
  failed(reason: string): void;
}

export interface ControlTarget {
  readonly transport: ControlTransport;
  readonly relayIp: string;
  readonly port: number;
  /** For transport "tls": how to verify the relay (tls-trust.ts). */
  readonly tls: () => ConnectionOptions;
}

const PADDING = new Uint8Array(3);

export class ControlConnection {
  private udp: DgramSocket | undefined;
  private stream: Socket | undefined;
  private closed = false;

  constructor(
    target: ControlTarget,
    private readonly events: ControlEvents,
  ) {
    if (target.transport === "udp") this.openDatagram(target);
    else this.openStream(target);
  }

  /**
   * `bytes`, then `payload` when given: a ChannelData header and its payload, handed to the
   * kernel as two buffers, never concatenated (padded on a stream).
   */
  send(bytes: Uint8Array, payload?: Uint8Array): void {
    if (this.udp !== undefined) {
      if (payload === undefined) this.udp.send(bytes);
      else this.udp.send([bytes, payload]);
      return;
    }
    const s = this.stream;
    if (s === undefined || s.destroyed) return;
    s.write(bytes);
    if (payload !== undefined) {
      s.write(payload);
      // RFC 8656 §12.5: over a stream ChannelData is padded to a multiple of 4.
      const pad = (4 - (payload.length & 3)) & 3;
      if (pad > 0) s.write(PADDING.subarray(0, pad));
    }
  }

  /**
   * Close it: gracefully when `release` (what was just sent, the Refresh with lifetime 0,
   * still leaves), at once otherwise.
   */
  close(release: boolean): void {
    this.closed = true;
    const udp = this.udp;
    this.udp = undefined;
    // A moment for the release (Refresh lifetime 0) just handed to the socket to leave.
    if (udp !== undefined) setImmediate(() => closeQuietly(udp));
    const stream = this.stream;
    this.stream = undefined;
    if (stream !== undefined) {
      if (release) stream.end();
      else stream.destroy();
    }
  }

  private openDatagram(target: ControlTarget): void {
    const sock = createSocket({ type: isIP(target.relayIp) === 6 ? "udp6" : "udp4" });
    this.udp = sock;
    sock.on("message", (msg) => {
      if (!this.closed) this.events.message(msg);
    });
    sock.on("error", (err) => this.fail(`control socket: ${err.message}`));
    sock.connect(target.port, target.relayIp, () => {
      if (!this.closed) this.events.opened();
    });
  }

  private openStream(target: ControlTarget): void {
    const tls = target.transport === "tls";
    const sock = tls
      ? nodeTls().connect(target.tls())
      : netConnect({ host: target.relayIp, port: target.port });
    sock.setNoDelay(true);
    this.stream = sock;
    const framer = new StreamFramer();
    sock.once(tls ? "secureConnect" : "connect", () => {
      if (!this.closed) this.events.opened();
    });
    sock.on("data", (chunk: Buffer) => {
      framer.push(chunk);
      // A message may make the driver close this connection: then the rest is not read.
      for (let f = framer.next(); f !== undefined && !this.closed; f = framer.next()) {
        this.events.message(f);
      }
      if (framer.error !== undefined) {
        this.fail("the relay sent bytes that are neither STUN nor ChannelData");
      }
    });
    sock.on("error", (err) => this.fail(`control connection: ${err.message}`));
    sock.on("close", () => this.fail("control connection closed by the relay"));
  }

  private fail(reason: string): void {
    if (!this.closed) this.events.failed(reason);
  }
}

export function closeQuietly(s: DgramSocket): void {
  try {
    s.close();
  } catch {
    // already closed
  }
}
