// RFC 6062 pipes (§5.4) through a real turnpike-relay, spliced in the kernel (--tcp-splice
// auto, stream/spliced-pipe.ts) and in JavaScript (--tcp-splice off, the fallback): the same
// behaviour from both. Bytes both ways exactly, each side's FIN passed on while the other way
// still flows (§5.5), a peer's reset and the allocation's end closing the pipe, the
// turn.relayed.bytes counters, and the relay's descriptors given back.
import { createHash, randomBytes } from "node:crypto";
import type net from "node:net";
import { mintRestCredentials } from "@turnpike/relay-core";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { descriptorsOf as fds, sleep } from "@turnpike/test-support/process";
import { counterValue } from "@turnpike/test-support/prometheus";
import { type Rfc6062Pipe, rfc6062Pipe } from "@turnpike/test-support/rfc6062";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { batchIoAvailability, SPLICE_POOL_IDLE_FDS } from "@turnpike/udp-batch";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-tcp-splice-token";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A bound pipe (test-support's rfc6062Pipe) with credentials of `user`'s. */
function openPipe(port: number, user: string): Promise<Rfc6062Pipe> {
  const now = Math.floor(Date.now() / 1000);
  return rfc6062Pipe({ port, ...mintRestCredentials(TOKEN, now, 3600, user) });
}

/** Everything `socket` reads until its FIN (or its close, by a reset). */
function readAll(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.resume();
  return new Promise((resolve) => {
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("close", () => resolve(Buffer.concat(chunks)));
  });
}

function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) resolve();
    else socket.once("close", () => resolve());
  });
}

/** The relay process's open descriptors, and how many of them are pipes. */
/** Wait until `check` holds (the relay closes its side asynchronously), at most 5 s. */
async function eventually(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await sleep(50);
}

const spliceAvailable = batchIoAvailability().available;

describe.each(["auto", "off"] as const)("RFC 6062 pipes with --tcp-splice %s", (mode) => {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  let promPort = 0;
  /** The kernel splices this relay's pipes. */
  const spliced = mode === "auto" && spliceAvailable;

  beforeAll(async () => {
    range = reservePortRange();
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--tcp-splice", mode, "--prometheus-listen", `127.0.0.1:${promPort}`],
      // The descriptor count below is exact: without udp-batch's socket pool, whose unbound
      // sockets come and go with the UDP relay sockets each allocation takes (its own suite,
      // udp-batch/test/socket-pool.test.ts, holds it to account).
      env: { TURNPIKE_UDP_SOCKET_POOL: "off" },
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  async function relayedTcpBytes(): Promise<{ up: number; down: number }> {
    const text = (await httpGet(promPort, "/metrics", 3000)).body;
    const metric = /^turn_relayed_bytes(_total)?$/;
    return {
      up: counterValue(text, metric, { direction: "client_to_peer", transport: "tcp" }),
      down: counterValue(text, metric, { direction: "peer_to_client", transport: "tcp" }),
    };
  }

  /** turn.relay.splice_pool.*: the engines' kernel pipes (absent where nothing is spliced). */
  async function splicePool(): Promise<{
    shown: boolean;
    lent: number;
    idle: number;
    made: number;
  }> {
    const text = (await httpGet(promPort, "/metrics", 3000)).body;
    const pipes = /^turn_relay_splice_pool_pipes$/;
    return {
      shown: /^turn_relay_splice_pool_/m.test(text),
      lent: counterValue(text, pipes, { state: "lent" }),
      idle: counterValue(text, pipes, { state: "idle" }),
      made: counterValue(text, /^turn_relay_splice_pool_made(_total)?$/, {}),
    };
  }

  it("moves 16 MiB each way at once, byte for byte, and counts them in turn.relayed.bytes", async () => {
    const before = await relayedTcpBytes();
    const p = await openPipe(relay!.port, "both-ways");
    try {
      const up = randomBytes(16 << 20);
      const down = randomBytes(16 << 20);
      const atPeer = readAll(p.platform);
      const atClient = readAll(p.data);
      p.data.end(up);
      p.platform.end(down);
      const [gotUp, gotDown] = await Promise.all([atPeer, atClient]);
      expect(gotUp.length).toBe(up.length);
      expect(sha(gotUp)).toBe(sha(up));
      expect(gotDown.length).toBe(down.length);
      expect(sha(gotDown)).toBe(sha(down));
      // The counters hold exactly the piped bytes once the pipe is over (read at its end).
      let after = await relayedTcpBytes();
      for (let i = 0; i < 50 && after.up - before.up < up.length; i++) {
        await sleep(100);
        after = await relayedTcpBytes();
      }
      expect(after.up - before.up).toBe(up.length);
      expect(after.down - before.down).toBe(down.length);
    } finally {
      p.close();
    }
  });

  it("counts a pipe's bytes while it still runs", async () => {
    const before = await relayedTcpBytes();
    const p = await openPipe(relay!.port, "counted-live");
    try {
      const chunk = randomBytes(1 << 20);
      const atPeer = readAll(p.platform);
      p.data.write(chunk);
      let now = await relayedTcpBytes();
      for (let i = 0; i < 50 && now.up - before.up < chunk.length; i++) {
        await sleep(100);
        now = await relayedTcpBytes();
      }
      expect(now.up - before.up).toBe(chunk.length);
      p.data.end();
      expect((await atPeer).length).toBe(chunk.length);
    } finally {
      p.close();
    }
  });

  it("passes the client's FIN on while the peer still sends, then the peer's", async () => {
    const p = await openPipe(relay!.port, "client-fin-first");
    try {
      const atPeer = readAll(p.platform);
      p.data.end("client done");
      expect((await atPeer).toString()).toBe("client done");
      const atClient = readAll(p.data);
      p.platform.write("peer goes on");
      p.platform.end(", then ends");
      expect((await atClient).toString()).toBe("peer goes on, then ends");
      await Promise.all([closed(p.data), closed(p.platform)]);
    } finally {
      p.close();
    }
  });

  it("passes the peer's FIN on while the client still sends, then the client's", async () => {
    const p = await openPipe(relay!.port, "peer-fin-first");
    try {
      const atClient = readAll(p.data);
      p.platform.end("peer done");
      expect((await atClient).toString()).toBe("peer done");
      const atPeer = readAll(p.platform);
      p.data.end("client answers late");
      expect((await atPeer).toString()).toBe("client answers late");
      await Promise.all([closed(p.data), closed(p.platform)]);
    } finally {
      p.close();
    }
  });

  it("closes the client's data connection when the peer resets", async () => {
    const p = await openPipe(relay!.port, "peer-reset");
    try {
      const atClient = readAll(p.data);
      p.platform.write("before the reset");
      await sleep(50);
      p.platform.resetAndDestroy();
      expect((await atClient).toString()).toBe("before the reset");
      // The relay's side is gone: our end closes the connection.
      p.data.end();
      await closed(p.data);
    } finally {
      p.close();
    }
  });

  it("closes the pipe when its allocation ends (control connection closed)", async () => {
    const p = await openPipe(relay!.port, "allocation-end");
    try {
      const atPeer = readAll(p.platform);
      const atClient = readAll(p.data);
      p.data.write("delivered before the end");
      await sleep(100);
      p.control.destroy();
      expect((await atPeer).toString()).toBe("delivered before the end");
      expect((await atClient).length).toBe(0);
      p.data.end();
      p.platform.end();
      await Promise.all([closed(p.data), closed(p.platform)]);
    } finally {
      p.close();
    }
  });

  it(`${spliced ? "holds two socket duplicates per idle pipe and no kernel pipe (borrowed per transfer)" : "holds no kernel pipe"}, and gives every descriptor back`, async () => {
    const pid = relay!.pid;
    // One pipe first: what a first pipe allocates once (buffers, timers) is not a leak.
    const warm = await openPipe(relay!.port, "fds-warm");
    warm.close();
    await sleep(300);
    const start = fds(pid);
    const poolAtStart = await splicePool();
    const pipes: Rfc6062Pipe[] = [];
    for (let i = 0; i < 10; i++) pipes.push(await openPipe(relay!.port, `fds-${i}`));
    // Every pipe's bytes flow before counting (the relay binds on its loop turn).
    for (const p of pipes) {
      const got = readAll(p.platform);
      p.data.end("x");
      expect((await got).toString()).toBe("x");
    }
    const during = fds(pid);
    // Spliced, each pipe works on duplicates of its two sockets; its kernel pipes went back to
    // udp-batch's pool when its bytes were through (native/splice_pipe.c), which keeps at most
    // SPLICE_POOL_IDLE_FDS of their ends: an idle spliced connection holds no kernel pipe.
    expect(during.duplicatedSockets - start.duplicatedSockets).toBe(spliced ? 10 * 2 : 0);
    const poolGrowth = during.pipes - start.pipes;
    expect(poolGrowth).toBeGreaterThanOrEqual(0);
    expect(poolGrowth).toBeLessThanOrEqual(spliced ? SPLICE_POOL_IDLE_FDS : 0);
    // The metric says the same: no kernel pipe lent once the bytes are through, the idle ones
    // are the pool's descriptors (two ends each), and each was made once.
    const pool = await splicePool();
    expect(pool.shown).toBe(spliced);
    expect(pool.lent).toBe(0);
    expect(2 * (pool.idle - poolAtStart.idle)).toBe(poolGrowth);
    expect(pool.made).toBeGreaterThanOrEqual(pool.idle);
    if (spliced) expect(pool.idle).toBeGreaterThan(0);
    for (const p of pipes) p.close();
    await eventually(() => fds(pid).all <= start.all + poolGrowth);
    expect(fds(pid)).toEqual({
      ...start,
      all: start.all + poolGrowth,
      pipes: start.pipes + poolGrowth,
    });
  });
});
