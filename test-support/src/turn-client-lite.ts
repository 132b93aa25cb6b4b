// A tiny scripted TURN client for end-to-end tests of a running relay: one control connection
// (UDP, TCP or TLS), long-term credentials with the 401 -> REALM/NONCE round trip (RFC 8489
// §9.2), Allocate / Refresh / CreatePermission / ChannelBind, Send indications and ChannelData,
// and raw writes for malformed traffic. Every wait is bounded.
//
// Built on relay-core's own codec (StunMessageBuilder, decodeStun, StreamFramer).
//
//   const c = await TurnClientLite.open({ port, username, password });
//   const { relayed } = await c.allocate();
//   await c.createPermission({ family: 4, address: "127.0.0.1", port: peerPort });
//   await c.channelBind(0x4000, peer);
//   c.sendChannelData(0x4000, payload);
//   c.close();
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import tls from "node:tls";
import {
  AttributeType,
  decodeChannelData,
  decodeStun,
  encodeChannelData,
  longTermKeyMd5,
  MessageClass,
  Method,
  readAddress,
  readErrorCode,
  readString,
  readUint32,
  readXorAddress,
  StreamFramer,
  type StunMessage,
  StunMessageBuilder,
  type TransportAddress,
  TransportProtocol,
} from "@turnpike/relay-core";

export type { TransportAddress };
export {
  AttributeType,
  longTermKeyMd5,
  MessageClass,
  Method,
  readString,
  StunMessageBuilder,
  TransportProtocol,
};

export type LiteTransport = "udp" | "tcp" | "tls";

export interface LiteOptions {
  host?: string;
  port: number;
  transport?: LiteTransport;
  username?: string;
  password?: string;
  /** Per-request bound (default 2000 ms); UDP retransmits every 250 ms meanwhile. */
  timeoutMs?: number;
  /** Source address (127.0.0.2: another client "host" on loopback); default any. */
  localAddress?: string;
  /**
   * UDP source port (default: one the kernel picks). The same 5-tuple again reaches the same
   * worker of a relay whose workers share the listening port (SO_REUSEPORT).
   */
  localPort?: number;
  /**
   * TCP/TLS: bytes written first on the TCP connection, before any TURN or TLS byte (a PROXY
   * protocol header, as a load balancer sends it).
   */
  preamble?: Uint8Array;
}

export interface LiteResponse {
  message: StunMessage;
  /** 0 for a success response, else the ERROR-CODE. */
  code: number;
  reason: string;
}

export interface ChannelDataIn {
  channel: number;
  data: Buffer;
}

export interface DataIndicationIn {
  peer: TransportAddress | undefined;
  data: Buffer;
}

export class TurnClientLite {
  /** Every ChannelData frame received, in order. */
  readonly channelData: ChannelDataIn[] = [];
  /** Every Data indication received, in order. */
  readonly dataIndications: DataIndicationIn[] = [];
  /** XOR-PEER-ADDRESS of every ConnectionAttempt indication received (RFC 6062 §4.4). */
  readonly connectionAttempts: (TransportAddress | undefined)[] = [];
  /** Codes (0 = success) of responses to transactions this client did not start (sendRaw). */
  readonly unsolicited: number[] = [];
  /** Set once the server closed a TCP/TLS connection (or it errored). */
  closedByPeer = false;
  onChannelData: ((c: ChannelDataIn) => void) | undefined;

  private realm: string | undefined;
  private nonce: string | undefined;
  private readonly pending = new Map<
    string,
    { resolve: (r: LiteResponse) => void; reject: (e: Error) => void }
  >();
  private readonly framer = new StreamFramer();
  private closed = false;
  private constructor(
    private readonly opts: Required<
      Pick<LiteOptions, "host" | "port" | "transport" | "timeoutMs">
    > &
      LiteOptions,
    private readonly udp: dgram.Socket | undefined,
    private readonly stream: net.Socket | undefined,
  ) {}

  static async open(options: LiteOptions): Promise<TurnClientLite> {
    const opts = {
      host: "127.0.0.1",
      transport: "udp" as LiteTransport,
      timeoutMs: 2000,
      ...options,
    };
    const family = net.isIPv6(opts.host) ? "udp6" : "udp4";
    if (opts.transport === "udp") {
      const sock = dgram.createSocket(family);
      await new Promise<void>((resolve, reject) => {
        sock.once("error", reject);
        sock.bind(opts.localPort ?? 0, opts.localAddress ?? opts.host, () => {
          sock.off("error", reject);
          resolve();
        });
      });
      const c = new TurnClientLite(opts, sock, undefined);
      sock.on("message", (msg) => c.onInput(msg));
      sock.on("error", () => {});
      return c;
    }
    const stream = await new Promise<net.Socket>((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`${opts.transport} connect to ${opts.host}:${opts.port} timed out`));
      }, opts.timeoutMs);
      const ready = () => {
        clearTimeout(timer);
        resolve(s);
      };
      const preamble = opts.preamble;
      const raw =
        opts.transport === "tls" && preamble === undefined && opts.localAddress === undefined
          ? undefined
          : net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress });
      if (raw !== undefined && preamble !== undefined) raw.write(preamble);
      const s =
        opts.transport === "tls"
          ? tls.connect(
              raw === undefined
                ? { host: opts.host, port: opts.port, rejectUnauthorized: false }
                : { socket: raw, rejectUnauthorized: false },
              ready,
            )
          : raw!.once("connect", ready);
      s.once("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    stream.setNoDelay(true);
    const c = new TurnClientLite(opts, undefined, stream);
    stream.on("data", (chunk: Buffer) => {
      c.framer.push(chunk);
      for (let f = c.framer.next(); f !== undefined; f = c.framer.next()) c.onInput(Buffer.from(f));
    });
    const gone = () => {
      c.closedByPeer = true;
      // A transaction on a closed connection can never complete: fail it now.
      for (const p of c.pending.values()) p.reject(new Error("connection closed by the server"));
      c.pending.clear();
    };
    stream.on("close", gone);
    stream.on("error", gone);
    return c;
  }

  /** The local address of the control connection. */
  localAddress(): { address: string; port: number } {
    if (this.udp) return this.udp.address();
    return { address: this.stream!.localAddress ?? "", port: this.stream!.localPort ?? 0 };
  }

  /** Writes bytes as they are (no framing help): for malformed traffic. */
  sendRaw(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.udp) this.udp.send(bytes, this.opts.port, this.opts.host);
    else if (!this.stream!.destroyed) this.stream!.write(bytes);
  }

  /**
   * One request/response transaction. `build` adds the method's attributes; with `auth` (the
   * default when a username is set) USERNAME/REALM/NONCE/MESSAGE-INTEGRITY follow, after a
   * first unauthenticated round trip to learn the realm and nonce (and one retry on 438).
   */
  async request(
    method: number,
    build: (b: StunMessageBuilder) => void = () => {},
    options: { auth?: boolean; fingerprint?: boolean } = {},
  ): Promise<LiteResponse> {
    const auth = options.auth ?? this.opts.username !== undefined;
    let first = await this.transact(method, build, auth && this.nonce !== undefined, options);
    for (let round = 0; auth && round < 2; round++) {
      if (first.code !== 401 && first.code !== 438) break;
      const realm = readString(first.message, AttributeType.Realm);
      const nonce = readString(first.message, AttributeType.Nonce);
      if (realm === undefined || nonce === undefined) break;
      this.realm = realm;
      this.nonce = nonce;
      first = await this.transact(method, build, true, options);
    }
    return first;
  }

  /** A request with the current realm/nonce but a wrong key (bad MESSAGE-INTEGRITY). */
  async requestWithBadIntegrity(method: number, build: (b: StunMessageBuilder) => void) {
    return this.transact(method, build, true, {}, true);
  }

  async allocate(
    opts: { lifetime?: number; additionalFamily?: 4 | 6; family?: 4 | 6 } = {},
  ): Promise<LiteResponse & { relayed: TransportAddress[]; lifetime: number | undefined }> {
    const r = await this.request(Method.Allocate, (b) => {
      b.requestedTransport(TransportProtocol.Udp);
      if (opts.lifetime !== undefined) b.uint32(AttributeType.Lifetime, opts.lifetime);
      if (opts.family !== undefined)
        b.addressFamily(AttributeType.RequestedAddressFamily, opts.family);
      if (opts.additionalFamily !== undefined)
        b.addressFamily(AttributeType.AdditionalAddressFamily, opts.additionalFamily);
    });
    const relayed: TransportAddress[] = [];
    if (r.code === 0) {
      for (const a of r.message.attributes) {
        if (a.type !== AttributeType.XorRelayedAddress) continue;
        const one = readXorAddress(
          { ...r.message, attributes: [a] },
          AttributeType.XorRelayedAddress,
        );
        if (one) relayed.push(one);
      }
    }
    return { ...r, relayed, lifetime: readUint32(r.message, AttributeType.Lifetime) };
  }

  refresh(lifetime: number): Promise<LiteResponse> {
    return this.request(Method.Refresh, (b) => b.uint32(AttributeType.Lifetime, lifetime));
  }

  createPermission(peer: TransportAddress): Promise<LiteResponse> {
    return this.request(Method.CreatePermission, (b) =>
      b.xorAddress(AttributeType.XorPeerAddress, peer),
    );
  }

  channelBind(channel: number, peer: TransportAddress): Promise<LiteResponse> {
    return this.request(Method.ChannelBind, (b) =>
      b.channelNumber(channel).xorAddress(AttributeType.XorPeerAddress, peer),
    );
  }

  /** A Send indication (RFC 8656 §11.1): no response, ever. */
  sendIndication(peer: TransportAddress, data: Uint8Array): void {
    const b = new StunMessageBuilder(Method.Send, MessageClass.Indication, randomBytes(12));
    b.xorAddress(AttributeType.XorPeerAddress, peer).bytes(AttributeType.Data, data);
    this.sendRaw(b.build());
  }

  /** ChannelData (RFC 8656 §12.4), padded on TCP/TLS (§12.5). */
  sendChannelData(channel: number, data: Uint8Array): void {
    this.sendRaw(encodeChannelData(channel, data, this.opts.transport !== "udp"));
  }

  /** Resolves once `count` ChannelData frames have arrived in total (bounded). */
  async waitForChannelData(count: number, timeoutMs = 5000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.channelData.length < count) {
      if (Date.now() > end) {
        throw new Error(
          `only ${this.channelData.length}/${count} ChannelData within ${timeoutMs} ms`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** Resolves once the server has closed the TCP/TLS connection (bounded). */
  async waitClosedByPeer(timeoutMs = 3000): Promise<boolean> {
    const end = Date.now() + timeoutMs;
    while (!this.closedByPeer && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return this.closedByPeer;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.udp?.close();
    this.stream?.destroy();
  }

  // -------------------------------------------------------------------------------------

  private transact(
    method: number,
    build: (b: StunMessageBuilder) => void,
    withIntegrity: boolean,
    options: { fingerprint?: boolean },
    badKey = false,
  ): Promise<LiteResponse> {
    const tid = randomBytes(12);
    const b = new StunMessageBuilder(method, MessageClass.Request, tid);
    build(b);
    if (withIntegrity) {
      const username = this.opts.username ?? "";
      b.string(AttributeType.Username, username);
      b.string(AttributeType.Realm, this.realm ?? "");
      b.string(AttributeType.Nonce, this.nonce ?? "");
      const password = badKey ? `${this.opts.password ?? ""}-wrong` : (this.opts.password ?? "");
      b.messageIntegrity(longTermKeyMd5(username, this.realm ?? "", password));
    }
    if (options.fingerprint ?? true) b.fingerprint();
    const bytes = b.build();
    const key = Buffer.from(tid).toString("hex");
    return new Promise<LiteResponse>((resolve, reject) => {
      const timer = setTimeout(() => {
        clearInterval(resend);
        this.pending.delete(key);
        reject(
          new Error(
            `no response to method 0x${method.toString(16)} within ${this.opts.timeoutMs} ms`,
          ),
        );
      }, this.opts.timeoutMs);
      const resend = setInterval(() => {
        if (this.udp) this.sendRaw(bytes);
      }, 250);
      this.pending.set(key, {
        resolve: (r) => {
          clearTimeout(timer);
          clearInterval(resend);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          clearInterval(resend);
          reject(e);
        },
      });
      if (this.closedByPeer) {
        this.pending.get(key)?.reject(new Error("connection closed by the server"));
        this.pending.delete(key);
        return;
      }
      this.sendRaw(bytes);
    });
  }

  private onInput(msg: Buffer): void {
    const cd = decodeChannelData(msg);
    if (cd !== undefined) {
      const c = { channel: cd.channel, data: msg.subarray(cd.start, cd.end) };
      this.channelData.push(c);
      this.onChannelData?.(c);
      return;
    }
    const d = decodeStun(msg);
    if (!d.ok) return;
    const m = d.message;
    if (m.messageClass === MessageClass.Indication) {
      if (m.method === Method.Data) {
        const data = m.attributes.find((a) => a.type === AttributeType.Data);
        this.dataIndications.push({
          peer: readXorAddress(m, AttributeType.XorPeerAddress),
          data: data ? msg.subarray(data.offset, data.offset + data.length) : Buffer.alloc(0),
        });
      }
      if (m.method === Method.ConnectionAttempt)
        this.connectionAttempts.push(readXorAddress(m, AttributeType.XorPeerAddress));
      return;
    }
    const key = Buffer.from(m.transactionId).toString("hex");
    const done = this.pending.get(key);
    const err = m.messageClass === MessageClass.ErrorResponse ? readErrorCode(m) : undefined;
    if (done === undefined) {
      this.unsolicited.push(m.messageClass === MessageClass.ErrorResponse ? (err?.code ?? 0) : 0);
      return;
    }
    this.pending.delete(key);
    done.resolve({
      message: m,
      code: m.messageClass === MessageClass.ErrorResponse ? (err?.code ?? 0) : 0,
      reason: err?.reason ?? "",
    });
  }
}

/** ALTERNATE-SERVER of a 300 response (RFC 8489 §14.15). */
export function alternateServer(r: LiteResponse): TransportAddress | undefined {
  return readAddress(r.message, AttributeType.AlternateServer);
}

/** A UDP echo peer on 127.0.0.1 (or `host`) that counts what it received. */
export interface EchoPeer {
  address: TransportAddress;
  received: number;
  receivedBytes: number;
  /** Stop echoing (counting goes on). */
  echo: boolean;
  close(): Promise<void>;
}

export async function startEchoPeer(host = "127.0.0.1"): Promise<EchoPeer> {
  const sock = dgram.createSocket(net.isIPv6(host) ? "udp6" : "udp4");
  await new Promise<void>((resolve) => sock.bind(0, host, () => resolve()));
  const peer: EchoPeer = {
    address: { family: net.isIPv6(host) ? 6 : 4, address: host, port: sock.address().port },
    received: 0,
    receivedBytes: 0,
    echo: true,
    close: () => new Promise<void>((r) => sock.close(() => r())),
  };
  sock.on("message", (msg, rinfo) => {
    peer.received++;
    peer.receivedBytes += msg.length;
    if (peer.echo) sock.send(msg, rinfo.port, rinfo.address);
  });
  return peer;
}
