// SplicedSockets: two Node sockets handed to a SplicePipe and back, the lifecycle the relay's
// RFC 6062 pipes and turnpike-tunnel's TCP pipes share. Each test joins the accepted ends of
// two loopback connections (read by Node, as a relay's are until the bind) and talks through
// the other ends: Node's own bytes first, the start after Node's writes, the three ways to
// end, the counts, and which sockets it takes.
import { createHash, randomBytes } from "node:crypto";
import type net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SplicedSockets, type SplicedSocketsHooks } from "../src/index.js";
import { type Leg, LoopbackLegs } from "./loopback-legs.js";
import { describeNative } from "./native.js";

// allowHalfOpen: each FIN is passed on while the other way still flows. The inner ends are
// read by Node, as a relay's are until the bind.
const legs = new LoopbackLegs({ allowHalfOpen: true });
beforeAll(() => legs.listen());
afterAll(() => legs.close());
const leg = () => legs.leg();

/** Everything `socket` receives until its FIN or its close. */
function received(socket: net.Socket): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve) => {
    socket.once("end", () => resolve(Buffer.concat(chunks)));
    socket.once("close", () => resolve(Buffer.concat(chunks)));
  });
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface Joined {
  readonly a: Leg;
  readonly b: Leg;
  readonly pipe: SplicedSockets;
  /** Bytes each way as the hooks were told, and how many reports. */
  readonly moved: { aToB: number; bToA: number; reports: number };
  readonly done: Promise<number | undefined>;
  readonly doneCalls: () => number;
}

async function joined(beforeStart?: SplicedSocketsHooks["beforeStart"]): Promise<Joined> {
  const a = await leg();
  const b = await leg();
  const moved = { aToB: 0, bToA: 0, reports: 0 };
  let calls = 0;
  let finish!: (errno: number | undefined) => void;
  const done = new Promise<number | undefined>((r) => {
    finish = r;
  });
  const pipe = new SplicedSockets(a.inner, b.inner, {
    moved: (d) => {
      moved.aToB += d.aToBBytes;
      moved.bToA += d.bToABytes;
      moved.reports++;
    },
    beforeStart,
    done: (errno) => {
      calls++;
      finish(errno);
    },
  });
  return { a, b, pipe, moved, done, doneCalls: () => calls };
}

describeNative("SplicedSockets", () => {
  it("writes Node's bytes first and starts only once they are out, then counts what it moved", async () => {
    // What the caller writes before the start (the relay: what Node read), more than a loopback
    // write takes at once: a native pipe started before it drained would put the spliced bytes
    // among it.
    const early = randomBytes(8 << 20);
    let ready!: () => void;
    const read = new Promise<void>((r) => {
      ready = r;
    });
    let tries = 0;
    const { a, b, pipe, moved, done } = await joined(() => {
      // Called at each try: like the relay's, it writes only what it has not written yet.
      if (tries++ === 0) b.inner.write(early);
      ready();
    });
    const atB = received(b.outer);
    pipe.start();
    await read;
    expect(pipe.started).toBe(false);
    a.outer.end("then spliced");
    const got = await atB;
    expect(got.length).toBe(early.length + "then spliced".length);
    expect(sha(got)).toBe(sha(Buffer.concat([early, Buffer.from("then spliced")])));
    expect(pipe.started).toBe(true);
    expect(tries).toBe(2);
    b.outer.end();
    expect(await done).toBe(0);
    // Only what the native pipe moved; the caller counts its own writes.
    expect(moved.aToB).toBe("then spliced".length);
    expect(moved.bToA).toBe(0);
    expect(pipe.closed).toBe(true);
    expect(a.inner.destroyed && b.inner.destroyed).toBe(true);
  });

  it("closes when either socket closes under it: the other is destroyed, done once without an errno", async () => {
    const { a, b, pipe, done, doneCalls } = await joined();
    pipe.start();
    const atB = received(b.outer);
    a.inner.destroy();
    expect(await done).toBeUndefined();
    expect(b.inner.destroyed).toBe(true);
    expect((await atB).length).toBe(0);
    pipe.close();
    pipe.end();
    await new Promise((r) => setTimeout(r, 20));
    expect(doneCalls()).toBe(1);
  });

  it("ends gracefully when asked before it started, once it starts: both sides get their FIN", async () => {
    const { a, b, pipe, done, doneCalls } = await joined();
    const atB = received(b.outer);
    const atA = received(a.outer);
    pipe.end();
    await new Promise((r) => setTimeout(r, 50));
    // Not started: nothing ends yet (the relay ends a pipe relay-core closes within its bind).
    expect(doneCalls()).toBe(0);
    expect(a.inner.destroyed || b.inner.destroyed).toBe(false);
    pipe.start();
    expect(await done).toBe(0);
    expect((await atB).length).toBe(0);
    expect((await atA).length).toBe(0);
  });

  it("ends gracefully while it runs: what it already moved arrives, then both FINs", async () => {
    const { a, b, pipe, done } = await joined();
    pipe.start();
    const seen: Buffer[] = [];
    b.outer.on("data", (c: Buffer) => seen.push(c));
    const atB = new Promise<void>((r) => b.outer.once("end", () => r()));
    const atA = received(a.outer);
    a.outer.write("last words");
    for (let i = 0; i < 100 && seen.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    pipe.end();
    await atB;
    expect(Buffer.concat(seen).toString()).toBe("last words");
    expect((await atA).length).toBe(0);
    expect(await done).toBe(0);
  });

  it("reports only what moved since the last report", async () => {
    const { a, b, pipe, moved, done } = await joined();
    pipe.start();
    const seen: Buffer[] = [];
    b.outer.on("data", (c: Buffer) => seen.push(c));
    const arrived = async (n: number) => {
      for (let i = 0; i < 100 && Buffer.concat(seen).length < n; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    a.outer.write(randomBytes(1000));
    await arrived(1000);
    pipe.sync();
    expect(moved).toEqual({ aToB: 1000, bToA: 0, reports: 1 });
    pipe.sync();
    expect(moved.reports).toBe(1);
    a.outer.write(randomBytes(500));
    await arrived(1500);
    pipe.sync();
    expect(moved).toEqual({ aToB: 1500, bToA: 0, reports: 2 });
    pipe.close();
    expect(await done).toBeUndefined();
    expect(moved.reports).toBe(2);
  });
});

describe("SplicedSockets.canJoin", () => {
  it("joins two plain TCP sockets only: not a TLS socket, a destroyed one or anything else", async () => {
    const a = await leg();
    const b = await leg();
    expect(SplicedSockets.canJoin(a.inner, b.inner)).toBe(true);
    const wrapped = new tls.TLSSocket(a.outer);
    expect(SplicedSockets.canJoin(wrapped, b.inner)).toBe(false);
    expect(SplicedSockets.canJoin(a.inner, {})).toBe(false);
    b.outer.destroy();
    b.inner.destroy();
    expect(SplicedSockets.canJoin(a.inner, b.inner)).toBe(false);
    const hooks = { moved: () => {}, done: () => {} };
    expect(() => new SplicedSockets(a.inner, b.inner, hooks)).toThrow(TypeError);
    // Refused before anything changed: Node still reads A.
    const back = new Promise<Buffer>((r) => a.inner.once("data", r));
    a.outer.write("still Node's");
    expect((await back).toString()).toBe("still Node's");
    wrapped.destroy();
  });
});
