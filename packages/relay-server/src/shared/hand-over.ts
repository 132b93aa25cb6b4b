// RFC 6062 across workers. A client's data connection carries a ConnectionBind for a
// CONNECTION-ID; the peer connection it names lives on the worker that issued the id (ids
// encode their owner: id % workers). The kernel steers every connection of one client host to
// the same worker (tcpListen's source-address filter), so the ConnectionBind normally arrives
// where the peer connection is. When it does not (a client behind several egress addresses,
// or the dgram fallback without steering), the worker that accepted the data connection hands
// it over: it keeps the socket and relays its bytes to the owner, which runs the
// ConnectionBind and the RFC 6062 §5.4 pipe as for a local connection. Node cannot move a
// socket between threads, so the bytes travel as messages, with explicit flow control:
//
//   holder -> owner   adopt (the ConnectionBind frame and any bytes after it), data, end, close
//   owner  -> holder  adopted, write, end, destroy, pause, resume, counted
//   both ways         ack: the other side finished with a chunk (written, or consumed)
//
// The holder admitted the connection, so it keeps counting it against its source
// (--max-connections-per-ip) until the owner reports that it authenticated (`counted`: a
// ConnectionBind that succeeded, an allocation), exactly as one engine would: a ConnectionBind
// the owner refuses leaves the connection counted. `adopted` tells the holder someone answers
// for the connection now; without it the holder closes the connection after a deadline.
//
// The owner sees a RemoteConnection: a Duplex whose writes complete when the holder's socket
// took them, so the ws-style backpressure of stream/clients.ts works unchanged. Both are a
// ConnectionSocket, the part of a socket a client connection needs.

import { Duplex } from "node:stream";
import type { ListenerId } from "@turnpike/relay-core";

export type HandOverMessage =
  | {
      readonly k: "adopt";
      readonly h: number;
      readonly transport: "tcp" | "tls";
      /** Where the holder accepted it (a structured clone keeps the number). */
      readonly listener: ListenerId;
      readonly address: string;
      readonly port: number;
      readonly bytes: Uint8Array;
    }
  | { readonly k: "data"; readonly h: number; readonly chunk: Uint8Array }
  | { readonly k: "write"; readonly h: number; readonly chunk: Uint8Array }
  | { readonly k: "adopted"; readonly h: number }
  | { readonly k: "counted"; readonly h: number; readonly counted: boolean }
  | { readonly k: "ack"; readonly h: number }
  | { readonly k: "end"; readonly h: number }
  | { readonly k: "close"; readonly h: number }
  | { readonly k: "destroy"; readonly h: number }
  | { readonly k: "pause"; readonly h: number }
  | { readonly k: "resume"; readonly h: number };

/**
 * What the relay does with a client connection's socket: a local net.Socket (or TLSSocket), or
 * a RemoteConnection standing for one another worker holds.
 */
export interface ConnectionSocket {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  readonly destroyed: boolean;
  readonly writableLength: number;
  write(chunk: Uint8Array): boolean;
  cork(): void;
  uncork(): void;
  end(): this;
  destroy(): this;
  pause(): this;
  resume(): this;
  isPaused(): boolean;
  setNoDelay(noDelay?: boolean): this;
  on(event: "data", listener: (chunk: Buffer) => void): this;
  on(event: "end" | "close" | "drain", listener: () => void): this;
  on(event: "error", listener: (err: Error) => void): this;
  once(event: "end" | "close" | "drain", listener: () => void): this;
  once(event: "error", listener: (err: Error) => void): this;
}

/** Bytes in flight to the other side before the holder stops reading its socket. */
const WINDOW_BYTES = 1 << 20;

type Send = (message: HandOverMessage) => void;

/**
 * The owner's view of a connection another worker holds: a ConnectionSocket like the socket of
 * a local client connection.
 */
export class RemoteConnection extends Duplex implements ConnectionSocket {
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Write callbacks waiting for the holder's ack, in order. */
  private readonly pendingWrites: ((err?: Error | null) => void)[] = [];
  private remotePaused = false;

  constructor(
    private readonly h: number,
    private readonly send: Send,
    address: string,
    port: number,
  ) {
    super({ allowHalfOpen: true, highWaterMark: 1 << 16 });
    this.remoteAddress = address;
    this.remotePort = port;
  }

  /** A message from the holder. */
  receive(m: HandOverMessage): void {
    switch (m.k) {
      case "data":
        // Tell the holder we took it; stop its reading while our reader is behind.
        this.send({ k: "ack", h: this.h });
        if (!this.push(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.length))) {
          this.remotePaused = true;
          this.send({ k: "pause", h: this.h });
        }
        return;
      case "ack":
        this.pendingWrites.shift()?.();
        return;
      case "end":
        this.push(null);
        return;
      case "close":
        for (const cb of this.pendingWrites.splice(0)) cb(new Error("connection closed"));
        this.destroy();
        return;
    }
  }

  /** Tell the holder that this worker answers for the connection now. */
  confirmAdopted(): void {
    this.send({ k: "adopted", h: this.h });
  }

  /** The connection authenticated (false) or lost its allocation (true): the holder counts it. */
  reportCounted(counted: boolean): void {
    this.send({ k: "counted", h: this.h, counted });
  }

  override _read(): void {
    if (this.remotePaused) {
      this.remotePaused = false;
      this.send({ k: "resume", h: this.h });
    }
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (err?: Error | null) => void,
  ): void {
    this.pendingWrites.push(callback);
    // A message clones the whole ArrayBuffer under a view: a response relay-core built is a
    // view of a 16 KiB slab (relay-core codec/slab.ts), so send a copy of just its bytes.
    const exact = chunk.byteLength === chunk.buffer.byteLength ? chunk : new Uint8Array(chunk);
    this.send({ k: "write", h: this.h, chunk: exact });
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.send({ k: "end", h: this.h });
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.send({ k: "destroy", h: this.h });
    callback(err);
  }

  // The rest of ConnectionSocket: a remote connection has no local knobs.
  setNoDelay(): this {
    return this;
  }

  setTimeout(): this {
    return this;
  }
}

/** What the owner tells the holder about the connection, beside its bytes. */
export interface HolderEvents {
  /** The owner adopted it. */
  adopted(): void;
  /** It authenticated (false) or lost its allocation (true) at the owner. */
  counted(counted: boolean): void;
}

/**
 * The holder's side: relays a local socket to the owning worker, until either side closes.
 * The socket must be paused; its already-read bytes (`bytes`) go first, in the adopt message.
 */
export function holdForOwner(
  socket: ConnectionSocket,
  h: number,
  send: Send,
  adopt: Omit<Extract<HandOverMessage, { k: "adopt" }>, "k" | "h">,
  events: HolderEvents,
): (m: HandOverMessage) => void {
  let inFlight = 0;
  let ownerPaused = false;
  const flow = () => {
    if (inFlight < WINDOW_BYTES && !ownerPaused) socket.resume();
    else socket.pause();
  };
  /** Sizes of the chunks sent and not yet acknowledged, in order. */
  const sizes: number[] = [];
  send({ k: "adopt", h, ...adopt });
  socket.on("data", (chunk: Buffer) => {
    inFlight += chunk.length;
    sizes.push(chunk.length);
    send({ k: "data", h, chunk });
    flow();
  });
  socket.on("end", () => send({ k: "end", h }));
  socket.on("close", () => send({ k: "close", h }));
  socket.on("error", () => {});
  flow();
  return (m) => {
    switch (m.k) {
      case "ack":
        // The owner consumed one of our chunks.
        inFlight -= sizes.shift() ?? 0;
        flow();
        return;
      case "write":
        if (socket.write(m.chunk)) send({ k: "ack", h });
        else socket.once("drain", () => send({ k: "ack", h }));
        return;
      case "pause":
        ownerPaused = true;
        flow();
        return;
      case "resume":
        ownerPaused = false;
        flow();
        return;
      case "end":
        socket.end();
        return;
      case "destroy":
        socket.destroy();
        return;
      case "adopted":
        events.adopted();
        return;
      case "counted":
        events.counted(m.counted);
        return;
    }
  };
}
