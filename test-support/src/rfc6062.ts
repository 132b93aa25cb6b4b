// One RFC 6062 round trip through a running relay, with relay-core's own TurnClient: a TCP
// allocation, a permission for 127.0.0.1, a "platform" that connects to the relayed address,
// sends `payload` and half-closes, and a "private side" that answers the ConnectionAttempt
// with a data connection (ConnectionBind, RFC 6062 §5.4) and echoes everything back once the
// peer has finished (each side's FIN forwarded, §5.5). Resolves with what the platform read.
import net from "node:net";
import {
  SeededRandom,
  StreamFramer,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
} from "@turnpike/relay-core";

export interface Rfc6062EchoOptions {
  readonly port: number;
  readonly username: string;
  readonly password: string;
  readonly payload: Uint8Array;
  /** Source address of the control connection (default 127.0.0.1). */
  readonly controlFrom?: string;
  /** Source address of the data connection (another one reaches another relay worker). */
  readonly dataFrom?: string;
  /** Where the data connection goes (default `port`: another engine's listener, say). */
  readonly dataPort?: number;
  readonly timeoutMs?: number;
}

export async function rfc6062Echo(o: Rfc6062EchoOptions): Promise<Buffer> {
  const client = new TurnClient({
    username: o.username,
    password: o.password,
    random: new SeededRandom(7),
    transport: "tcp",
    requestedTransport: "tcp",
  });
  const control = net.connect({ port: o.port, host: "127.0.0.1", localAddress: o.controlFrom });
  const sockets: net.Socket[] = [control];
  const framer = new StreamFramer();
  /** Write what the client transmits, hand its events to `onEvent`. */
  const pump = (onEvent: (e: TurnClientEvent) => void) => {
    for (let out = client.pollOutput(); out; out = client.pollOutput()) {
      if (out.type === "transmit") control.write(out.data);
      else onEvent(out);
    }
  };
  const timeoutMs = o.timeoutMs ?? 10_000;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no reply within ${timeoutMs} ms`)),
        timeoutMs,
      );
      let relayed: TransportAddress | undefined;
      const onEvent = (e: TurnClientEvent) => {
        if (e.type === "allocated") {
          relayed = e.relayed;
          client.createPermission("127.0.0.1", performance.now());
        } else if (e.type === "permission-created" && relayed) {
          // The platform: sends its request, half-closes, then reads the reply to the end.
          const platform = net.connect(relayed.port, relayed.address, () =>
            platform.end(o.payload),
          );
          sockets.push(platform);
          const got: Buffer[] = [];
          platform.on("data", (d) => got.push(d));
          platform.on("end", () => {
            clearTimeout(timer);
            resolve(Buffer.concat(got));
          });
        } else if (e.type === "connection-attempt") {
          const data = net.connect(
            {
              port: o.dataPort ?? o.port,
              host: "127.0.0.1",
              localAddress: o.dataFrom,
              allowHalfOpen: true,
            },
            () => data.write(client.connectionBindRequest(e.connectionId)),
          );
          sockets.push(data);
          const dataFramer = new StreamFramer();
          const received: Buffer[] = [];
          let bound = false;
          data.on("data", (d: Buffer) => {
            if (bound) {
              received.push(d);
              return;
            }
            dataFramer.push(d);
            const frame = dataFramer.next();
            if (!frame) return;
            const r = client.handleConnectionBindResponse(frame);
            if (!r.ok) {
              // A nonce bound to the control connection's address: sign again with the new one.
              if (r.retry) data.write(r.retry);
              else reject(new Error(`ConnectionBind failed: ${r.code} ${r.reason}`));
              return;
            }
            bound = true;
            const rest = dataFramer.takeRemaining();
            if (rest.length > 0) received.push(Buffer.from(rest));
          });
          data.on("end", () => data.end(Buffer.concat(received)));
        }
      };
      control.on("data", (d: Buffer) => {
        framer.push(d);
        for (let f = framer.next(); f; f = framer.next()) client.handleInput(f, performance.now());
        pump(onEvent);
      });
      control.on("error", reject);
      control.on("connect", () => {
        client.allocate(performance.now());
        pump(onEvent);
      });
    });
  } finally {
    for (const s of sockets) s.destroy();
  }
}

export interface Rfc6062DownloadOptions {
  readonly port: number;
  readonly username: string;
  readonly password: string;
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
export async function rfc6062Download(o: Rfc6062DownloadOptions): Promise<Buffer> {
  const client = new TurnClient({
    username: o.username,
    password: o.password,
    random: new SeededRandom(11),
    transport: "tcp",
    requestedTransport: "tcp",
  });
  const control = net.connect({ port: o.port, host: "127.0.0.1" });
  const sockets: net.Socket[] = [control];
  const framer = new StreamFramer();
  const timeoutMs = o.timeoutMs ?? 20_000;
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no end within ${timeoutMs} ms`)), timeoutMs);
      const onEvent = (e: TurnClientEvent) => {
        if (e.type === "allocated") client.createPermission(o.peer.address, performance.now());
        else if (e.type === "permission-created") client.connect(o.peer, performance.now());
        else if (e.type === "connect-failed") reject(new Error(`Connect failed: ${e.code}`));
        else if (e.type === "connected") {
          const data = net.connect({ port: o.port, host: "127.0.0.1" }, () =>
            data.write(client.connectionBindRequest(e.connectionId)),
          );
          sockets.push(data);
          const dataFramer = new StreamFramer();
          const received: Buffer[] = [];
          let bound = false;
          data.on("data", (d: Buffer) => {
            if (bound) {
              received.push(d);
              if (o.pauseMs !== undefined) {
                data.pause();
                setTimeout(() => data.resume(), o.pauseMs);
              }
              return;
            }
            dataFramer.push(d);
            const frame = dataFramer.next();
            if (!frame) return;
            const r = client.handleConnectionBindResponse(frame);
            if (!r.ok) {
              if (r.retry) data.write(r.retry);
              else reject(new Error(`ConnectionBind failed: ${r.code} ${r.reason}`));
              return;
            }
            bound = true;
            const rest = dataFramer.takeRemaining();
            if (rest.length > 0) received.push(Buffer.from(rest));
          });
          data.on("end", () => {
            clearTimeout(timer);
            resolve(Buffer.concat(received));
          });
        }
      };
      const pump = () => {
        for (let out = client.pollOutput(); out; out = client.pollOutput()) {
          if (out.type === "transmit") control.write(out.data);
          else onEvent(out);
        }
      };
      control.on("data", (d: Buffer) => {
        framer.push(d);
        for (let f = framer.next(); f; f = framer.next()) client.handleInput(f, performance.now());
        pump();
      });
      control.on("error", reject);
      control.on("connect", () => {
        client.allocate(performance.now());
        pump();
      });
    });
  } finally {
    for (const s of sockets) s.destroy();
  }
}
