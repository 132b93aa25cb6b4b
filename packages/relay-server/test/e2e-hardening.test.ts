// End to end: the defences against strangers holding slots or memory, and against relaying to
// the relay itself, on a real turnpike-relay process on loopback.
// Connection slots (a per-source cap on connections that have not authenticated, kept for RFC
// 6062 data connections handed between workers, an idle clock
// that only complete messages reset, a TLS handshake deadline of its own), frames an
// unauthenticated connection may not send, static and TURN REST users as distinct principals,
// and the relay's own addresses refused as peers. Other loopback addresses (127.0.0.2, ...)
// stand in for other client hosts.
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readUint32 } from "@turnpike/relay-core";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep, waitUntil } from "@turnpike/test-support/process";
import { droppedByReason } from "@turnpike/test-support/prometheus";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTools } from "@turnpike/test-support/tools";
import {
  AttributeType,
  MessageClass,
  Method,
  StunMessageBuilder,
  startEchoPeer,
  type TransportAddress,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-hardening-token";
const IDLE_SECONDS = 2;

/** A raw TCP connection from `localAddress`; `closedByRelay` is set when the relay ends it. */
interface Raw {
  socket: net.Socket;
  closedByRelay: boolean;
  closedAt: number;
  received: number;
  /** Ends it from our side (not counted as closed by the relay). */
  close(): void;
}

function raw(port: number, localAddress: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    let ours = false;
    const socket = net.connect({ host: "127.0.0.1", port, localAddress });
    const r: Raw = {
      socket,
      closedByRelay: false,
      closedAt: Number.POSITIVE_INFINITY,
      received: 0,
      close: () => {
        ours = true;
        socket.destroy();
      },
    };
    socket.once("connect", () => resolve(r));
    socket.once("error", reject);
    socket.on("error", () => {});
    socket.on("data", (d) => {
      r.received += d.length;
    });
    socket.on("close", () => {
      r.closedByRelay = !ours;
      r.closedAt = performance.now();
    });
  });
}

const binding = () =>
  new StunMessageBuilder(Method.Binding, MessageClass.Request, new Uint8Array(12).fill(7))
    .fingerprint()
    .build();

const promDrops = async (port: number) =>
  droppedByReason((await httpGet(port, "/metrics", 3000)).body);

describe("turnpike-relay connection slots and frame limits", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let tlsPort: number;
  let promPort: number;
  let dir: string;

  beforeAll(async () => {
    requireTools("openssl");
    dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-hardening-"));
    const { cert, key } = selfSignedCert(dir);
    range = reservePortRange(40);
    tlsPort = await freePort();
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: [
        "--tcp-idle-timeout",
        String(IDLE_SECONDS),
        "--max-connections",
        "50",
        "--max-connections-per-ip",
        "10",
        "--tls-listen",
        `127.0.0.1:${tlsPort}`,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
      ],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses connections beyond --max-connections-per-ip from one source, serves other sources, and stops counting a connection once it authenticates", async () => {
    const port = relay!.port;
    // One source opens 15 silent connections: 10 are held, 5 refused at once.
    const hog = await Promise.all(Array.from({ length: 15 }, () => raw(port, "127.0.0.1")));
    await sleep(400);
    expect(hog.filter((r) => !r.closedByRelay)).toHaveLength(10);
    // Another source is still served (one source cannot hold every slot).
    const other = await TurnClientLite.open({ port, transport: "tcp", localAddress: "127.0.0.2" });
    expect((await other.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
    other.close();
    // A source whose connections authenticate (TCP allocations) is not held to the cap...
    const users = [];
    for (let i = 0; i < 10; i++) {
      const creds = restCredentials(TOKEN, `u${i}`);
      const c = await TurnClientLite.open({
        port,
        transport: "tcp",
        localAddress: "127.0.0.3",
        username: creds.username,
        password: creds.credential,
      });
      users.push(c);
      expect((await c.allocate()).code).toBe(0);
    }
    // ...so it may still open fresh connections of its own.
    const eleventh = await TurnClientLite.open({
      port,
      transport: "tcp",
      localAddress: "127.0.0.3",
    });
    expect((await eleventh.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
    eleventh.close();
    for (const c of users) c.close();
    for (const r of hog) r.close();
    const drops = await promDrops(promPort);
    expect(drops.get("client-connection-per-ip-limit")).toBe(5);
  });

  it("closes a connection dribbling bytes at --tcp-idle-timeout while complete messages keep another open, and never an authenticated one", async () => {
    const port = relay!.port;
    const t0 = performance.now();
    // A STUN header announcing 1,000 bytes, then one byte every 250 ms: never a complete frame.
    const dribbler = await raw(port, "127.0.0.4");
    dribbler.socket.write(Uint8Array.of(0x00, 0x03, 0x03, 0xe8));
    const drip = setInterval(() => {
      if (!dribbler.socket.destroyed) dribbler.socket.write(Uint8Array.of(0x41));
    }, 250);
    // A Binding request every 500 ms: complete messages, so the idle clock restarts each time.
    const talker = await raw(port, "127.0.0.4");
    const talk = setInterval(() => {
      if (!talker.socket.destroyed) talker.socket.write(binding());
    }, 500);
    // A TCP allocation that then says nothing: the allocation governs it, not the idle clock.
    const creds = restCredentials(TOKEN, "quiet");
    const quiet = await TurnClientLite.open({
      port,
      transport: "tcp",
      username: creds.username,
      password: creds.credential,
    });
    expect((await quiet.allocate()).code).toBe(0);
    try {
      await waitUntil("the dribbler to be closed", () => dribbler.closedByRelay, 6000);
      const after = (dribbler.closedAt - t0) / 1000;
      expect(after).toBeGreaterThan(IDLE_SECONDS - 0.5);
      await sleep(1500);
      expect(talker.closedByRelay).toBe(false);
      expect(talker.received).toBeGreaterThan(0);
      expect(quiet.closedByPeer).toBe(false);
      expect((await quiet.refresh(600)).code).toBe(0);
    } finally {
      clearInterval(drip);
      clearInterval(talk);
      talker.close();
      quiet.close();
    }
  });

  it("ends a TLS handshake dribbled a byte at a time at its own deadline", async () => {
    const t0 = performance.now();
    const slow = await raw(tlsPort, "127.0.0.5");
    // The start of a TLS record (handshake, TLS 1.0 record version, 512 bytes), a byte at a time.
    const record = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]), Buffer.alloc(512)]);
    let i = 0;
    const drip = setInterval(() => {
      if (!slow.socket.destroyed && i < record.length) slow.socket.write(record.subarray(i, ++i));
    }, 200);
    try {
      await waitUntil("the handshake to be ended", () => slow.closedByRelay, 6000);
      expect((slow.closedAt - t0) / 1000).toBeGreaterThan(IDLE_SECONDS - 0.5);
      // The listener still completes handshakes.
      const ok = await TurnClientLite.open({ port: tlsPort, transport: "tls" });
      expect((await ok.request(Method.Binding, () => {}, { auth: false })).code).toBe(0);
      ok.close();
    } finally {
      clearInterval(drip);
    }
  });

  it("closes an unauthenticated connection at a header claiming a 64 KB frame, and relays 60 KB frames once it holds an allocation", async () => {
    const port = relay!.port;
    const before = (await promDrops(promPort)).get("oversized-frame") ?? 0;
    const claimer = await raw(port, "127.0.0.6");
    claimer.socket.write(Uint8Array.of(0x40, 0x00, 0xff, 0xff));
    await waitUntil("the claimer to be closed", () => claimer.closedByRelay, 2000);
    expect((await promDrops(promPort)).get("oversized-frame")).toBe(before + 1);

    const peer = await startEchoPeer();
    const creds = restCredentials(TOKEN, "big");
    const c = await TurnClientLite.open({
      port,
      transport: "tcp",
      localAddress: "127.0.0.6",
      username: creds.username,
      password: creds.credential,
    });
    try {
      expect((await c.allocate()).code).toBe(0);
      expect((await c.channelBind(0x4000, peer.address)).code).toBe(0);
      const big = Buffer.alloc(60_000, 0x5a);
      c.sendChannelData(0x4000, big);
      await c.waitForChannelData(1, 5000);
      expect(c.channelData[0]!.data.equals(big)).toBe(true);
      expect(c.closedByPeer).toBe(false);
    } finally {
      c.close();
      await peer.close();
    }
  });
});

describe("turnpike-relay RFC 6062 data connections: principals kept apart, per-source counts kept", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;

  beforeAll(async () => {
    range = reservePortRange(20);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: [
        "--user",
        "alice:alicepw",
        "--max-allocations-per-user",
        "1",
        "--max-connections-per-ip",
        "5",
      ],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("keeps --user alice and TURN REST '<expiry>:alice' apart: separate quotas, and REST alice cannot ConnectionBind static alice's peer connection", async () => {
    const port = relay!.port;
    const rest = restCredentials(TOKEN, "alice");
    const open = (username: string, password: string) =>
      TurnClientLite.open({ port, transport: "tcp", username, password });
    // The peer: a TCP service on loopback that says something secret to whoever is bound.
    const service = net.createServer((s) => {
      s.on("error", () => {}); // the relay resets it when the allocation goes
      s.end("static alice's secret");
    });
    await new Promise<void>((r) => service.listen(0, "127.0.0.1", () => r()));
    const servicePort = (service.address() as net.AddressInfo).port;
    const staticAlice = await open("alice", "alicepw");
    const mallory = await open(rest.username, rest.credential);
    const clients = [staticAlice, mallory];
    try {
      const tcp = await staticAlice.request(Method.Allocate, (b) =>
        b.requestedTransport(TransportProtocol.Tcp),
      );
      expect(tcp.code, tcp.reason).toBe(0);
      // Per-user quota 1 each: REST alice is someone else, so her first allocation fits.
      expect((await mallory.allocate()).code).toBe(0);
      const target: TransportAddress = { family: 4, address: "127.0.0.1", port: servicePort };
      expect((await staticAlice.createPermission(target)).code).toBe(0);
      const connect = await staticAlice.request(Method.Connect, (b) =>
        b.xorAddress(AttributeType.XorPeerAddress, target),
      );
      expect(connect.code, connect.reason).toBe(0);
      const id = readUint32(connect.message, AttributeType.ConnectionId)!;
      // Mallory, on a data connection of her own, with REST credentials for "alice".
      const data = await open(rest.username, rest.credential);
      clients.push(data);
      const bind = await data.request(Method.ConnectionBind, (b) =>
        b.uint32(AttributeType.ConnectionId, id),
      );
      expect(bind.code).toBe(400);
      // The same answer as for an id that does not exist.
      const probe = await data.request(Method.ConnectionBind, (b) =>
        b.uint32(AttributeType.ConnectionId, (id ^ 0x5a5a5a5a) >>> 0),
      );
      expect(probe.code).toBe(400);
      expect(probe.reason).toBe(bind.reason);
    } finally {
      for (const c of clients) c.close();
      await new Promise<void>((r) => service.close(() => r()));
    }
  });

  it("keeps a data connection whose ConnectionBind failed counted against its source: 30 attempts leave at most 5 open", async () => {
    const creds = restCredentials(TOKEN, "binder");
    const connections: TurnClientLite[] = [];
    const answers: (number | string)[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        // 127.0.0.3 reaches worker 1 (the listeners steer by source address), and even
        // CONNECTION-IDs are worker 0's: with two workers each ConnectionBind is handed over,
        // and worker 0 knows no such id (400, RFC 6062 §5.4). With one, 400 at once.
        const c = await TurnClientLite.open({
          port: relay!.port,
          transport: "tcp",
          localAddress: "127.0.0.3",
          username: creds.username,
          password: creds.credential,
        });
        connections.push(c);
        answers.push(
          await c
            .request(Method.ConnectionBind, (b) => b.uint32(AttributeType.ConnectionId, 2 * i + 2))
            .then(
              (r) => r.code,
              () => "closed",
            ),
        );
      }
      await sleep(300);
      // Unbound, they still count against 127.0.0.3: the sixth and later are closed at once.
      expect(answers.filter((a) => a === 400)).toHaveLength(5);
      expect(connections.filter((c) => !c.closedByPeer)).toHaveLength(5);
    } finally {
      for (const c of connections) c.close();
    }
  });
});

describe("turnpike-relay refuses itself as a peer", () => {
  let range: PortRange;
  const relays: TurnpikeHandle[] = [];

  beforeAll(() => {
    range = reservePortRange(20);
  });
  afterAll(async () => {
    for (const r of relays) await r.stop("SIGINT", 5000);
    range?.release();
  });

  async function start(extra: string[]) {
    const promPort = await freePort();
    const r = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      // The relay's own public address, allowed explicitly, and loopback (tests' peers).
      extraArgs: [
        "--public-ip4",
        "203.0.113.10",
        "--allow-peer",
        "203.0.113.0/24",
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
        ...extra,
      ],
    });
    relays.push(r);
    return { relay: r, promPort };
  }

  async function tcpClient(relay: TurnpikeHandle) {
    const creds = restCredentials(TOKEN, "self");
    const c = await TurnClientLite.open({
      port: relay.port,
      transport: "tcp",
      username: creds.username,
      password: creds.credential,
    });
    const r = await c.request(Method.Allocate, (b) => b.requestedTransport(TransportProtocol.Tcp));
    expect(r.code, r.reason).toBe(0);
    return c;
  }

  const connect = (c: TurnClientLite, peer: TransportAddress) =>
    c.request(Method.Connect, (b) => b.xorAddress(AttributeType.XorPeerAddress, peer));

  it("refuses its listening ports and its own address outside the relay range, whatever --allow-peer says", async () => {
    const { relay, promPort } = await start([]);
    const loop = (port: number): TransportAddress => ({ family: 4, address: "127.0.0.1", port });
    const own = (port: number): TransportAddress => ({ family: 4, address: "203.0.113.10", port });
    // RFC 6062 Connect towards its own health and metrics listeners and its TURN port.
    const tcp = await tcpClient(relay);
    expect((await tcp.createPermission(loop(0))).code).toBe(0);
    for (const port of [relay.healthPort, promPort, relay.port]) {
      expect((await connect(tcp, loop(port))).code, `Connect 127.0.0.1:${port}`).toBe(403);
    }
    expect((await tcp.createPermission(own(0))).code).toBe(0);
    expect((await connect(tcp, own(22))).code).toBe(403);
    tcp.close();
    // UDP: channels to the same, refused; another allocation's relayed address, allowed.
    const creds = restCredentials(TOKEN, "self-udp");
    const udp = await TurnClientLite.open({
      port: relay.port,
      username: creds.username,
      password: creds.credential,
    });
    expect((await udp.allocate()).code).toBe(0);
    let channel = 0x4000;
    for (const peer of [loop(relay.port), own(22), own(8080)]) {
      const r = await udp.channelBind(channel++, peer);
      expect(r.code, `ChannelBind ${peer.address}:${peer.port}`).toBe(403);
    }
    expect((await udp.channelBind(channel++, own(range.min))).code).toBe(0);
    // Peers on loopback at other ports (every interop suite's echo peers) still work.
    const peer = await startEchoPeer();
    expect((await udp.channelBind(channel, peer.address)).code).toBe(0);
    udp.sendChannelData(channel, Buffer.from("echo"));
    await udp.waitForChannelData(1, 3000);
    udp.close();
    await peer.close();
  });

  it("relays to its own listeners with --allow-self-peer", async () => {
    const { relay } = await start(["--allow-self-peer"]);
    expect(relay.stderr).toContain("--allow-self-peer is set");
    const tcp = await tcpClient(relay);
    expect((await tcp.createPermission({ family: 4, address: "127.0.0.1", port: 0 })).code).toBe(0);
    const r = await connect(tcp, { family: 4, address: "127.0.0.1", port: relay.healthPort });
    expect(r.code, r.reason).toBe(0);
    tcp.close();
  });
});
