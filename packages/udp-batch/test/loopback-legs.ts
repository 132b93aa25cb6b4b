// Loopback TCP connections for the splice tests: each leg is a connecting end the test talks
// through and the accepted end it hands over (to a SplicePipe, or a SplicedSockets).
import net from "node:net";

export interface Leg {
  readonly outer: net.Socket;
  readonly inner: net.Socket;
}

export class LoopbackLegs {
  private readonly server: net.Server;
  private readonly accepted: net.Socket[] = [];
  private readonly waiting: ((s: net.Socket) => void)[] = [];
  private readonly made: Leg[] = [];

  /** `options` for the accepting server (pauseOnConnect: Node never reads the inner ends). */
  constructor(options: net.ServerOpts) {
    this.server = net.createServer(options, (s) => {
      const w = this.waiting.shift();
      if (w) w(s);
      else this.accepted.push(s);
    });
  }

  listen(): Promise<void> {
    return new Promise((r) => this.server.listen(0, "127.0.0.1", () => r()));
  }

  async leg(): Promise<Leg> {
    const port = (this.server.address() as net.AddressInfo).port;
    const inner = new Promise<net.Socket>((r) => {
      const s = this.accepted.shift();
      if (s) r(s);
      else this.waiting.push(r);
    });
    const outer = net.connect({ host: "127.0.0.1", port, allowHalfOpen: true });
    // A test that resets or closes the other end reads what is left; the error is not its point.
    outer.on("error", () => {});
    await new Promise<void>((r) => outer.once("connect", () => r()));
    const leg = { outer, inner: await inner };
    this.made.push(leg);
    return leg;
  }

  /** Destroys every leg and stops listening. */
  close(): void {
    for (const l of this.made) {
      l.outer.destroy();
      l.inner.destroy();
    }
    this.server.close();
  }
}
