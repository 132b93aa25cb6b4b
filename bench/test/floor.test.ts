// The floor forwarder (src/floor/) against real UDP sockets on loopback: what it forwards to
// the echo peer, what comes back to the client, and what it refuses, on both I/O paths.
import dgram from "node:dgram";
import { existsSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { floorUnavailable, startFloor } from "../src/floor/start.js";
import { type RunningServer, repoRoot, type UdpIo } from "../src/servers.js";

async function udpSocket(): Promise<dgram.Socket> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  return s;
}

/** Resolves with the next datagram a socket receives (and where it came from). */
function next(s: dgram.Socket, ms = 3000): Promise<{ msg: Buffer; port: number }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no datagram within the timeout")), ms);
    s.once("message", (msg, rinfo) => {
      clearTimeout(t);
      resolve({ msg, port: rinfo.port });
    });
  });
}

function channelData(channel: number, payload: string, declared = payload.length): Buffer {
  const b = Buffer.alloc(4 + payload.length);
  b.writeUInt16BE(channel, 0);
  b.writeUInt16BE(declared, 2);
  b.write(payload, 4);
  return b;
}

describe.each(["batch", "dgram"] as UdpIo[])("floor on %s I/O", (io) => {
  const open: { close(): void }[] = [];
  let floor: RunningServer | undefined;

  beforeAll(() => {
    if (!existsSync(path.join(repoRoot, "bench/dist/floor/floor.js"))) {
      throw new Error("bench is not built: run pnpm exec tsc -b");
    }
    // The batch module is built at install (pnpm install); its absence is a failure here.
    expect(floorUnavailable(io)).toBeUndefined();
  });
  afterEach(async () => {
    for (const s of open.splice(0)) s.close();
    await floor?.stop();
    floor = undefined;
  });

  it("forwards the ChannelData payload to the peer its channel picks and frames the echo back", async () => {
    floor = await startFloor(io);
    const peers = [await udpSocket(), await udpSocket()];
    const client = await udpSocket();
    open.push(...peers, client);
    await floor.floor!.setPeers(
      peers.map((p) => ({ address: "127.0.0.1", port: p.address().port })),
    );

    // 0x4001: the second peer (channel - 0x4000, modulo the number of peers).
    const atPeer = next(peers[1]!);
    client.send(channelData(0x4001, "hello"), floor.port, "127.0.0.1");
    const got = await atPeer;
    expect(got.msg.toString()).toBe("hello");
    // From the client's own socket B, not the listener.
    expect(got.port).not.toBe(floor.port);

    const back = next(client);
    peers[1]!.send("echo!!", got.port, "127.0.0.1");
    const echoed = await back;
    expect(echoed.port).toBe(floor.port);
    expect(echoed.msg.readUInt16BE(0)).toBe(0x4001);
    expect(echoed.msg.readUInt16BE(2)).toBe(6);
    expect(echoed.msg.subarray(4).toString()).toBe("echo!!");

    // A second client gets a socket B of its own.
    const other = await udpSocket();
    open.push(other);
    const atPeer2 = next(peers[1]!);
    other.send(channelData(0x4001, "second"), floor.port, "127.0.0.1");
    expect((await atPeer2).port).not.toBe(got.port);

    const stats = await floor.floor!.stats();
    expect(stats.clients).toBe(2);
    expect(stats.dropped).toBe(0);
    if (io === "batch") expect(stats.batch!.sent).toBe(3);
    else expect(stats.batch).toBeUndefined();
  });

  it("drops a ChannelData whose length field runs past the datagram, and counts it", async () => {
    floor = await startFloor(io);
    const peer = await udpSocket();
    const client = await udpSocket();
    open.push(peer, client);
    await floor.floor!.setPeers([{ address: "127.0.0.1", port: peer.address().port }]);
    let atPeer = 0;
    peer.on("message", () => atPeer++);

    client.send(channelData(0x4000, "abc", 200), floor.port, "127.0.0.1");
    client.send(Buffer.from([0x40]), floor.port, "127.0.0.1");
    // A good one after them: once it arrives the two before it have been handled.
    const good = next(peer);
    client.send(channelData(0x4000, "ok"), floor.port, "127.0.0.1");
    expect((await good).msg.toString()).toBe("ok");

    const stats = await floor.floor!.stats();
    expect(stats.dropped).toBe(2);
    expect(atPeer).toBe(1);
  });
});
