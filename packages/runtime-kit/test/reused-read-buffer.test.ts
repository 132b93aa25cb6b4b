// Reads into one reused buffer must never hand a pending write memory that the next read
// overwrites: a byte pipe into a destination that stalls (so writes stay pending) delivers every
// byte intact, and a destination that keeps up never costs a new buffer.
import { createHash, randomBytes } from "node:crypto";
import { type AddressInfo, connect, createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { forwardChunk, ReusedReadBuffer } from "../src/reused-read-buffer.js";

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

function listen(onConnection: (s: Socket) => void): Promise<number> {
  const server = createServer({ allowHalfOpen: true }, onConnection);
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * source server --(reused reads)--> forwarder --> sink server. The source writes 4 KiB at a
 * time, so the forwarder's reads are small; with `stall` the sink reads nothing for a while,
 * so once the kernel's buffers are full the forwarder's writes stay pending while write() still
 * returns true (4 KiB is below the 16 KiB high-water mark) and more reads arrive.
 */
function listenOpts(opts: { pauseOnConnect: boolean }, onConnection: (s: Socket) => void) {
  const server = createServer({ allowHalfOpen: true, ...opts }, onConnection);
  servers.push(server);
  return new Promise<number>((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)),
  );
}

async function pipeThrough(payload: Buffer, stall: boolean) {
  const sourcePort = await listen((s) => {
    let at = 0;
    const next = () => {
      if (at >= payload.length) return void s.end();
      const piece = payload.subarray(at, at + 4096);
      at += piece.length;
      if (s.write(piece)) setImmediate(next);
      else s.once("drain", next);
    };
    next();
  });
  let arrived: (b: Buffer) => void = () => {};
  const done = new Promise<Buffer>((resolve) => {
    arrived = resolve;
  });
  const sinkPort = await listenOpts({ pauseOnConnect: stall }, (s) => {
    const received: Buffer[] = [];
    s.on("data", (c: Buffer) => received.push(c));
    s.on("end", () => arrived(Buffer.concat(received)));
    if (stall) setTimeout(() => s.resume(), 300);
  });
  const sink = connect({ host: "127.0.0.1", port: sinkPort });
  const reads = new ReusedReadBuffer();
  const source = connect({ host: "127.0.0.1", port: sourcePort, onread: reads.onread });
  reads.sink = (chunk) => forwardChunk(chunk, source, sink, reads);
  source.on("end", () => sink.end());
  const bytes = await done;
  source.destroy();
  sink.destroy();
  return { bytes, replaced: reads.replaced };
}

describe("reading into a reused buffer", () => {
  it("delivers every byte intact when the destination stalls, by reading into fresh memory while a write is pending", async () => {
    const payload = randomBytes(24 * 1024 * 1024);
    const r = await pipeThrough(payload, true);
    expect(r.bytes.length).toBe(payload.length);
    expect(sha(r.bytes)).toBe(sha(payload));
    // The stalls did leave writes pending: the buffer was handed over at least once.
    expect(r.replaced).toBeGreaterThan(0);
  });

  it("delivers every byte intact when the destination keeps up", async () => {
    const payload = randomBytes(4 * 1024 * 1024);
    const r = await pipeThrough(payload, false);
    expect(sha(r.bytes)).toBe(sha(payload));
  });
});
