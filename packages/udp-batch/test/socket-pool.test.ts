// The socket pool (native/socket_pool.c): `open` takes unbound sockets made ahead of time on the
// pool's thread, and makes its own when the pool is empty or off; either way every socket is
// bound where it was asked and carries datagrams.
import { execFileSync } from "node:child_process";
import dgram from "node:dgram";
import { fileURLToPath } from "node:url";
import { afterEach, expect, it } from "vitest";
import { BatchIo, RX_HANDLE, RX_STRIDE, socketPoolCounters } from "../src/index.js";
import { describeNative, until } from "./native.js";

const ios: BatchIo[] = [];
afterEach(() => {
  for (const io of ios.splice(0)) io.destroy();
});

/** A context that records the handle of every datagram it reads. */
function receiver(): { io: BatchIo; handles: number[] } {
  const handles: number[] = [];
  const io: BatchIo = new BatchIo({
    onBatch: (count) => {
      for (let i = 0; i < count; i++) handles.push(io.rxMeta[i * RX_STRIDE + RX_HANDLE]!);
    },
  });
  ios.push(io);
  return { io, handles };
}

/** Sends one datagram to each port from a dgram socket, and closes it. */
async function sendEach(ports: number[]): Promise<void> {
  const s = dgram.createSocket("udp4");
  await new Promise<void>((r) => s.bind(0, "127.0.0.1", () => r()));
  for (const p of ports) s.send(Buffer.from("x"), p, "127.0.0.1");
  await new Promise((r) => setTimeout(r, 50));
  s.close();
}

/** What the pool holds once its thread is done refilling (the same count 100 ms apart). */
async function settledHeld(): Promise<number> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const now = socketPoolCounters().held;
    if (now === last && now > 0) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the pool did not settle (holds ${last})`);
}

const here = fileURLToPath(new URL(".", import.meta.url));

/** Counters of a fresh process that opens `n` IPv4 sockets, waiting `pauseMs` after the first. */
function inChild(n: number, pauseMs: number, env: Record<string, string> = {}): unknown {
  const script = `
    import { BatchIo, socketPoolCounters } from "../dist/index.js";
    const io = new BatchIo({ onBatch() {} });
    io.open({ family: 4, address: "127.0.0.1", port: 0 });
    await new Promise((r) => setTimeout(r, ${pauseMs}));
    const held = socketPoolCounters().held;
    for (let i = 1; i < ${n}; i++) io.open({ family: 4, address: "127.0.0.1", port: 0 });
    const { taken, inline } = socketPoolCounters();
    console.log(JSON.stringify({ heldBefore: held, taken, inline, held: socketPoolCounters().held }));
    io.destroy();
  `;
  const out = execFileSync(process.execPath, ["--input-type=module", "-e", script], {
    cwd: here,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 30_000,
  });
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

describeNative("socket pool", () => {
  it("hands open sockets made ahead of time, each bound where asked and carrying datagrams", async () => {
    const { io, handles } = receiver();
    const first = io.open({ family: 4, address: "127.0.0.1", port: 0 });
    // The pool's thread fills it after the first open asked for the family.
    await until(() => socketPoolCounters().held > 0);
    const before = socketPoolCounters();
    const opened = [first];
    for (let i = 0; i < 10; i++) opened.push(io.open({ family: 4, address: "127.0.0.1", port: 0 }));
    const after = socketPoolCounters();
    expect(after.taken - before.taken).toBeGreaterThan(0);
    const ports = opened.map((h) => io.localPort(h));
    expect(new Set(ports).size).toBe(ports.length);
    await sendEach(ports);
    await until(() => handles.length === opened.length);
    expect(new Set(handles)).toEqual(new Set(opened));
  });

  it("makes its own socket when the pool is empty, so a burst of opens never waits or fails", async () => {
    // 400 opens at once: more than the pool holds (at most 64), none fails.
    const counters = inChild(400, 200) as { taken: number; inline: number; heldBefore: number };
    expect(counters.heldBefore).toBeGreaterThan(0);
    expect(counters.taken).toBeGreaterThan(0);
    expect(counters.inline).toBeGreaterThan(0);
    expect(counters.taken + counters.inline).toBe(400);
  });

  it("is off with TURNPIKE_UDP_SOCKET_POOL=off: every socket made by open itself", () => {
    const counters = inChild(50, 200, { TURNPIKE_UDP_SOCKET_POOL: "off" });
    expect(counters).toEqual({ heldBefore: 0, taken: 0, inline: 50, held: 0 });
  });

  it("holds no IPv6 socket until an IPv6 open asked for one", async () => {
    const { io } = receiver();
    io.open({ family: 4, address: "127.0.0.1", port: 0 });
    await settledHeld();
    // One family's worth: at most 64 (fewer under a low RLIMIT_NOFILE), and no IPv6.
    expect(socketPoolCounters().heldIpv4).toBeGreaterThan(0);
    expect(socketPoolCounters().heldIpv4).toBeLessThanOrEqual(64);
    expect(socketPoolCounters().heldIpv6).toBe(0);
    try {
      io.open({ family: 6, address: "::1", port: 0 });
    } catch {
      return; // no IPv6 loopback here: nothing more to see
    }
    // That open found no IPv6 socket and made its own; from then on the thread pools them too.
    await until(() => socketPoolCounters().heldIpv6 > 0);
    expect(socketPoolCounters().heldIpv6).toBeLessThanOrEqual(64);
  });
});
