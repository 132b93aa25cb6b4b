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
