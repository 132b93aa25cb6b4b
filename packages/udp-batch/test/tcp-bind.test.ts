// tcpBind: a TCP socket bound to the address and port a SO_REUSEPORT listener holds, so a
// connection leaves from that very transport address (an RFC 6062 relay dials its peers from
// the relayed address it accepts them on, RFC 6062 §5.2).
import net from "node:net";
import { expect, it } from "vitest";
import { closeFd, tcpBind, tcpListen } from "../src/index.js";
import { describeNative } from "./native.js";

describeNative("tcpBind", () => {
  it("connects from the port a reuseport listener accepts on, which keeps accepting", async () => {
    const seen: number[] = [];
    const peer = net.createServer((s) => {
      seen.push(s.remotePort!);
      s.end();
    });
    await new Promise<void>((r) => peer.listen(0, "127.0.0.1", () => r()));
    const relayed = net.createServer((s) => s.end("accepted"));
    const fd = tcpListen({ family: 4, address: "127.0.0.1", port: 0 });
    await new Promise<void>((r) => relayed.listen({ fd }, () => r()));
    const port = (relayed.address() as net.AddressInfo).port;
    try {
      const out = new net.Socket({ fd: tcpBind({ family: 4, address: "127.0.0.1", port }) });
      await new Promise<void>((resolve, reject) => {
        out.on("error", reject);
        out.connect({ host: "127.0.0.1", port: (peer.address() as net.AddressInfo).port });
        out.on("close", () => resolve());
        out.resume();
      });
      expect(seen).toEqual([port]);
      // The listener still takes connections on that port.
      const reply = await new Promise<string>((resolve, reject) => {
        const c = net.connect({ host: "127.0.0.1", port });
        let got = "";
        c.on("data", (d) => {
          got += d;
        });
        c.on("end", () => resolve(got));
        c.on("error", reject);
      });
      expect(reply).toBe("accepted");
    } finally {
      relayed.close();
      peer.close();
    }
  });

  it("refuses with EADDRINUSE next to a listener without SO_REUSEPORT", async () => {
    const plain = net.createServer();
    await new Promise<void>((r) =>
      plain.listen({ host: "127.0.0.1", port: 0, exclusive: true }, () => r()),
    );
    const port = (plain.address() as net.AddressInfo).port;
    try {
      let fd: number | undefined;
      expect(() => {
        fd = tcpBind({ family: 4, address: "127.0.0.1", port });
      }).toThrow(expect.objectContaining({ code: "EADDRINUSE" }));
      if (fd !== undefined) closeFd(fd);
    } finally {
      plain.close();
    }
  });
});
