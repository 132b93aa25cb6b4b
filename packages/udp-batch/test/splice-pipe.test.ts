// SplicePipe: two connected TCP sockets joined in the kernel (splice(2), native/splice_pipe.c).
// Each test joins the accepted ends of two loopback connections and talks through the other
// ends: bytes both ways exactly, each FIN passed on, a reset ending the pipe, a graceful end,
// counters, and every fd given back.
import { createHash, randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import type net from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { SPLICE_POOL_IDLE_FDS, SplicePipe, splicePipePoolCounters } from "../src/index.js";
import { type Leg as LoopbackLeg, LoopbackLegs } from "./loopback-legs.js";
import { describeNative } from "./native.js";

/** A loopback connection's two ends, and the fd of the accepted one (the pipe's side). */
interface Leg extends LoopbackLeg {
  readonly fd: number;
}

// pauseOnConnect: Node never starts reading the accepted socket, so its bytes stay in the
// kernel for the pipe.
const legs = new LoopbackLegs({ pauseOnConnect: true, allowHalfOpen: true });
beforeAll(() => legs.listen());
afterAll(() => legs.close());

async function leg(): Promise<Leg> {
  const l = await legs.leg();
  const fd = (l.inner as unknown as { _handle: { fd: number } })._handle.fd;
  return { ...l, fd };
}

/** Everything `socket` receives until its FIN. */
function received(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("error", reject);
  });
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

function openFds(): number {
  return readdirSync("/proc/self/fd").length;
}

/** Open fds other than the idle kernel pipes this thread's pool keeps (two fds each). */
function fdsBesidesPool(): number {
  return openFds() - 2 * splicePipePoolCounters().idle;
}

interface Joined {
  readonly a: Leg;
  readonly b: Leg;
  readonly pipe: SplicePipe;
  readonly ended: Promise<number>;
}

async function joined(): Promise<Joined> {
  const a = await leg();
  const b = await leg();
  let done!: (errno: number) => void;
  const ended = new Promise<number>((r) => {
    done = r;
  });
  const pipe = new SplicePipe(a.fd, b.fd, (errno) => {
    // The caller closes its own fds once the pipe ended.
    a.inner.destroy();
    b.inner.destroy();
    done(errno);
  });
  pipe.start();
  return { a, b, pipe, ended };
}

describeNative("SplicePipe", () => {
  it("moves 16 MiB each way at once, byte for byte, and counts them", async () => {
    const { a, b, pipe, ended } = await joined();
    const toB = randomBytes(16 << 20);
    const toA = randomBytes(16 << 20);
    const atB = received(b.outer);
    const atA = received(a.outer);
    a.outer.end(toB);
    b.outer.end(toA);
    const [gotB, gotA] = await Promise.all([atB, atA]);
    expect(sha(gotB)).toBe(sha(toB));
    expect(sha(gotA)).toBe(sha(toA));
    expect(await ended).toBe(0);
    const c = pipe.counters();
    expect(c.aToBBytes).toBe(toB.length);
    expect(c.bToABytes).toBe(toA.length);
    expect(c.aToBChunks).toBeGreaterThan(0);
    expect(pipe.active).toBe(false);
  });

  it("passes on a FIN one way while the other way keeps flowing", async () => {
    const { a, b, ended } = await joined();
    const atB = received(b.outer);
    a.outer.end(Buffer.from("from a, then done"));
    expect((await atB).toString()).toBe("from a, then done");
    // A half-closed: B still reaches A.
    const atA = received(a.outer);
    b.outer.write("b still talks");
    b.outer.end(" and ends");
    expect((await atA).toString()).toBe("b still talks and ends");
    expect(await ended).toBe(0);
  });

  it("passes on B's FIN first just as well", async () => {
    const { a, b, ended } = await joined();
    const atA = received(a.outer);
    b.outer.end("b is done");
    expect((await atA).toString()).toBe("b is done");
    const atB = received(b.outer);
    a.outer.end("a answers late");
    expect((await atB).toString()).toBe("a answers late");
    expect(await ended).toBe(0);
  });

  it("ends with an errno when one side resets, and the other side is closed", async () => {
    const { a, b, ended } = await joined();
    const atB = received(b.outer);
    a.outer.resetAndDestroy();
    expect(await ended).toBeGreaterThan(0);
    // The caller closed its fds in onEnd: B's connection ends.
    expect((await atB).length).toBe(0);
  });

  it("holds the sender back while the receiver does not read, then delivers everything", async () => {
    const { a, b, ended } = await joined();
    b.outer.pause();
    const data = randomBytes(32 << 20);
    let flushed = false;
    a.outer.write(data, () => {
      flushed = true;
    });
    await new Promise((r) => setTimeout(r, 300));
    // 32 MiB cannot fit in loopback socket buffers and one kernel pipe: the writer waits.
    expect(flushed).toBe(false);
    const atB = received(b.outer);
    b.outer.resume();
    a.outer.end();
    expect(sha(await atB)).toBe(sha(data));
    b.outer.end();
    expect(await ended).toBe(0);
  });

  it("end() writes out what it holds, then shuts both sides and reports", async () => {
    const { a, b, pipe, ended } = await joined();
    const atB = received(b.outer);
    const atA = received(a.outer);
    a.outer.write("last words");
    await new Promise((r) => setTimeout(r, 50));
    pipe.end();
    expect((await atB).toString()).toBe("last words");
    expect((await atA).length).toBe(0);
    expect(await ended).toBe(0);
  });

  it("gives back every fd after many pipes opened and closed", async () => {
    const before = fdsBesidesPool();
    for (let i = 0; i < 50; i++) {
      const { a, b, pipe } = await joined();
      expect(pipe.active).toBe(true);
      pipe.close();
      expect(pipe.active).toBe(false);
      for (const s of [a.inner, b.inner, a.outer, b.outer]) s.destroy();
    }
    for (let i = 0; i < 20; i++) {
      const { a, b, ended } = await joined();
      a.outer.end();
      b.outer.end();
      await ended;
      a.outer.destroy();
      b.outer.destroy();
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(fdsBesidesPool()).toBe(before);
    expect(splicePipePoolCounters().lent).toBe(0);
  });

  // The kernel charges a pipe's capacity to its user at creation; past fs.pipe-user-pages-soft
  // (1,024 pipes of 64 KiB) an unprivileged user's new pipes get 8 KiB. Owned, two per
  // connection, that was the 513th spliced connection; borrowed, idle connections hold none.
  it("holds no kernel pipe while idle: directions borrow one per transfer and give it back empty", async () => {
    const before = splicePipePoolCounters();
    const fdsBefore = fdsBesidesPool();
    const pipes: Joined[] = [];
    for (let i = 0; i < 200; i++) pipes.push(await joined());
    // Every connection carries a message each way, then idles.
    await Promise.all(
      pipes.map(async ({ a, b }, i) => {
        const atB = new Promise<Buffer>((r) => b.outer.once("data", r));
        const atA = new Promise<Buffer>((r) => a.outer.once("data", r));
        a.outer.write(`to b ${i}`);
        b.outer.write(`to a ${i}`);
        expect((await atB).toString()).toBe(`to b ${i}`);
        expect((await atA).toString()).toBe(`to a ${i}`);
      }),
    );
    const idle = splicePipePoolCounters();
    expect(idle.lent).toBe(0);
    expect(idle.idle).toBeLessThanOrEqual(SPLICE_POOL_IDLE_FDS / 2);
    // 400 transfers, a handful of kernel pipes: far fewer than one per direction.
    expect(idle.made - before.made).toBeLessThan(50);
    // Each idle pipe holds its two socket duplicates and nothing else (plus its four legs).
    expect(fdsBesidesPool() - fdsBefore).toBe(200 * (2 + 4));
    for (const { a, b, ended } of pipes) {
      a.outer.end();
      b.outer.end();
      await ended;
      a.outer.destroy();
      b.outer.destroy();
    }
    expect(splicePipePoolCounters().lent).toBe(0);
  });

  it("closes a kernel pipe that still holds bytes when its SplicePipe is closed, and lends it no more", async () => {
    const { a, b, pipe } = await joined();
    b.outer.pause(); // B reads nothing: A's bytes pile up in B's socket buffer, then the pipe
    a.outer.write(randomBytes(32 << 20));
    await new Promise((r) => setTimeout(r, 300));
    expect(splicePipePoolCounters().lent).toBe(1); // A -> B holds its pipe, full
    const idleBefore = splicePipePoolCounters().idle;
    pipe.close();
    const after = splicePipePoolCounters();
    expect(after.lent).toBe(0);
    expect(after.idle).toBe(idleBefore); // not given back: it held bytes
    for (const s of [a.inner, b.inner, a.outer, b.outer]) s.destroy();
  });

  it("moves nothing before start(), so what the caller writes first arrives first", async () => {
    const a = await leg();
    const b = await leg();
    const pipe = new SplicePipe(a.fd, b.fd, () => {
      a.inner.destroy();
      b.inner.destroy();
    });
    const atB = received(b.outer);
    a.outer.end("second");
    await new Promise((r) => setTimeout(r, 50));
    expect(pipe.counters().aToBBytes).toBe(0);
    // The caller's own bytes (say, read before the pipe existed) go first.
    b.inner.write("first, ", () => pipe.start());
    setTimeout(() => b.outer.end(), 100);
    expect((await atB).toString()).toBe("first, second");
  });

  it("passes on a FIN read in the last splice round of a wake-up", async () => {
    // One wake-up moves at most 16 rounds (native/splice_pipe.c's SPLICE_ROUNDS): bytes and a
    // FIN all queued before start() make some of these sizes read the FIN in the last round.
    for (let pages = 8; pages <= 400; pages += 8) {
      const a = await leg();
      const b = await leg();
      let done!: (errno: number) => void;
      const ended = new Promise<number>((r) => {
        done = r;
      });
      const pipe = new SplicePipe(a.fd, b.fd, (errno) => {
        a.inner.destroy();
        b.inner.destroy();
        done(errno);
      });
      const data = randomBytes(pages * 4096);
      await new Promise<void>((r) => a.outer.end(data, () => r()));
      await new Promise((r) => setTimeout(r, 5));
      const atB = received(b.outer);
      pipe.start();
      const got = await Promise.race([
        atB,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000)),
      ]);
      expect(got?.length, `${pages} pages: the FIN was not passed on`).toBe(data.length);
      b.outer.end();
      expect(await ended).toBe(0);
      a.outer.destroy();
      b.outer.destroy();
    }
  });

  it("refuses fds that are not two distinct sockets' numbers", () => {
    expect(() => new SplicePipe(-1, 3, () => {})).toThrow(/splicePipe/);
    expect(() => new SplicePipe(5, 5, () => {})).toThrow(/splicePipe/);
  });
});
