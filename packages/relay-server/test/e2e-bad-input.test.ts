// End to end: bad traffic against a running turnpike-relay process, and the peer policy as seen
// from outside. fast-check generates the garbage (a fixed number of datagrams and TCP streams,
// seed printed for reproduction); afterwards the process must still be alive and serving, and
// the drop counters it exports (Prometheus pull endpoint) must show what it threw away.
import { randomBytes } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { restCredentials } from "@turnpike/test-support/credentials";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { countersBy, droppedByReason } from "@turnpike/test-support/prometheus";
import { stunBinding } from "@turnpike/test-support/stun";
import {
  AttributeType,
  longTermKeyMd5,
  MessageClass,
  Method,
  readString,
  StunMessageBuilder,
  startEchoPeer,
  type TransportAddress,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { httpGet, startTurnpike, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-bad-input-token";
const DATAGRAMS = 2000;
/** Of which authenticated (valid MESSAGE-INTEGRITY) messages with random attributes. */
const SIGNED = 300;
const STREAMS = 50;
const CHANNEL = 0x4000;
/** The largest UDP payload over IPv4 (65,535 - 20 IP - 8 UDP). */
const MAX_UDP = 65_507;

async function scrape(port: number): Promise<string> {
  const r = await httpGet(port, "/metrics", 3000);
  expect(r.status).toBe(200);
  return r.body;
}

const drops = droppedByReason;
const authFailures = (text: string) => countersBy(text, /^turn_auth_failures(_total)?$/, "reason");

// ------------------------------------------------------------------------------------------
// Generators

const tid = fc.uint8Array({ minLength: 12, maxLength: 12 });

/** A well-formed Allocate request with a few attributes and a FINGERPRINT. */
const validStun = fc
  .record({ id: tid, lifetime: fc.nat(3600), software: fc.string({ maxLength: 40 }) })
  .map(({ id, lifetime, software }) =>
    new StunMessageBuilder(Method.Allocate, MessageClass.Request, id)
      .requestedTransport(TransportProtocol.Udp)
      .uint32(AttributeType.Lifetime, lifetime)
      .string(AttributeType.Software, software)
      .fingerprint()
      .build(),
  );

const header = (type: number, length: number, id: Uint8Array): Uint8Array => {
  const h = new Uint8Array(20);
  h[0] = (type >>> 8) & 0x3f;
  h[1] = type & 0xff;
  h[2] = length >>> 8;
  h[3] = length & 0xff;
  h.set([0x21, 0x12, 0xa4, 0x42], 4);
  h.set(id, 8);
  return h;
};

const concat = (...parts: Uint8Array[]): Uint8Array => Buffer.concat(parts);

const randomBytesArb = fc.uint8Array({ minLength: 0, maxLength: 1500 });

const truncatedStun = validStun.chain((m) => fc.nat(m.length - 1).map((n) => m.subarray(0, n)));

/** A sound header whose length field disagrees with the body. */
const absurdLength = fc
  .record({
    type: fc.integer({ min: 0, max: 0x3fff }),
    length: fc.integer({ min: 0, max: 0xffff }),
    id: tid,
    body: fc.uint8Array({ maxLength: 200 }),
  })
  .filter((r) => r.length !== r.body.length)
  .map((r) => concat(header(r.type, r.length, r.id), r.body));

/** Header length consistent, but an attribute claims more bytes than the message has. */
const attributePastEnd = fc
  .record({
    attrType: fc.integer({ min: 0, max: 0xffff }),
    claimed: fc.integer({ min: 5, max: 0xffff }),
    id: tid,
    value: fc.uint8Array({ maxLength: 4 }),
  })
  .map((r) => {
    const body = new Uint8Array(4 + r.value.length + (4 - (r.value.length % 4 || 4)));
    body[0] = r.attrType >>> 8;
    body[1] = r.attrType & 0xff;
    body[2] = r.claimed >>> 8;
    body[3] = r.claimed & 0xff;
    body.set(r.value, 4);
    return concat(header(Method.Allocate, body.length, r.id), body);
  });

/** ChannelData whose length field runs past the datagram (or is far shorter). */
const badChannelData = fc
  .record({
    channel: fc.oneof(fc.constant(CHANNEL), fc.integer({ min: 0x4000, max: 0x7fff })),
    length: fc.integer({ min: 0, max: 0xffff }),
    body: fc.uint8Array({ maxLength: 300 }),
  })
  .filter((r) => r.length > r.body.length)
  .map((r) => {
    const h = new Uint8Array([r.channel >>> 8, r.channel & 0xff, r.length >>> 8, r.length & 0xff]);
    return concat(h, r.body);
  });

/** An Allocate with the relay's real realm and nonce but a MESSAGE-INTEGRITY of random bytes. */
const badIntegrity = (username: string, realm: string, nonce: string) =>
  fc.record({ id: tid, mac: fc.uint8Array({ minLength: 20, maxLength: 20 }) }).map((r) => {
    const b = new StunMessageBuilder(Method.Allocate, MessageClass.Request, r.id)
      .requestedTransport(TransportProtocol.Udp)
      .string(AttributeType.Username, username)
      .string(AttributeType.Realm, realm)
      .string(AttributeType.Nonce, nonce)
      .bytes(AttributeType.MessageIntegrity, r.mac);
    return b.fingerprint().build();
  });

/** A known attribute type (or any) with a value of plausible or absurd size. */
const attribute = fc.record({
  type: fc.oneof(
    fc.constantFrom(...Object.values(AttributeType)),
    fc.integer({ min: 0, max: 0xffff }),
  ),
  value: fc.oneof(
    fc.uint8Array({ maxLength: 24 }),
    fc.constantFrom(0, 1, 4, 8, 20).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
  ),
});

/**
 * Structurally valid messages of any method and class with random attributes ("TLV soup"),
 * optionally signed with the client's real long-term key so they pass authentication and
 * reach the method handlers (the deepest code a stranger can hit).
 */
const tlvSoup = (sign?: { username: string; realm: string; nonce: string; key: Uint8Array }) =>
  fc
    .record({
      method: fc.oneof(
        fc.constantFrom(...Object.values(Method)),
        fc.integer({ min: 0, max: 0xfff }),
      ),
      cls: fc.constantFrom(...Object.values(MessageClass)),
      id: tid,
      attrs: fc.array(attribute, { maxLength: 8 }),
      fingerprint: fc.boolean(),
    })
    .map((r) => {
      const b = new StunMessageBuilder(r.method, r.cls, r.id);
      for (const a of r.attrs) {
        // Integrity and FINGERPRINT mid-message are legal to send; keep the real ones last.
        b.bytes(a.type, a.value);
      }
      if (sign) {
        b.string(AttributeType.Username, sign.username)
          .string(AttributeType.Realm, sign.realm)
          .string(AttributeType.Nonce, sign.nonce)
          .messageIntegrity(sign.key);
      }
      if (r.fingerprint) b.fingerprint();
      return b.build();
    });

type StreamPlan =
  | { kind: "random"; bytes: Uint8Array; chunks: number }
  | { kind: "partial"; bytes: Uint8Array }
  | { kind: "huge-then-silence"; type: number; id: Uint8Array }
  | { kind: "valid-then-garbage"; valid: Uint8Array; garbage: Uint8Array };

const streamPlan: fc.Arbitrary<StreamPlan> = fc.oneof(
  fc.record({
    kind: fc.constant("random" as const),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 4096 }),
    chunks: fc.integer({ min: 1, max: 8 }),
  }),
  fc.record({ kind: fc.constant("partial" as const), bytes: truncatedStun }),
  fc.record({
    kind: fc.constant("huge-then-silence" as const),
    type: fc.integer({ min: 0, max: 0x3fff }),
    id: tid,
  }),
  fc.record({
    kind: fc.constant("valid-then-garbage" as const),
    valid: validStun,
    garbage: fc.uint8Array({ minLength: 4, maxLength: 512 }).map((g) => {
      g[0] = 0xc0 | g[0]!; // first bits 0b11: neither STUN nor ChannelData
      return g;
    }),
  }),
);

/** Runs one stream plan; resolves with whether the relay closed the connection itself. */
function runStream(port: number, plan: StreamPlan, holdMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port });
    let closedByRelay = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(closedByRelay);
    };
    const timer = setTimeout(finish, holdMs);
    s.on("error", () => {});
    s.on("data", () => {});
    s.on("close", () => {
      closedByRelay = true;
      finish();
    });
    s.on("end", () => {
      closedByRelay = true;
    });
    s.on("connect", async () => {
      switch (plan.kind) {
        case "random": {
          const step = Math.ceil(plan.bytes.length / plan.chunks);
          for (let i = 0; i < plan.bytes.length && !s.destroyed; i += step) {
            s.write(plan.bytes.subarray(i, i + step));
            await sleep(1);
          }
          break;
        }
        case "partial":
          s.write(plan.bytes);
          break;
        case "huge-then-silence":
          // A STUN header announcing 65,532 bytes, then nothing: the relay must hold at most
          // one frame and let the idle timeout end it.
          s.write(header(plan.type, 0xfffc, plan.id));
          break;
        case "valid-then-garbage":
          s.write(concat(plan.valid, plan.garbage));
          break;
      }
    });
  });
}

// ------------------------------------------------------------------------------------------

describe("turnpike-relay under bad input", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let promPort: number;

  beforeAll(async () => {
    range = reservePortRange(50);
    promPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      extraArgs: ["--prometheus-listen", `127.0.0.1:${promPort}`, "--tcp-idle-timeout", "2"],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("survives thousands of malformed datagrams and hostile TCP streams, counts the drops and keeps serving", async () => {
    const r = relay!;
    const seed = Number(process.env.FC_SEED ?? Date.now() % 2 ** 31);
    console.info(`[e2e-bad-input] fast-check seed ${seed} (rerun with FC_SEED=${seed})`);
    const before = await scrape(promPort);

    // A live allocation with a channel, so malformed traffic also arrives on a 5-tuple the
    // relay knows, and so we can check the data path still works afterwards.
    const peer = await startEchoPeer();
    const creds = restCredentials(TOKEN, "fuzz");
    const client = await TurnClientLite.open({
      port: r.port,
      username: creds.username,
      password: creds.credential,
    });
    const alloc = await client.allocate();
    expect(alloc.code, alloc.reason).toBe(0);
    expect((await client.channelBind(CHANNEL, peer.address)).code).toBe(0);
    // Learn the realm and a nonce for the bad-integrity requests.
    const challenge = await client.request(
      Method.Allocate,
      (b) => b.requestedTransport(TransportProtocol.Udp),
      { auth: false },
    );
    expect(challenge.code).toBe(401);
    const realmText = readString(challenge.message, AttributeType.Realm) ?? "";
    const nonceText = readString(challenge.message, AttributeType.Nonce) ?? "";

    const datagram = fc.oneof(
      { arbitrary: randomBytesArb, weight: 3 },
      { arbitrary: truncatedStun, weight: 3 },
      { arbitrary: absurdLength, weight: 3 },
      { arbitrary: attributePastEnd, weight: 3 },
      { arbitrary: badChannelData, weight: 3 },
      { arbitrary: badIntegrity(creds.username, realmText, nonceText), weight: 2 },
      { arbitrary: tlvSoup(), weight: 3 },
    );
    const datagrams = fc.sample(datagram, { numRuns: DATAGRAMS - SIGNED - 10, seed });
    // Oversized datagrams: the maximum UDP payload, random and with a ChannelData header.
    for (let i = 0; i < 5; i++) datagrams.push(randomBytes(MAX_UDP));
    for (let i = 0; i < 5; i++) {
      const big = randomBytes(MAX_UDP);
      big.writeUInt16BE(CHANNEL, 0);
      big.writeUInt16BE(0xffff, 2);
      datagrams.push(big);
    }

    // Authenticated TLV soup comes from a second allocation of its own (it may well delete
    // that allocation with a Refresh of lifetime 0; the first one must stay untouched).
    const other = await TurnClientLite.open({
      port: r.port,
      username: creds.username,
      password: creds.credential,
    });
    expect((await other.allocate()).code).toBe(0);
    const otherChallenge = await other.request(
      Method.Allocate,
      (b) => b.requestedTransport(TransportProtocol.Udp),
      { auth: false },
    );
    const signed = fc.sample(
      tlvSoup({
        username: creds.username,
        realm: realmText,
        nonce: readString(otherChallenge.message, AttributeType.Nonce) ?? "",
        key: longTermKeyMd5(creds.username, realmText, creds.credential),
      }),
      { numRuns: SIGNED, seed: seed + 2 },
    );

    // Unsigned garbage half from a fresh socket (no allocation), half from the allocated
    // client's 5-tuple; signed soup interleaved from the second allocation.
    const stranger = dgram.createSocket("udp4");
    await new Promise<void>((res) => stranger.bind(0, "127.0.0.1", () => res()));
    stranger.on("message", () => {});
    const t0 = performance.now();
    for (let i = 0; i < datagrams.length; i++) {
      const d = datagrams[i]!;
      if (i % 2 === 0) stranger.send(d, r.port, "127.0.0.1");
      else client.sendRaw(d);
      if (i % 6 === 0 && signed.length > 0) other.sendRaw(signed.pop()!);
      if (i % 50 === 49) await sleep(2); // stay inside the socket buffers
    }
    for (const d of signed) other.sendRaw(d);

    const plans = fc.sample(streamPlan, { numRuns: STREAMS, seed: seed + 1 });
    // All at once: each is held open for up to 4 s, twice the relay's --tcp-idle-timeout.
    const byRelay = await Promise.all(plans.map((p) => runStream(r.port, p, 4000)));
    const elapsed = performance.now() - t0;
    console.info(
      `[e2e-bad-input] ${datagrams.length + SIGNED} datagrams + ${plans.length} streams in ${Math.round(elapsed)} ms`,
    );

    // Still alive and serving, on every surface.
    expect(r.process.exited).toBe(false);
    await stunBinding({ port: r.port, transport: "udp" });
    await stunBinding({ port: r.port, transport: "tcp" });
    expect((await httpGet(r.healthPort, "/readyz")).status).toBe(200);

    // The allocation made before the storm still relays.
    const seen = client.channelData.length;
    client.sendChannelData(CHANNEL, Buffer.from("still-relaying"));
    await client.waitForChannelData(seen + 1, 3000);
    expect(client.channelData.at(-1)?.data.toString()).toBe("still-relaying");

    // Every stream was ended by the relay: at the first byte that breaks framing, or by the
    // idle timeout for partial frames and a huge declared length followed by silence.
    plans.forEach((plan, i) => {
      expect(byRelay[i], `${plan.kind} stream #${i} still open`).toBe(true);
    });

    const after = await scrape(promPort);
    const d0 = drops(before);
    const d1 = drops(after);
    const moved = (reason: string) => (d1.get(reason) ?? 0) - (d0.get(reason) ?? 0);
    for (const reason of ["not-stun", "malformed", "malformed-channel-data", "framing-error"]) {
      expect(moved(reason), reason).toBeGreaterThan(0);
    }
    // The signed soup got past authentication into the method handlers (answers other than
    // the 401/438 of the authentication layer).
    expect(other.unsolicited.filter((c) => c !== 401 && c !== 438).length).toBeGreaterThan(0);
    const a1 = authFailures(after);
    expect(a1.get("bad-integrity") ?? 0).toBeGreaterThan(0);
    const active = countersBy(after, /^turn_connections_active$/, "none").get("");
    expect(active).toBe(0);

    client.close();
    other.close();
    stranger.close();
    await peer.close();
  });
});

// ------------------------------------------------------------------------------------------

describe("turnpike-relay never relays to a forbidden peer", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let promPort: number;

  beforeAll(async () => {
    range = reservePortRange(50);
    promPort = await freePort();
    // No --allow-loopback-peers (the default policy), and an IPv6 relay address too, so the
    // IPv6 forms below are judged by the policy and not refused only for their family.
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: TOKEN,
      allowLoopbackPeers: false,
      extraArgs: [
        "--relay-ip",
        "::1",
        "--allow-peer",
        "127.0.0.2/32",
        "--prometheus-listen",
        `127.0.0.1:${promPort}`,
      ],
    });
  });
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  it("refuses permissions, channels and Send indications towards loopback and unspecified addresses", async () => {
    const r = relay!;
    // Listeners where a leaked datagram would land (0.0.0.0 and :: reach the host itself).
    const v4 = dgram.createSocket("udp4");
    await new Promise<void>((res) => v4.bind(0, "127.0.0.1", () => res()));
    const port = v4.address().port;
    const v6 = dgram.createSocket({ type: "udp6", ipv6Only: true });
    await new Promise<void>((res) => v6.bind(port, "::1", () => res()));
    let leaked = 0;
    v4.on("message", () => leaked++);
    v6.on("message", () => leaked++);

    const creds = restCredentials(TOKEN, "policy");
    const client = await TurnClientLite.open({
      port: r.port,
      username: creds.username,
      password: creds.credential,
    });
    const alloc = await client.allocate({ additionalFamily: 6 });
    expect(alloc.code, alloc.reason).toBe(0);
    expect(alloc.relayed.map((a) => a.family).sort()).toEqual([4, 6]);

    const forbidden: TransportAddress[] = [
      { family: 4, address: "127.0.0.1", port },
      { family: 6, address: "::ffff:127.0.0.1", port },
      { family: 4, address: "0.0.0.0", port },
      { family: 6, address: "::", port },
      { family: 6, address: "::1", port },
    ];
    const before = drops(await scrape(promPort)).get("forbidden-peer") ?? 0;
    let channel = CHANNEL;
    for (const peer of forbidden) {
      const p = await client.createPermission(peer);
      expect(p.code, `CreatePermission ${peer.address}`).toBe(403);
      const c = await client.channelBind(channel++, peer);
      expect(c.code, `ChannelBind ${peer.address}`).toBe(403);
      client.sendIndication(peer, Buffer.from(`leak via Send to ${peer.address}`));
      client.sendChannelData(channel - 1, Buffer.from("leak via ChannelData"));
    }
    // Other spellings of loopback and the relay's own neighbourhood: only asked about (no data
    // is sent their way, so a wrong answer could not put a datagram on a real network).
    const spellings: TransportAddress[] = [
      { family: 6, address: "::127.0.0.1", port }, // IPv4-compatible (deprecated, RFC 4291)
      { family: 6, address: "64:ff9b::7f00:1", port }, // NAT64 well-known prefix (RFC 6052)
      { family: 6, address: "2002:7f00:1::", port }, // 6to4 of 127.0.0.1 (RFC 3056)
      { family: 6, address: "::ffff:0.0.0.0", port },
      { family: 4, address: "127.255.255.254", port },
      { family: 4, address: "169.254.169.254", port }, // cloud metadata service
      { family: 4, address: "255.255.255.255", port },
      { family: 4, address: "224.0.0.1", port },
    ];
    for (const peer of spellings) {
      expect((await client.createPermission(peer)).code, `CreatePermission ${peer.address}`).toBe(
        403,
      );
      expect((await client.channelBind(channel++, peer)).code, `ChannelBind ${peer.address}`).toBe(
        403,
      );
    }

    await sleep(300);
    expect(leaked).toBe(0);
    expect(client.dataIndications).toEqual([]);
    const after = drops(await scrape(promPort)).get("forbidden-peer") ?? 0;
    expect(after - before).toBe(forbidden.length);

    // Control: an address the operator allowed (--allow-peer 127.0.0.2/32) on the same
    // allocation gets its permission and its datagram, so the listeners above would have seen
    // a leak and the 403s were the policy's.
    const allowed = dgram.createSocket("udp4");
    await new Promise<void>((res) => allowed.bind(port, "127.0.0.2", () => res()));
    const got: string[] = [];
    allowed.on("message", (m) => got.push(m.toString()));
    const target: TransportAddress = { family: 4, address: "127.0.0.2", port };
    expect((await client.createPermission(target)).code).toBe(0);
    client.sendIndication(target, Buffer.from("allowed"));
    const end = Date.now() + 2000;
    while (got.length === 0 && Date.now() < end) await sleep(10);
    expect(got).toEqual(["allowed"]);
    expect(leaked).toBe(0);

    client.close();
    v4.close();
    v6.close();
    allowed.close();
  });
});
