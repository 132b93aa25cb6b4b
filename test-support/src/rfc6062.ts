// RFC 6062 through a running relay, with relay-core's own TurnClient: a TCP allocation on a
// control connection, a permission, and data connections bound to a peer connection
// (ConnectionBind, §5.4). Three shapes of it:
//
//   rfc6062Echo      a "platform" connects to the relayed address, sends and half-closes; the
//                    "private side" answers the ConnectionAttempt (§4.3) with a data
//                    connection and echoes everything back once the peer finished (each
//                    side's FIN forwarded, §5.5). Resolves with what the platform read.
//   rfc6062Download  the client asks the relay to Connect to a peer (§4.3) and reads the data
//                    connection to its end. Resolves with what the peer sent.
//   rfc6062Pipe      the echo's setup, stopped once the data connection is bound: the test
//                    drives both ends itself.
//
// A relay that refuses the Allocate fails the helper at once with its error code; a 508 (the
// relay port it picked is held by another process on the machine: tests share the machine's
// ports) is tried again a few times first.

import net from "node:net";
import {
  type PeerConnectionId,
  SeededRandom,
  StreamFramer,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
} from "@turnpike/relay-core";

/** Where the relay listens, and whose credentials allocate. */
export interface Rfc6062Credentials {
  readonly port: number;
  readonly username: string;
  readonly password: string;
}

export interface Rfc6062EchoOptions extends Rfc6062Credentials {
  readonly payload: Uint8Array;
  /** Source address of the control connection (default 127.0.0.1). */
  readonly controlFrom?: string;
  /** Source address of the data connection (another one reaches another relay worker). */
  readonly dataFrom?: string;
  /** Where the data connection goes (default `port`: another engine's listener, say). */
  readonly dataPort?: number;
  readonly timeoutMs?: number;
}

export function rfc6062Echo(o: Rfc6062EchoOptions): Promise<Buffer> {
  return retryOn508(() =>
    session(o.timeoutMs ?? 10_000, "no reply", (s, resolve) => {
      let relayed: TransportAddress | undefined;
      const { client } = s.allocate(o, 7, (e) => {
        if (e.type === "allocated") {
          relayed = e.relayed;
          client.createPermission("127.0.0.1", performance.now());
        } else if (e.type === "permission-created" && relayed) {
          // The platform: sends its request, half-closes, then reads the reply to the end.
          const platform = s.track(
            net.connect(relayed.port, relayed.address, () => platform.end(o.payload)),
          );
          const got: Buffer[] = [];
          platform.on("data", (d) => got.push(d));
          platform.on("end", () => resolve(Buffer.concat(got)));
        } else if (e.type === "connection-attempt") {
          const target = {
            port: o.dataPort ?? o.port,
            host: "127.0.0.1",
            localAddress: o.dataFrom,
            allowHalfOpen: true,
          };
          s.bind(client, e.connectionId, target, (data, rest) => {
            const received: Buffer[] = rest.length > 0 ? [Buffer.from(rest)] : [];
            data.on("data", (d: Buffer) => received.push(d));
            data.on("end", () => data.end(Buffer.concat(received)));
          });
        }
      });
    }),
  );
}

export interface Rfc6062DownloadOptions extends Rfc6062Credentials {
  /** The peer the relay dials for the Connect request (RFC 6062 §4.3); it sends, then ends. */
  readonly peer: TransportAddress;
  /** Stop reading the data connection this long after each chunk (a slow reader). */
  readonly pauseMs?: number;
  readonly timeoutMs?: number;
}

/**
 * A TCP allocation whose client asks the relay to Connect to `peer`, binds a data connection
 * to it (ConnectionBind) and reads it to the end: resolves with what the peer sent.
 */
export function rfc6062Download(o: Rfc6062DownloadOptions): Promise<Buffer> {
  return retryOn508(() =>
    session(o.timeoutMs ?? 20_000, "no end", (s, resolve, reject) => {
      const { client } = s.allocate(o, 11, (e) => {
        if (e.type === "allocated") client.createPermission(o.peer.address, performance.now());
        else if (e.type === "permission-created") client.connect(o.peer, performance.now());
        else if (e.type === "connect-failed") reject(new Error(`Connect failed: ${e.code}`));
        else if (e.type === "connected") {
          s.bind(client, e.connectionId, { port: o.port, host: "127.0.0.1" }, (data, rest) => {
            const received: Buffer[] = rest.length > 0 ? [Buffer.from(rest)] : [];
            data.on("data", (d: Buffer) => {
              received.push(d);
              if (o.pauseMs !== undefined) {
                data.pause();
                setTimeout(() => data.resume(), o.pauseMs);
              }
            });
            data.on("end", () => resolve(Buffer.concat(received)));
          });
        }
      });
    }),
  );
}

/** A bound RFC 6062 pipe: the peer ("platform") and the client's data connection. */
export interface Rfc6062Pipe {
  readonly control: net.Socket;
  readonly platform: net.Socket;
  readonly data: net.Socket;
  /** Destroys the three connections. */
  close(): void;
}

/**
 * A TCP allocation with a permission for 127.0.0.1, a peer that connects to the relayed
 * address, and the client's data connection bound to it (ConnectionBind). Both ends are
 * half-open capable and paused, with nothing read past the bind: the test reads them.
 */
export function rfc6062Pipe(
  o: Rfc6062Credentials & { readonly timeoutMs?: number },
): Promise<Rfc6062Pipe> {
  const run: Attempt<Rfc6062Pipe> = (s, resolve) => {
    let relayed: TransportAddress | undefined;
    let platform: net.Socket | undefined;
    const { client, control } = s.allocate(o, 5, (e) => {
      if (e.type === "allocated") {
        relayed = e.relayed;
        client.createPermission("127.0.0.1", performance.now());
      } else if (e.type === "permission-created" && relayed) {
        const to = { port: relayed.port, host: relayed.address, allowHalfOpen: true };
        platform = s.track(net.connect(to));
        platform.on("error", () => {});
      } else if (e.type === "connection-attempt") {
        const target = { port: o.port, host: "127.0.0.1", allowHalfOpen: true };
        const data = s.bind(client, e.connectionId, target, (data, rest) => {
          data.pause();
          // Bytes that came with the answer are the test's to read.
          if (rest.length > 0) data.unshift(Buffer.from(rest));
          const close = () => {
            for (const socket of [control, platform!, data]) socket.destroy();
          };
          resolve({ control, platform: platform!, data, close });
        });
        data.on("error", () => {});
      }
    });
  };
  // The pipe's sockets outlive the attempt that made them: the test closes them.
  return retryOn508(() => session(o.timeoutMs ?? 10_000, "no pipe", run, { keep: true }));
}

/** One attempt's set-up: what it does with a session, and how it settles. */
type Attempt<T> = (s: Session, resolve: (value: T) => void, reject: (err: Error) => void) => void;

/** What a helper's attempt may do: allocate, bind data connections, keep sockets to close. */
interface Session {
  /**
   * A control connection to `o.port` whose TurnClient (seeded `seed`) allocates a TCP
   * relayed address once connected; its transmits are written, its events handed to
   * `onEvent`, in order. An allocate-failed fails the attempt with its code.
   */
  allocate(
    o: Rfc6062Credentials & { readonly controlFrom?: string },
    seed: number,
    onEvent: (e: TurnClientEvent) => void,
  ): { client: TurnClient; control: net.Socket };
  /**
   * A data connection to `target` bound to `id` (ConnectionBind, signed again after a
   * 401/438 with the nonce of the new connection's address). `onBound` gets it with the bytes
   * that followed the answer; its later 'data' is the caller's. A refusal fails the attempt.
   */
  bind(
    client: TurnClient,
    id: PeerConnectionId,
    target: net.NetConnectOpts,
    onBound: (data: net.Socket, rest: Uint8Array) => void,
  ): net.Socket;
  /** Destroy `socket` when the attempt is over. */
  track(socket: net.Socket): net.Socket;
}

/**
 * One attempt of a helper: `run` sets it up, the promise settles with what it resolves or the
 * first failure, or fails after `timeoutMs` naming the last event the client saw. The
 * sockets it tracked are destroyed when it settles (`keep`: only when it fails).
 */
async function session<T>(
  timeoutMs: number,
  missing: string,
  run: Attempt<T>,
  options: { readonly keep?: boolean } = {},
): Promise<T> {
  const sockets: net.Socket[] = [];
  let ok = false;
  let last = "nothing";
  let timer: NodeJS.Timeout | undefined;
  try {
    return await new Promise<T>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${missing} within ${timeoutMs} ms (last event: ${last})`)),
        timeoutMs,
      );
      const track = (socket: net.Socket) => {
        sockets.push(socket);
        return socket;
      };
      const s: Session = {
        track,
        allocate(o, seed, onEvent) {
          const client = new TurnClient({
            username: o.username,
            password: o.password,
            random: new SeededRandom(seed),
            transport: "tcp",
            requestedTransport: "tcp",
          });
          const control = track(
            net.connect({ port: o.port, host: "127.0.0.1", localAddress: o.controlFrom }),
          );
          const framer = new StreamFramer();
          const pump = () => {
            for (let out = client.pollOutput(); out; out = client.pollOutput()) {
              if (out.type === "transmit") {
                control.write(out.data);
                continue;
              }
              last = JSON.stringify(out, (_k, v) => (typeof v === "bigint" ? String(v) : v));
              if (out.type === "allocate-failed") {
                reject(new Error(`Allocate failed: ${out.code} ${out.reason}`));
              } else {
                onEvent(out);
              }
            }
          };
          control.on("data", (d: Buffer) => {
            framer.push(d);
            for (let f = framer.next(); f; f = framer.next()) {
              client.handleInput(f, performance.now());
            }
            pump();
          });
          control.on("error", reject);
          control.on("connect", () => {
            client.allocate(performance.now());
            pump();
          });
          return { client, control };
        },
        bind(client, id, target, onBound) {
          const data = track(
            net.connect(target, () => data.write(client.connectionBindRequest(id))),
          );
          const framer = new StreamFramer();
          const onAnswer = (d: Buffer) => {
            framer.push(d);
            const frame = framer.next();
            if (!frame) return;
            const r = client.handleConnectionBindResponse(frame);
            if (!r.ok) {
              if (r.retry) data.write(r.retry);
              else reject(new Error(`ConnectionBind failed: ${r.code} ${r.reason}`));
              return;
            }
            data.off("data", onAnswer);
            onBound(data, framer.takeRemaining());
          };
          data.on("data", onAnswer);
          return data;
        },
      };
      run(s, resolve, reject);
    }).then((value) => {
      ok = true;
      return value;
    });
  } finally {
    clearTimeout(timer);
    if (!ok || options.keep !== true) for (const socket of sockets) socket.destroy();
  }
}

/**
 * `attempt` again, 100 ms later, while its Allocate is answered 508 (Insufficient Capacity:
 * here, the relay port it picked is held by another process), at most 5 times in all.
 */
async function retryOn508<T>(attempt: () => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (n >= 5 || !/^Allocate failed: 508 /.test((err as Error).message)) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
