// A lean TURN client for the load generator only: one allocation per UDP socket (or TCP
// connection), long-term authentication with TURN REST credentials, CreatePermission and
// ChannelBind towards the echo peer, and a data path that sends pre-framed ChannelData or
// Send indications without re-encoding anything per packet.
import type dgram from "node:dgram";
import net from "node:net";
import { mintRestCredentials } from "@turnpike/relay-core";
import { lowPortSocket } from "../ports.js";
import {
  type Address,
  Attr,
  type AttrList,
  Class,
  channelNumberValue,
  classOf,
  type Decoded,
  decode,
  decodeXorAddress,
  encode,
  errorCodeOf,
  longTermKey,
  Method,
  messageType,
  methodOf,
  newTransactionId,
  requestedTransportUdp,
  u32,
  xorAddressValue,
} from "./stun-lite.js";

export type Transport = "udp" | "tcp";
export type DataMode = "channel" | "send";

/** Called for every relayed datagram that comes back: the payload is buf[offset, offset+len). */
export type DataHandler = (buf: Buffer, offset: number, len: number) => void;

export interface TurnClientOptions {
  server: Address;
  transport: Transport;
  /** TURN REST shared secret: credentials are minted per client */
  token: string;
  user: string;
  onData?: DataHandler;
  /** UDP retransmission timeout (RFC 8489 §6.2.1 starts at 500 ms) */
  rtoMs?: number;
  /** how long to wait for a TCP response */
  timeoutMs?: number;
  /**
   * No relay: `server` is the echo peer itself, no TURN is spoken, and every datagram that
   * comes back is data (the floor of the round trip, bench/README.md). UDP only.
   */
  raw?: boolean;
}

export class TurnError extends Error {
  constructor(
    message: string,
    readonly code?: number,
  ) {
    super(message);
  }
}

interface Pending {
  resolve: (m: Decoded) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

const MAX_TCP_BUFFER = 1 << 20;
/**
 * Data packets are not offered over TCP while this much is still queued in the socket: the
 * connection is the bottleneck then, and queueing without bound would only grow memory while
 * counting packets as offered that never left.
 */
export const MAX_TCP_WRITE_QUEUE = 1 << 20;

export class TurnLoadClient {
  onData: DataHandler | undefined;
  relayed: Address | undefined;
  readonly username: string;
  private readonly password: string;
  private realm = "";
  private nonce: Buffer | undefined;
  private key: Buffer | undefined;
  private readonly pending = new Map<string, Pending>();
  private udp: dgram.Socket | undefined;
  private tcp: net.Socket | undefined;
  private tcpBuf: Buffer = Buffer.alloc(0);
  private closed = false;
  private txCounter = 0;

  private constructor(private readonly opts: TurnClientOptions) {
    this.onData = opts.onData;
    // TURN REST credentials valid for a day: the product's minting, coturn's format.
    const cred = mintRestCredentials(opts.token, Math.floor(Date.now() / 1000), 86400, opts.user);
    this.username = cred.username;
    this.password = cred.password;
  }

  static async connect(opts: TurnClientOptions): Promise<TurnLoadClient> {
    if (opts.raw && opts.transport !== "udp") throw new TurnError("no relay: UDP only");
    const c = new TurnLoadClient(opts);
    if (opts.transport === "udp") {
      const sock = await lowPortSocket();
      // A connected socket: the kernel skips the route lookup per send, and only the
      // server's datagrams reach us.
      await new Promise<void>((resolve) =>
        sock.connect(opts.server.port, opts.server.address, resolve),
      );
      sock.on("message", (msg) => c.onDatagram(msg));
      sock.on("error", () => {
        // ECONNREFUSED after the server stopped: requests time out on their own
      });
      c.udp = sock;
    } else {
      const sock = net.connect({
        host: opts.server.address,
        port: opts.server.port,
        noDelay: true,
      });
      await new Promise<void>((resolve, reject) => {
        sock.once("connect", resolve);
        sock.once("error", reject);
      });
      sock.on("error", () => {});
      sock.on("data", (d) => c.onStream(d));
      sock.on("close", () => c.failAll(new TurnError("TCP connection closed")));
      c.tcp = sock;
    }
    return c;
  }

  /** RFC 8656 §7.1: Allocate, answering the 401 challenge with the long-term credential. */
  async allocate(lifetimeSeconds = 600): Promise<Address> {
    const attrs: AttrList = [
      [Attr.RequestedTransport, requestedTransportUdp()],
      [Attr.Lifetime, u32(lifetimeSeconds)],
    ];
    const res = await this.authedRequest(Method.Allocate, attrs);
    const relayed = decodeXorAddress(res.attrs.get(Attr.XorRelayedAddress) ?? Buffer.alloc(0));
    if (!relayed) throw new TurnError("Allocate success without XOR-RELAYED-ADDRESS");
    this.relayed = relayed;
    return relayed;
  }

  async createPermission(peer: Address): Promise<void> {
    await this.authedRequest(Method.CreatePermission, [
      [Attr.XorPeerAddress, xorAddressValue(peer)],
    ]);
  }

  async channelBind(peer: Address, channel: number): Promise<void> {
    await this.authedRequest(Method.ChannelBind, [
      [Attr.ChannelNumber, channelNumberValue(channel)],
      [Attr.XorPeerAddress, xorAddressValue(peer)],
    ]);
  }

  /** RFC 8656 §7.3: lifetime 0 deletes the allocation. */
  async refresh(lifetimeSeconds: number): Promise<void> {
    await this.authedRequest(Method.Refresh, [[Attr.Lifetime, u32(lifetimeSeconds)]]);
  }

  /**
   * A buffer for one ChannelData message with the header written (RFC 8656 §12.4); the
   * caller writes the payload at offset 4. Over TCP the message is padded to 4 bytes (§12.5).
   */
  channelDataPacket(channel: number, payloadLen: number): Buffer {
    const total = this.opts.transport === "tcp" ? 4 + ((payloadLen + 3) & ~3) : 4 + payloadLen;
    const buf = Buffer.allocUnsafe(total);
    buf.writeUInt16BE(channel, 0);
    buf.writeUInt16BE(payloadLen, 2);
    if (total > 4 + payloadLen) buf.fill(0, 4 + payloadLen);
    return buf;
  }

  /**
   * A template Send indication (RFC 8656 §11.1) towards a peer: copy it per packet, write the
   * payload at `sendPayloadOffset` and vary the transaction id with `stampTransaction`.
   */
  sendIndicationTemplate(peer: Address, payloadLen: number): Buffer {
    return encode(messageType(Method.Send, Class.Indication), newTransactionId(), [
      [Attr.XorPeerAddress, xorAddressValue(peer)],
      [Attr.Data, Buffer.alloc(payloadLen)],
    ]);
  }

  /** Offset of the DATA value in a template from sendIndicationTemplate: 20 + 12 + 4. */
  static readonly sendPayloadOffset = 36;

  /** Indications need distinct transaction ids (RFC 8489 §6); a counter is enough here. */
  stampTransaction(buf: Buffer): void {
    this.txCounter = (this.txCounter + 1) >>> 0;
    buf.writeUInt32BE(this.txCounter, 16);
  }

  /**
   * Offers one data packet. False when it was not offered: over TCP when the socket's write
   * queue already holds MAX_TCP_WRITE_QUEUE bytes (backpressure), or when the client is gone.
   */
  send(buf: Buffer): boolean {
    if (this.udp) {
      this.udp.send(buf);
      return true;
    }
    if (!this.tcp || this.tcp.destroyed || this.tcp.writableLength > MAX_TCP_WRITE_QUEUE) {
      return false;
    }
    this.tcp.write(buf);
    return true;
  }

  /** Control messages (requests and their retransmissions) are always written. */
  private transmit(buf: Buffer): void {
    if (this.udp) this.udp.send(buf);
    else this.tcp?.write(buf);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new TurnError("client closed"));
    if (this.udp) {
      const s = this.udp;
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    if (this.tcp) {
      this.tcp.destroy();
    }
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.pending.clear();
  }

  private async authedRequest(method: number, attrs: AttrList): Promise<Decoded> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const withAuth: AttrList = this.key
        ? [
            ...attrs,
            [Attr.Username, Buffer.from(this.username)],
            [Attr.Realm, Buffer.from(this.realm)],
            [Attr.Nonce, this.nonce!],
          ]
        : attrs;
      const tx = newTransactionId();
      const msg = encode(messageType(method, Class.Request), tx, withAuth, {
        integrityKey: this.key,
        fingerprint: true,
      });
      const res = await this.request(tx, msg);
      if (classOf(res.type) === Class.Success) return res;
      const code = errorCodeOf(res);
      const realm = res.attrs.get(Attr.Realm);
      const nonce = res.attrs.get(Attr.Nonce);
      // RFC 8489 §9.2.4: 401 brings realm and nonce; 438 a fresh nonce.
      if ((code === 401 || code === 438) && nonce) {
        if (code === 401 && this.key && attempt > 0) break;
        if (realm) this.realm = realm.toString("utf8");
        this.nonce = Buffer.from(nonce);
        this.key = longTermKey(this.username, this.realm, this.password);
        continue;
      }
      throw new TurnError(`${methodName(method)} failed with error ${code ?? "?"}`, code);
    }
    throw new TurnError(`${methodName(method)}: authentication rejected`, 401);
  }

  private request(tx: Buffer, msg: Buffer): Promise<Decoded> {
    const id = tx.toString("hex");
    return new Promise<Decoded>((resolve, reject) => {
      if (this.closed) {
        reject(new TurnError("client closed"));
        return;
      }
      const rto = this.opts.rtoMs ?? 500;
      let tries = 0;
      const fire = () => {
        if (this.udp) {
          // RFC 8489 §6.2.1: retransmit with doubling RTO, give up after a few tries.
          if (tries >= 6) {
            this.pending.delete(id);
            reject(new TurnError("request timed out"));
            return;
          }
          this.transmit(msg);
          const p = this.pending.get(id);
          if (p) p.timer = setTimeout(fire, rto * 2 ** tries++);
        } else {
          this.pending.delete(id);
          reject(new TurnError("request timed out"));
        }
      };
      this.pending.set(id, {
        resolve,
        reject,
        timer: setTimeout(() => {}, 0),
      });
      if (this.udp) fire();
      else {
        this.transmit(msg);
        this.pending.get(id)!.timer = setTimeout(fire, this.opts.timeoutMs ?? 10000);
      }
    });
  }

  /** The local UDP address (the bench's native generator takes the same port over). */
  get localAddress(): Address | undefined {
    if (!this.udp) return undefined;
    const a = this.udp.address();
    return { address: a.address, port: a.port };
  }

  private onDatagram(msg: Buffer): void {
    if (this.opts.raw) {
      this.onData?.(msg, 0, msg.length);
      return;
    }
    const b0 = msg[0]!;
    if (b0 >= 0x40 && b0 <= 0x7f) {
      // RFC 8656 §12.4: ChannelData
      if (msg.length < 4) return;
      const len = msg.readUInt16BE(2);
      if (4 + len <= msg.length) this.onData?.(msg, 4, len);
      return;
    }
    this.onStunMessage(msg);
  }

  private onStunMessage(msg: Buffer): void {
    const m = decode(msg);
    if (!m) return;
    const cls = classOf(m.type);
    if (cls === Class.Indication) {
      if (methodOf(m.type) === Method.Data) {
        const data = m.attrs.get(Attr.Data);
        if (data) this.onData?.(data, 0, data.length);
      }
      return;
    }
    const id = m.transactionId.toString("hex");
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(m);
  }

  /** RFC 8656 §12.5 / RFC 6062 framing over TCP: STUN messages and padded ChannelData. */
  private onStream(chunk: Buffer): void {
    this.tcpBuf = this.tcpBuf.length === 0 ? chunk : Buffer.concat([this.tcpBuf, chunk]);
    let off = 0;
    const buf = this.tcpBuf;
    while (buf.length - off >= 4) {
      const b0 = buf[off]!;
      let total: number;
      if (b0 >= 0x40 && b0 <= 0x7f) total = 4 + ((buf.readUInt16BE(off + 2) + 3) & ~3);
      else total = 20 + buf.readUInt16BE(off + 2);
      if (buf.length - off < total) break;
      const frame = buf.subarray(off, off + total);
      if (b0 >= 0x40 && b0 <= 0x7f) this.onData?.(frame, 4, frame.readUInt16BE(2));
      else this.onStunMessage(frame);
      off += total;
    }
    this.tcpBuf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off);
    if (this.tcpBuf.length > MAX_TCP_BUFFER) this.tcp?.destroy();
  }
}

function methodName(method: number): string {
  for (const [k, v] of Object.entries(Method)) if (v === method) return k;
  return `method 0x${method.toString(16)}`;
}
