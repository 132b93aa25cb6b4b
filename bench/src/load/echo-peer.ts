// The echo peer: a child process with a few UDP sockets that send every datagram straight
// back to where it came from (the relay's relayed transport address). Running it as its own
// process keeps its CPU apart from the load generator's, so "generator saturated" is honest.
//
// Protocol with the parent over IPC:
//   child -> parent  { type: "ready", ports: number[], pid }
//   parent -> child  { type: "stats" }   child -> parent { type: "stats", received, bytes }
//   parent -> child  { type: "stop" }    child exits
import dgram from "node:dgram";

const count = Math.max(1, Number(process.argv[2] ?? 4));
const firstPort = Number(process.argv[3] ?? 0);

let received = 0;
let bytes = 0;
const sockets: dgram.Socket[] = [];

async function bindOne(port: number): Promise<dgram.Socket> {
  const sock = dgram.createSocket({
    type: "udp4",
    recvBufferSize: 4 << 20,
    sendBufferSize: 4 << 20,
  });
  sock.on("message", (msg, rinfo) => {
    received++;
    bytes += msg.length;
    sock.send(msg, rinfo.port, rinfo.address);
  });
  sock.on("error", () => {
    // a full send buffer drops the echo: it shows up as loss, which is what it is
  });
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(port, "127.0.0.1", () => {
      sock.off("error", reject);
      resolve();
    });
  });
  return sock;
}

async function main() {
  for (let i = 0; i < count; i++) {
    let sock: dgram.Socket | undefined;
    for (let p = firstPort ? firstPort + i : 0; !sock; p++) {
      try {
        sock = await bindOne(p);
      } catch (e) {
        if (!firstPort) throw e;
      }
    }
    sockets.push(sock);
  }
  process.on("message", (m: { type?: string }) => {
    if (m?.type === "stats") process.send?.({ type: "stats", received, bytes });
    else if (m?.type === "stop") {
      for (const s of sockets) s.close();
      process.exit(0);
    }
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({ type: "ready", ports: sockets.map((s) => s.address().port), pid: process.pid });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
