// RFC 6062 through a real turnpike-relay with relay-core's own TurnClient: a peer connects to
// the relayed TCP address (ConnectionAttempt), the client binds a data connection
// (ConnectionBind), and the pipe honours TCP half-close: a peer that sends its request and
// then FIN still gets the whole reply (RFC 6062 §5.5: each side's end is forwarded).
import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import {
  mintRestCredentials,
  SeededRandom,
  StreamFramer,
  type TransportAddress,
  TurnClient,
  type TurnClientEvent,
} from "@turnpike/relay-core";
import { type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-tcp-relay-token";

describe("RFC 6062 TCP relaying through turnpike-relay", () => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    range = reservePortRange(50);
    relay = await startTurnpike({ minPort: range.min, maxPort: range.max, token: TOKEN });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("delivers a peer's whole reply after the peer half-closes its side", async () => {
    const port = relay!.port;
    const creds = mintRestCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, "e2e");
    const client = new TurnClient({
      username: creds.username,
      password: creds.password,
      random: new SeededRandom(7),
      transport: "tcp",
      requestedTransport: "tcp",
    });
    const control = net.connect(port, "127.0.0.1");
    const sockets: net.Socket[] = [control];
    const framer = new StreamFramer();
    /** Write what the client transmits, hand its events to `onEvent`. */
    const pump = (onEvent: (e: TurnClientEvent) => void) => {
      for (let out = client.pollOutput(); out; out = client.pollOutput()) {
        if (out.type === "transmit") control.write(out.data);
        else onEvent(out);
      }
    };
    const payload = randomBytes(1 << 20);
    const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
    try {
      const reply = await new Promise<Buffer>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no reply within 10 s")), 10_000);
        let relayed: TransportAddress | undefined;
        const onEvent = (e: TurnClientEvent) => {
          if (e.type === "allocated") {
            relayed = e.relayed;
            client.createPermission("127.0.0.1", performance.now());
          } else if (e.type === "permission-created" && relayed) {
            // The "platform": sends its request, half-closes, then reads the reply to the end.
            const platform = net.connect(relayed.port, relayed.address, () =>
              platform.end(payload),
            );
            sockets.push(platform);
            const got: Buffer[] = [];
            platform.on("data", (d) => got.push(d));
            platform.on("end", () => {
              clearTimeout(timer);
              resolve(Buffer.concat(got));
            });
          } else if (e.type === "connection-attempt") {
            // The private side: bind a data connection, then answer only after the peer's FIN.
            const data = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true }, () =>
              data.write(client.connectionBindRequest(e.connectionId)),
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
              if (!r.ok) reject(new Error(`ConnectionBind failed: ${r.code}`));
              bound = true;
              const rest = dataFramer.takeRemaining();
              if (rest.length > 0) received.push(Buffer.from(rest));
            });
            data.on("end", () => data.end(Buffer.concat(received)));
          }
        };
        control.on("data", (d: Buffer) => {
          framer.push(d);
          for (let f = framer.next(); f; f = framer.next())
            client.handleInput(f, performance.now());
          pump(onEvent);
        });
        control.on("error", reject);
        control.on("connect", () => {
          client.allocate(performance.now());
          pump(onEvent);
        });
      });
      expect(reply.length).toBe(payload.length);
      expect(sha(reply)).toBe(sha(payload));
    } finally {
      for (const s of sockets) s.destroy();
    }
  });
});
