// The floor: a minimal UDP forwarder with the relay's shape and none of its protocol, so the
// relay table can show what one relay hop costs at best on this machine and I/O, and how much
// of Turnpike's CPU per packet the protocol adds on top (issue 10 §6).
//
//   client --ChannelData--> socket A (one listener) | socket B (one per client) --payload--> echo peer
//   client <--ChannelData-- socket A                | socket B <--payload------------------ echo peer
//
// Per client 5-tuple a socket B is opened on its first packet, as a relay opens one per
// allocation. The first packet's channel number picks the echo peer socket
// (peers[(channel - 0x4000) % peers], the same spread the generator's ChannelBinds give the
// relays) and is written back on every echo. Per packet the floor reads the ChannelData length
// (RFC 8656 §12.4) and nothing else: no STUN, no authentication, no permission or channel
// lookup, no lifetimes, no counters beyond the I/O module's own.
//
// Two forwarders on the relay's two UDP data paths:
//   batch  @turnpike/udp-batch, used exactly as packages/relay-server/src/udp/batch-path.ts
//          uses it: payloads forwarded from the receive arena without a copy, the header
//          written into the slot's headroom, everything flushed once per batch.
//   dgram  node:dgram, one 'message' event and one send per datagram, the header sent as a
//          separate buffer in front of the payload (as the relay's dgram path does).
//
// A child process of the bench (its CPU is read from /proc like a relay's). IPC:
//   child -> parent  { type: "ready", port, pid }
//   parent -> child  { type: "peers", peers: [{ address, port }] }   child -> { type: "peers" }
//   parent -> child  { type: "stats" }   child -> { type: "stats", stats: FloorStats }
// It exits on SIGTERM (the default action) and when the parent goes away.
import dgram from "node:dgram";
import {
  BatchIo,
  HEADROOM,
  RX_ADDR,
  RX_FAMILY,
  RX_HANDLE,
  RX_LENGTH,
  RX_PORT,
  RX_STRIDE,
  SLOT_SIZE,
} from "@turnpike/udp-batch";

/** What the floor has done so far; the batch fields only on the batch I/O. */
export interface FloorStats {
  clients: number;
  /** datagrams received on either side */
  received: number;
  /** datagrams dropped: malformed, unknown source, or before the peers were known */
  dropped: number;
  batch?: {
    recvCalls: number;
    sendCalls: number;
    batches: number;
    wakeups: number;
    eagain: number;
    /** packets the kernel accepted, both directions */
    sent: number;
  };
}

export type FloorIo = "batch" | "dgram";

interface Peer {
  address: string;
  port: number;
  /** IPv4 in host order, for the batch module's address words */
  ip4: number;
}

/** RFC 8656 §12: channel numbers start at 0x4000. */
const FIRST_CHANNEL = 0x4000;
const CHANNEL_HEADER = 4;
/** The relay gives its UDP listener 4 MiB buffers (engine/driver.ts), relay sockets the default. */
const LISTENER_BUFFER_BYTES = 4 << 20;
const TAG_TO_PEER = 0;
const TAG_TO_CLIENT = 1;

let peers: Peer[] = [];
let clients = 0;
let received = 0;
let dropped = 0;

function ip4Word(address: string): number {
  const b = address.split(".").map(Number);
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

function peerFor(channel: number): Peer | undefined {
  if (peers.length === 0) return undefined;
  return peers[(channel - FIRST_CHANNEL) % peers.length];
}

/** The batch forwarder: one BatchIo context, one callback per received batch. */
function startBatch(
  listenAddress: string,
  listenPort: number,
): { port: number; stats(): FloorStats } {
  interface Client {
    ip4: number;
    port: number;
    channel: number;
    relay: number;
    peer: Peer;
  }
  const byTuple = new Map<number, Client>();
  /** By socket B's handle & 0xffff (the module's socket index); the full handle is checked. */
  const byRelay: (Client | undefined)[] = [];
  let listener = -1;
  const io: BatchIo = new BatchIo({
    onBatch: (count) => {
      const meta = io.rxMeta;
      const rx = io.rx;
      received += count;
      for (let i = 0; i < count; i++) {
        const m = i * RX_STRIDE;
        const handle = meta[m + RX_HANDLE]!;
        const length = meta[m + RX_LENGTH]!;
        const start = i * SLOT_SIZE + HEADROOM;
        if (handle === listener) {
          if (meta[m + RX_FAMILY] !== 4 || length < CHANNEL_HEADER) {
            dropped++;
            continue;
          }
          const ip4 = meta[m + RX_ADDR]!;
          const port = meta[m + RX_PORT]!;
          const key = ip4 * 65536 + port;
          let c = byTuple.get(key);
          if (c === undefined) {
            const channel = (rx[start]! << 8) | rx[start + 1]!;
            const peer = peerFor(channel);
            if (peer === undefined) {
              dropped++;
              continue;
            }
            let relay: number;
            try {
              relay = io.open({ family: 4, address: listenAddress, port: 0 });
            } catch {
              dropped++; // out of file descriptors: the client stays without a socket B
              continue;
            }
            c = { ip4, port, channel, relay, peer };
            byTuple.set(key, c);
            byRelay[relay & 0xffff] = c;
            clients++;
          }
          const payload = (rx[start + 2]! << 8) | rx[start + 3]!;
          if (CHANNEL_HEADER + payload > length) {
            dropped++;
            continue;
          }
          io.queueFromRx(
            c.relay,
            start + CHANNEL_HEADER,
            payload,
            4,
            c.peer.ip4,
            undefined,
            c.peer.port,
            TAG_TO_PEER,
          );
        } else {
          const c = byRelay[handle & 0xffff];
          if (c === undefined || c.relay !== handle) {
            dropped++;
            continue;
          }
          // The ChannelData header goes into the slot's headroom, in front of the payload.
          const h = start - CHANNEL_HEADER;
          rx[h] = c.channel >> 8;
          rx[h + 1] = c.channel & 0xff;
          rx[h + 2] = length >> 8;
          rx[h + 3] = length & 0xff;
          io.queueFromRx(
            listener,
            h,
            length + CHANNEL_HEADER,
            4,
            c.ip4,
            undefined,
            c.port,
            TAG_TO_CLIENT,
            CHANNEL_HEADER,
          );
        }
      }
      // The module flushes the queue when this returns.
    },
  });
  listener = io.open({
    family: 4,
    address: listenAddress,
    port: listenPort,
    recvBufferSize: LISTENER_BUFFER_BYTES,
    sendBufferSize: LISTENER_BUFFER_BYTES,
  });
  return {
    port: io.localPort(listener),
    stats: () => {
      const k = io.counters();
      return {
        clients,
        received,
        dropped,
        batch: {
          recvCalls: k.recvCalls,
          sendCalls: k.sendCalls,
          batches: k.batches,
          wakeups: k.wakeups,
          eagain: k.eagain,
          sent: io.sentPackets(TAG_TO_PEER) + io.sentPackets(TAG_TO_CLIENT),
        },
      };
    },
  };
}

/** The dgram forwarder: what a bare Node relay hop costs. */
async function startDgram(
  listenAddress: string,
  listenPort: number,
): Promise<{ port: number; stats(): FloorStats }> {
  interface Client {
    address: string;
    port: number;
    channel: number;
    relay: dgram.Socket;
    peer: Peer;
  }
  const byTuple = new Map<string, Client>();
  const listener = dgram.createSocket({
    type: "udp4",
    recvBufferSize: LISTENER_BUFFER_BYTES,
    sendBufferSize: LISTENER_BUFFER_BYTES,
  });
  // As the relay's dgram path: one header buffer while the send queue is empty (the send then
  // completes at once or is the queue's only entry), a fresh one otherwise.
  const header = Buffer.alloc(CHANNEL_HEADER);
  const list: Buffer[] = [header, header];
  const toClient = (c: Client, msg: Buffer) => {
    received++;
    const h = listener.getSendQueueCount() === 0 ? header : Buffer.allocUnsafe(CHANNEL_HEADER);
    h.writeUInt16BE(c.channel, 0);
    h.writeUInt16BE(msg.length, 2);
    list[0] = h;
    list[1] = msg;
    listener.send(list, c.port, c.address);
  };
  listener.on("message", (msg, rinfo) => {
    received++;
    if (msg.length < CHANNEL_HEADER) {
      dropped++;
      return;
    }
    const key = `${rinfo.address}:${rinfo.port}`;
    let c = byTuple.get(key);
    if (c === undefined) {
      const channel = msg.readUInt16BE(0);
      const peer = peerFor(channel);
      if (peer === undefined) {
        dropped++;
        return;
      }
      const relay = dgram.createSocket("udp4");
      // Sends before the bind completes wait in dgram's own queue.
      relay.bind(0, listenAddress);
      const client: Client = { address: rinfo.address, port: rinfo.port, channel, relay, peer };
      relay.on("message", (echo) => toClient(client, echo));
      relay.on("error", () => {
        dropped++;
      });
      byTuple.set(key, client);
      clients++;
      c = client;
    }
    const payload = msg.readUInt16BE(2);
    if (CHANNEL_HEADER + payload > msg.length) {
      dropped++;
      return;
    }
    c.relay.send(msg, CHANNEL_HEADER, payload, c.peer.port, c.peer.address);
  });
  listener.on("error", () => {
    dropped++;
  });
  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.bind(listenPort, listenAddress, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  return {
    port: listener.address().port,
    stats: () => ({ clients, received, dropped }),
  };
}

async function main(): Promise<void> {
  const io = process.argv[2] as FloorIo;
  const address = process.argv[3] ?? "127.0.0.1";
  const port = Number(process.argv[4] ?? 0);
  if (io !== "batch" && io !== "dgram") throw new Error(`usage: floor.js batch|dgram ADDRESS PORT`);
  const floor = io === "batch" ? startBatch(address, port) : await startDgram(address, port);
  process.on("message", (m: { type?: string; peers?: { address: string; port: number }[] }) => {
    if (m?.type === "peers" && m.peers) {
      peers = m.peers.map((p) => ({ address: p.address, port: p.port, ip4: ip4Word(p.address) }));
      process.send?.({ type: "peers" });
    } else if (m?.type === "stats") {
      process.send?.({ type: "stats", stats: floor.stats() });
    }
  });
  process.on("disconnect", () => process.exit(0));
  process.send?.({ type: "ready", port: floor.port, pid: process.pid });
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
