// Micro-benchmarks: ns per operation, with warm-up and several rounds (median reported).
// Rows that need parts of relay-core that are not there yet print "not available".
import stun from "stun";
import {
  Attr,
  type AttrList,
  bindingRequest,
  Class,
  channelNumberValue,
  classOf,
  decode,
  encode,
  errorCodeOf,
  longTermKey,
  Method,
  messageType,
  newTransactionId,
  requestedTransportUdp,
  u32,
  xorAddressValue,
} from "./load/stun-lite.js";

export interface MicroRow {
  name: string;
  nsPerOp: number | null;
  note: string;
}

/** Runs fn in rounds of `iterations`, returns the median ns/op over the rounds. */
export function measure(fn: () => unknown, iterations: number, rounds = 7): number {
  let sink = 0;
  for (let i = 0; i < Math.min(iterations, 20000); i++) if (fn()) sink++; // warm-up / JIT
  const perOp: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) if (fn()) sink++;
    perOp.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  perOp.sort((a, b) => a - b);
  if (sink === -1) console.log(sink); // keeps the calls observable to the optimiser
  return perOp[Math.floor(perOp.length / 2)]!;
}

type CoreModule = Record<string, unknown>;

async function loadCore(): Promise<CoreModule | undefined> {
  try {
    return (await import("@turnpike/relay-core")) as CoreModule;
  } catch {
    return undefined;
  }
}

export async function microRows(quick: boolean): Promise<MicroRow[]> {
  const n = quick ? 20000 : 200000;
  // A Binding request as browsers send it: SOFTWARE + FINGERPRINT.
  const binding = encode(
    messageType(Method.Binding, Class.Request),
    bindingRequest().subarray(8, 20),
    [[Attr.Software, Buffer.from("turnpike-bench micro")]],
    { fingerprint: true },
  );
  const rows: MicroRow[] = [];
  const core = await loadCore();
  const decodeStun = core?.decodeStun;
  if (typeof decodeStun === "function") {
    rows.push({
      name: "decode STUN Binding request: relay-core",
      nsPerOp: measure(() => decodeStun(binding), n),
      note: "decodeStun",
    });
  } else {
    rows.push({
      name: "decode STUN Binding request: relay-core",
      nsPerOp: null,
      note: "not available (no decodeStun export yet)",
    });
  }
  rows.push({
    name: "decode STUN Binding request: stun (npm)",
    nsPerOp: measure(() => stun.decode(binding), n),
    note: "stun 2.1.0 decode()",
  });
  rows.push({
    name: "decode STUN Binding request: bench stun-lite",
    nsPerOp: measure(() => decode(binding), n),
    note: "the generator's own minimal decoder, for scale",
  });
  // Server-level rows: need relay-core's TurnServer (feature check on the exports).
  if (core && typeof core.TurnServer === "function") {
    const relayCore = core as unknown as typeof import("@turnpike/relay-core");
    rows.push(...serverRows(relayCore, quick));
    // The same data path with bandwidth limits on (per allocation and per user), never reached:
    // what charging the two token buckets costs per datagram.
    rows.push(
      ...serverRows(relayCore, quick, {
        label: "bandwidth limits on",
        options: { maxBytesPerSecond: 1e12, maxBytesPerSecondPerUser: 1e12 },
      }),
    );
    rows.push(...cycleRows(relayCore, quick));
  } else {
    rows.push({
      name: "route 100-byte ChannelData through relay-core server",
      nsPerOp: null,
      note: "not available (no TurnServer export yet)",
    });
    rows.push({
      name: "handle authenticated Refresh in relay-core server",
      nsPerOp: null,
      note: "not available (no TurnServer export yet)",
    });
  }
  return rows;
}

export async function runMicro(quick: boolean): Promise<MicroRow[]> {
  const rows = await microRows(quick);
  const w = Math.max(...rows.map((r) => r.name.length));
  process.stdout.write(
    `\n## micro (ns/op, median of 7 rounds)\n| ${"benchmark".padEnd(w)} |     ns/op | note\n|${"-".repeat(w + 2)}|----------:|------\n`,
  );
  for (const r of rows) {
    const v = r.nsPerOp === null ? "n/a" : r.nsPerOp.toFixed(0);
    process.stdout.write(`| ${r.name.padEnd(w)} | ${v.padStart(9)} | ${r.note}\n`);
  }
  return rows;
}

type Core = typeof import("@turnpike/relay-core");
type RelayId = import("@turnpike/relay-core").RelayId;

/** Server options for a second run of the data-path rows, named in their titles. */
interface ServerVariant {
  readonly label: string;
  readonly options: Partial<import("@turnpike/relay-core").TurnServerOptions>;
}

/**
 * Drives relay-core's TurnServer directly (no sockets): one authenticated allocation with a
 * permission and a channel, then times the data path and an authenticated Refresh (the data
 * path only, for a variant).
 */
function serverRows(core: Core, quick: boolean, variant?: ServerVariant): MicroRow[] {
  const secret = "micro-secret";
  const nowWall = Date.now();
  let now = 1000; // monotonic ms, as the runtime would pass
  const server = new core.TurnServer({
    realm: "bench.turnpike.test",
    credentials: new core.SharedSecretCredentials([secret]),
    random: new core.SeededRandom(42),
    relayAddresses: { ip4: { bind: "127.0.0.1" } },
    peerPolicy: new core.PeerAddressPolicy({ allowLoopback: true }),
    unixTimeOffsetMs: nowWall - now,
    ...variant?.options,
  });
  const client = { address: "127.0.0.1", port: 40000 };
  const peer = { address: "127.0.0.1", port: 9000 };
  const cred = core.mintRestCredentials(secret, Math.floor(nowWall / 1000), 86400, "micro");
  let realm = "";
  let nonce = Buffer.alloc(0);
  let key: Buffer | undefined;
  const listener = core.listenerId(0);
  let relay: RelayId | undefined;
  const drain = () => {
    let last: Uint8Array | undefined;
    for (let c = server.pollOutput(); c; c = server.pollOutput()) {
      if (c.type === "transmit") last = c.data;
      else if (c.type === "open-relay") relay = c.relay;
    }
    return last;
  };
  const feed = (bytes: Buffer) => {
    server.handleUdpClient(listener, bytes, client.address, client.port, now);
    let res = drain();
    if (!res && relay !== undefined) {
      server.handleRelayBound(relay, now);
      res = drain();
    }
    return res ? decode(Buffer.from(res)) : undefined;
  };
  const request = (method: number, attrs: AttrList) => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const all: AttrList = key
        ? [
            ...attrs,
            [Attr.Username, Buffer.from(cred.username)],
            [Attr.Realm, Buffer.from(realm)],
            [Attr.Nonce, nonce],
          ]
        : attrs;
      const res = feed(
        encode(messageType(method, Class.Request), newTransactionId(), all, {
          integrityKey: key,
          fingerprint: true,
        }),
      );
      if (!res) throw new Error("no response from TurnServer");
      if (classOf(res.type) === Class.Success) return;
      if (errorCodeOf(res) === 401 && !key) {
        realm = res.attrs.get(Attr.Realm)?.toString("utf8") ?? "";
        nonce = Buffer.from(res.attrs.get(Attr.Nonce) ?? Buffer.alloc(0));
        key = longTermKey(cred.username, realm, cred.password);
        continue;
      }
      throw new Error(`TurnServer answered error ${errorCodeOf(res)}`);
    }
  };
  const rows: MicroRow[] = [];
  try {
    request(Method.Allocate, [[Attr.RequestedTransport, requestedTransportUdp()]]);
    request(Method.CreatePermission, [[Attr.XorPeerAddress, xorAddressValue(peer)]]);
    request(Method.ChannelBind, [
      [Attr.ChannelNumber, channelNumberValue(0x4000)],
      [Attr.XorPeerAddress, xorAddressValue(peer)],
    ]);
  } catch (e) {
    const note = `setup failed: ${e instanceof Error ? e.message : String(e)}`;
    return [
      { name: "route 100-byte ChannelData through relay-core server", nsPerOp: null, note },
      { name: "handle authenticated Refresh in relay-core server", nsPerOp: null, note },
    ];
  }
  const cd = Buffer.alloc(104);
  cd.writeUInt16BE(0x4000, 0);
  cd.writeUInt16BE(100, 2);
  const n = quick ? 20000 : 200000;
  const toPeer = server.handleUdpClient(listener, cd, client.address, client.port, now);
  rows.push({
    name: "route 100-byte ChannelData through relay-core server",
    nsPerOp:
      toPeer === core.RouteKind.ToPeer
        ? measure(() => server.handleUdpClient(listener, cd, client.address, client.port, now), n)
        : null,
    note:
      toPeer === core.RouteKind.ToPeer
        ? "client -> peer, handleUdpClient (address as text, parsed per call)"
        : `unexpected route ${toPeer}`,
  });
  const payload = cd.subarray(4);
  const peerRelay = relay as RelayId; // opened by the Allocate above
  const toClient = server.handlePeerData(peerRelay, payload, peer.address, peer.port, now);
  rows.push({
    name: "route 100-byte peer datagram as ChannelData (relay-core)",
    nsPerOp:
      toClient === core.RouteKind.ToClient
        ? measure(() => server.handlePeerData(peerRelay, payload, peer.address, peer.port, now), n)
        : null,
    note:
      toClient === core.RouteKind.ToClient
        ? "peer -> client, handlePeerData (address as text, parsed per call)"
        : `unexpected route ${toClient}`,
  });
  // The same two routes the way the batched UDP path calls them: numbers in one reused
  // DatagramSource, a byte range of a receive buffer, no strings (relay-server's udp/).
  const arena = new Uint8Array(65544 + 104);
  arena.set(cd, 4);
  const clientSource = new core.DatagramSource();
  clientSource.setText(client.address, client.port);
  const peerSource = new core.DatagramSource();
  peerSource.setText(peer.address, peer.port);
  const numericToPeer = server.handleClientDatagram(listener, arena, 4, 108, clientSource, now);
  rows.push({
    name: "route 100-byte ChannelData, batched path (numbers, byte range)",
    nsPerOp:
      numericToPeer === core.RouteKind.ToPeer
        ? measure(() => server.handleClientDatagram(listener, arena, 4, 108, clientSource, now), n)
        : null,
    note:
      numericToPeer === core.RouteKind.ToPeer
        ? "client -> peer, handleClientDatagram"
        : `unexpected route ${numericToPeer}`,
  });
  const numericToClient = server.handlePeerDatagram(peerRelay, arena, 8, 108, peerSource, now);
  rows.push({
    name: "route 100-byte peer datagram, batched path (numbers, byte range)",
    nsPerOp:
      numericToClient === core.RouteKind.ToClient
        ? measure(() => server.handlePeerDatagram(peerRelay, arena, 8, 108, peerSource, now), n)
        : null,
    note:
      numericToClient === core.RouteKind.ToClient
        ? "peer -> client, handlePeerDatagram"
        : `unexpected route ${numericToClient}`,
  });
  if (variant !== undefined) {
    return rows.map((r) => ({ ...r, name: `${r.name}, ${variant.label}` }));
  }
  // Refresh: distinct transaction ids (a retransmission would hit the response cache).
  const m = quick ? 2000 : 10000;
  const rounds = 7;
  const total = Math.min(m, 20000) + m * rounds;
  const refreshes: Buffer[] = [];
  for (let i = 0; i < total; i++) {
    refreshes.push(
      encode(
        messageType(Method.Refresh, Class.Request),
        newTransactionId(),
        [
          [Attr.Lifetime, u32(600)],
          [Attr.Username, Buffer.from(cred.username)],
          [Attr.Realm, Buffer.from(realm)],
          [Attr.Nonce, nonce],
        ],
        { integrityKey: key, fingerprint: true },
      ),
    );
  }
  let i = 0;
  let ok = 0;
  const ns = measure(
    () => {
      now += 0.001;
      server.handleUdpClient(listener, refreshes[i++]!, client.address, client.port, now);
      for (let c = server.pollOutput(); c; c = server.pollOutput()) {
        if (c.type === "transmit" && c.errorCode === 0) ok++;
      }
      return true;
    },
    m,
    rounds,
  );
  rows.push({
    name: "handle authenticated Refresh in relay-core server",
    nsPerOp: ok === i ? ns : null,
    note:
      ok === i
        ? "decode + MESSAGE-INTEGRITY + FINGERPRINT + response"
        : `${i - ok} of ${i} refreshes not answered with success`,
  });
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Setups and churn through relay-core alone (bench/README.md "fifth pass")

/** One client's requests, encoded before the clock starts: only the server's work is timed. */
interface ScriptedClient {
  readonly port: number;
  /** Where each request sits in the round's receive arena: start, end, start, end, ... */
  readonly ranges: readonly number[];
}

/** 127.0.0.1 as the 32-bit number DatagramSource holds. */
const LOOPBACK = 0x7f000001;

/**
 * What the `allocations` and `churn` scenarios send, driven into a TurnServer with no I/O: many
 * clients from 127.0.0.1 on distinct ports (one socket each, as the generator), TURN REST
 * usernames from one shared secret, a few usernames shared by many clients. Each round gets a
 * fresh server built from the same seed at the same `now`, so the nonce of every 401 is the one
 * the scripts were signed with, and state never grows across rounds. Rounds of `perRound`
 * cycles; the first `warmRounds` are not timed (V8 compiles a function after some thousands of
 * calls, bench/README.md "what V8 did in the window"). Returns the median µs per cycle and
 * the range, or a reason.
 */
function timeCycles(
  core: Core,
  cycle: "setup" | "churn",
  perRound: number,
  warmRounds: number,
  rounds: number,
): { median: number; min: number; max: number } | string {
  const secret = "micro-secret";
  const nowWall = Date.now();
  const now = 1000;
  const realm = "bench.turnpike.test";
  const makeServer = () =>
    new core.TurnServer({
      realm,
      credentials: new core.SharedSecretCredentials([secret]),
      random: new core.SeededRandom(7),
      relayAddresses: { ip4: { bind: "127.0.0.1" } },
      peerPolicy: new core.PeerAddressPolicy({ allowLoopback: true }),
      unixTimeOffsetMs: nowWall - now,
      maxUnauthenticatedRate: 0, // as the bench runs the relay: every client is 127.0.0.1
    });
  const users = Array.from({ length: 16 }, (_, u) => {
    const cred = core.mintRestCredentials(secret, Math.floor(nowWall / 1000), 86400, `bench${u}`);
    return { ...cred, key: longTermKey(cred.username, realm, cred.password) };
  });
  const peer = xorAddressValue({ address: "127.0.0.1", port: 9000 });
  const listener = core.listenerId(0);
  // The nonces: a first server answers every client's credential-less Allocate.
  const nonces: Buffer[] = [];
  const primer = makeServer();
  const challenges: Buffer[] = [];
  for (let c = 0; c < perRound; c++) {
    const challenge = encode(
      messageType(Method.Allocate, Class.Request),
      newTransactionId(),
      [[Attr.RequestedTransport, requestedTransportUdp()]],
      { fingerprint: true },
    );
    challenges.push(challenge);
    primer.handleUdpClient(listener, challenge, "127.0.0.1", 20000 + c, now);
    const out = primer.pollOutput();
    if (out?.type !== "transmit" || out.errorCode !== 401) return "no 401 for the first Allocate";
    const nonce = decode(Buffer.from(out.data))?.attrs.get(Attr.Nonce);
    if (nonce === undefined) return "no NONCE in the 401";
    nonces.push(Buffer.from(nonce));
  }
  const encoded: Buffer[] = [];
  let arenaLength = 0;
  const clients: ScriptedClient[] = challenges.map((challenge, c) => {
    const user = users[c % users.length]!;
    const signed = (method: number, attrs: AttrList) =>
      encode(
        messageType(method, Class.Request),
        newTransactionId(),
        [
          ...attrs,
          [Attr.Username, Buffer.from(user.username)],
          [Attr.Realm, Buffer.from(realm)],
          [Attr.Nonce, nonces[c]!],
        ],
        { integrityKey: user.key, fingerprint: true },
      );
    const allocate = signed(Method.Allocate, [[Attr.RequestedTransport, requestedTransportUdp()]]);
    const rest =
      cycle === "setup"
        ? [
            signed(Method.CreatePermission, [[Attr.XorPeerAddress, peer]]),
            signed(Method.ChannelBind, [
              [Attr.ChannelNumber, channelNumberValue(0x4000)],
              [Attr.XorPeerAddress, peer],
            ]),
          ]
        : [
            signed(Method.Refresh, [[Attr.Lifetime, u32(600)]]),
            signed(Method.Refresh, [[Attr.Lifetime, u32(0)]]),
          ];
    const ranges: number[] = [];
    for (const request of [challenge, allocate, ...rest]) {
      ranges.push(arenaLength, arenaLength + request.length);
      encoded.push(request);
      arenaLength += request.length;
    }
    return { port: 20000 + c, ranges };
  });
  // One Uint8Array holding every request, handed over as byte ranges, as the batched UDP path
  // hands over its receive arena (relay-server's udp/batch-path.ts).
  const arena = new Uint8Array(arenaLength);
  let at = 0;
  for (const request of encoded) {
    arena.set(request, at);
    at += request.length;
  }
  const expected = clients.length * 4;
  const source = new core.DatagramSource();
  const perCycle: number[] = [];
  for (let r = 0; r < warmRounds + rounds; r++) {
    const server = makeServer();
    let answered = 0; // successes, and the one 401 per cycle
    const t0 = process.hrtime.bigint();
    for (const client of clients) {
      // As the batched UDP path calls it (relay-server's udp/): the source as numbers.
      source.setIpv4(LOOPBACK, client.port);
      const ranges = client.ranges;
      for (let q = 0; q < ranges.length; q += 2) {
        server.handleClientDatagram(listener, arena, ranges[q]!, ranges[q + 1]!, source, now);
        for (let o = server.pollOutput(); o; o = server.pollOutput()) {
          if (o.type === "open-relay") server.handleRelayBound(o.relay, now);
          else if (o.type === "transmit" && (o.errorCode === 0 || o.errorCode === 401)) answered++;
        }
      }
    }
    const ns = Number(process.hrtime.bigint() - t0);
    if (answered !== expected)
      return `${expected - answered} of ${expected} requests not answered as expected`;
    if (r >= warmRounds) perCycle.push(ns / 1000 / clients.length);
  }
  perCycle.sort((a, b) => a - b);
  return {
    median: perCycle[Math.floor(perCycle.length / 2)]!,
    min: perCycle[0]!,
    max: perCycle[perCycle.length - 1]!,
  };
}

/** The setup and churn rows: ns per cycle (the table's unit), the spread of rounds in the note. */
export function cycleRows(core: Core, quick: boolean): MicroRow[] {
  const perRound = quick ? 500 : 2000;
  const warmRounds = quick ? 4 : 5; // 2,000 / 10,000 cycles before the clock
  const rounds = quick ? 5 : 21;
  const rows: MicroRow[] = [];
  for (const [cycle, name] of [
    ["setup", "one setup through relay-core (401, Allocate, CreatePermission, ChannelBind)"],
    ["churn", "one churn cycle through relay-core (401, Allocate, Refresh, Refresh 0)"],
  ] as const) {
    const t = timeCycles(core, cycle, perRound, warmRounds, rounds);
    rows.push(
      typeof t === "string"
        ? { name, nsPerOp: null, note: t }
        : {
            name,
            nsPerOp: t.median * 1000,
            note: `median of ${rounds} rounds of ${perRound} clients (16 REST users), after ${warmRounds * perRound} untimed; rounds ${t.min.toFixed(1)}-${t.max.toFixed(1)} µs`,
          },
    );
  }
  return rows;
}
