// A minimal STUN Binding client (RFC 8489 §6) for readiness probes and quick checks: send one
// Binding request over UDP or TCP, wait (bounded) for the success response with our transaction
// id, and decode XOR-MAPPED-ADDRESS (RFC 8489 §14.2). Deliberately independent of relay-core so
// it can probe any server, including coturn.
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { connect } from "node:net";

const MAGIC_COOKIE = 0x2112a442;
const BINDING_REQUEST = 0x0001;
const BINDING_SUCCESS = 0x0101;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_SOFTWARE = 0x8022;

export interface BindingResult {
  /** XOR-MAPPED-ADDRESS (IPv4 only; undefined for other families). */
  mapped?: { address: string; port: number };
  software?: string;
  rttMs: number;
}

function bindingRequest(): { bytes: Buffer; tid: Buffer } {
  const tid = randomBytes(12);
  const bytes = Buffer.alloc(20);
  bytes.writeUInt16BE(BINDING_REQUEST, 0);
  bytes.writeUInt16BE(0, 2);
  bytes.writeUInt32BE(MAGIC_COOKIE, 4);
  tid.copy(bytes, 8);
  return { bytes, tid };
}

/** Parses a Binding success for `tid`; undefined when `msg` is anything else. */
function parseSuccess(msg: Buffer, tid: Buffer): Omit<BindingResult, "rttMs"> | undefined {
  if (msg.length < 20 || msg.readUInt16BE(0) !== BINDING_SUCCESS) return undefined;
  if (msg.readUInt32BE(4) !== MAGIC_COOKIE || !msg.subarray(8, 20).equals(tid)) return undefined;
  const end = Math.min(msg.length, 20 + msg.readUInt16BE(2));
  const out: Omit<BindingResult, "rttMs"> = {};
  for (let off = 20; off + 4 <= end; ) {
    const type = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 2);
    const value = msg.subarray(off + 4, off + 4 + len);
    if (type === ATTR_XOR_MAPPED_ADDRESS && len === 8 && value[1] === 0x01) {
      const port = value.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16);
      const ip = value.readUInt32BE(4) ^ MAGIC_COOKIE;
      out.mapped = { address: [24, 16, 8, 0].map((s) => (ip >>> s) & 0xff).join("."), port };
    } else if (type === ATTR_SOFTWARE) {
      out.software = value.toString("utf8");
    }
    off += 4 + ((len + 3) & ~3); // attributes are padded to 4 bytes (RFC 8489 §14)
  }
  return out;
}

export interface BindingOptions {
  host?: string;
  port: number;
  transport?: "udp" | "tcp";
  /** Overall bound (default 2000 ms). UDP requests are retransmitted every 100 ms until then. */
  timeoutMs?: number;
}

/** One STUN Binding; rejects on timeout or connection error. */
export function stunBinding(opts: BindingOptions): Promise<BindingResult> {
  const host = opts.host ?? "127.0.0.1";
  const timeoutMs = opts.timeoutMs ?? 2000;
  const { bytes, tid } = bindingRequest();
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    if ((opts.transport ?? "udp") === "udp") {
      const sock = createSocket("udp4");
      const finish = (err?: Error, res?: BindingResult) => {
        clearInterval(resend);
        clearTimeout(timer);
        sock.close();
        if (err) reject(err);
        else resolve(res!);
      };
      const send = () => sock.send(bytes, opts.port, host);
      const resend = setInterval(send, 100);
      const timer = setTimeout(
        () => finish(new Error(`no STUN Binding response from udp ${host}:${opts.port}`)),
        timeoutMs,
      );
      sock.on("error", (e) => finish(e));
      sock.on("message", (msg) => {
        const ok = parseSuccess(msg, tid);
        if (ok) finish(undefined, { ...ok, rttMs: performance.now() - t0 });
      });
      send();
    } else {
      const sock = connect({ host, port: opts.port });
      let buf = Buffer.alloc(0);
      const finish = (err?: Error, res?: BindingResult) => {
        clearTimeout(timer);
        sock.destroy();
        if (err) reject(err);
        else resolve(res!);
      };
      const timer = setTimeout(
        () => finish(new Error(`no STUN Binding response from tcp ${host}:${opts.port}`)),
        timeoutMs,
      );
      sock.on("connect", () => sock.write(bytes));
      sock.on("error", (e) => finish(e));
      sock.on("data", (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 20) return;
        const total = 20 + buf.readUInt16BE(2);
        if (buf.length < total) return;
        const ok = parseSuccess(buf.subarray(0, total), tid);
        finish(
          ok ? undefined : new Error("unexpected STUN message over TCP"),
          ok && { ...ok, rttMs: performance.now() - t0 },
        );
      });
    }
  });
}

/** Retries `stunBinding` until it succeeds or `totalMs` runs out (for start-up readiness). */
export async function waitForStun(opts: BindingOptions & { totalMs?: number }): Promise<void> {
  const deadline = Date.now() + (opts.totalMs ?? 10_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await stunBinding({ ...opts, timeoutMs: Math.min(500, opts.timeoutMs ?? 500) });
      return;
    } catch (e) {
      last = e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`server never answered a STUN Binding: ${String(last)}`);
}
