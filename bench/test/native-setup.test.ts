// The native setup generator (bench/native/turnpike-setupgen.c): its digests against the RFCs'
// vectors, its requests against a scripted UDP responder that checks every byte the way a
// relay does (credentials, MESSAGE-INTEGRITY, FINGERPRINT) while dropping and re-challenging,
// and the whole handshake against the real Turnpike relay and the real coturn.
import { spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import dgram from "node:dgram";
import zlib from "node:zlib";
import { parseRestUsername, restPassword } from "@turnpike/relay-core";
import { skipUnlessTools } from "@turnpike/test-support/tools";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { nativeBinary, nativeUnavailable } from "../src/load/native.js";
import { NativeSetupGenerator } from "../src/load/native-setup.js";
import {
  Attr,
  Class,
  classOf,
  type Decoded,
  decode,
  encode,
  longTermKey,
  Method,
  messageType,
  methodOf,
  u32,
  xorAddressValue,
} from "../src/load/stun-lite.js";
import {
  defaultSettings,
  type RunningServer,
  startCoturn,
  startTurnpike,
  turnpikeAvailable,
} from "../src/servers.js";

const REALM = "scripted.test";
const SECRET = "native-setup-secret";

/** An error response (RFC 8489 §14.8) with the attributes given. */
function errorResponse(req: Decoded, code: number, extra: [number, Buffer][] = []): Buffer {
  const value = Buffer.from([0, 0, Math.floor(code / 100), code % 100]);
  return encode(messageType(methodOf(req.type), Class.Error), req.transactionId, [
    [Attr.ErrorCode, value],
    ...extra,
  ]);
}

/**
 * Checks a request's FINGERPRINT (RFC 8489 §14.7) and, when it carries a USERNAME, its TURN
 * REST credential and MESSAGE-INTEGRITY (§14.5) with node:crypto; the reason it is bad, or
 * undefined.
 */
function badRequest(msg: Buffer, m: Decoded, nonce: string): string | undefined {
  const fp = m.attrs.get(Attr.Fingerprint);
  if (!fp) return "no FINGERPRINT";
  const fpAt = msg.length - 8;
  const crc = (zlib.crc32(msg.subarray(0, fpAt)) ^ 0x5354554e) >>> 0;
  if (fp.readUInt32BE(0) !== crc) return "bad FINGERPRINT";
  const username = m.attrs.get(Attr.Username)?.toString("utf8");
  if (username === undefined) return undefined;
  if (!parseRestUsername(username)?.user) return `bad REST username ${username}`;
  if (m.attrs.get(Attr.Realm)?.toString("utf8") !== REALM) return "bad REALM";
  if (m.attrs.get(Attr.Nonce)?.toString("utf8") !== nonce) return "stale NONCE";
  const mi = m.attrs.get(Attr.MessageIntegrity);
  if (!mi) return "no MESSAGE-INTEGRITY";
  const miAt = fpAt - 24;
  const head = Buffer.from(msg.subarray(0, miAt));
  head.writeUInt16BE(miAt - 20 + 24, 2); // the length as MESSAGE-INTEGRITY saw it
  const key = longTermKey(username, REALM, restPassword(SECRET, username));
  const mac = createHmac("sha1", key).update(head).digest();
  return mac.equals(mi) ? undefined : "bad MESSAGE-INTEGRITY";
}

interface Scripted {
  port: number;
  /** every request received, by method name, in order */
  seen: string[];
  /** the LIFETIME of every authenticated Refresh answered */
  lifetimes: number[];
  /** the USERNAMEs of each client's authenticated requests, by its port */
  users: Map<number, Set<string>>;
  problems: string[];
  close(): Promise<void>;
}

/**
 * A UDP responder that answers like a relay, but scripted: it drops the first datagram of each
 * client (a lost request: the generator must retransmit), challenges with 401, and answers the
 * first authenticated request of each client 438 with a new nonce (RFC 8489 §9.2.5). `silent`:
 * it never answers at all.
 */
async function scriptedRelay(silent = false): Promise<Scripted> {
  const sock = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", resolve));
  const seen: string[] = [];
  const problems: string[] = [];
  const lifetimes: number[] = [];
  const users = new Map<number, Set<string>>();
  const clients = new Map<number, { datagrams: number; nonce: string; restaled: boolean }>();
  const names: Record<number, string> = {
    [Method.Allocate]: "Allocate",
    [Method.CreatePermission]: "CreatePermission",
    [Method.ChannelBind]: "ChannelBind",
    [Method.Refresh]: "Refresh",
  };
  sock.on("message", (msg, rinfo) => {
    const m = decode(msg);
    if (!m || classOf(m.type) !== Class.Request) {
      problems.push("not a STUN request");
      return;
    }
    seen.push(names[methodOf(m.type)] ?? `0x${methodOf(m.type).toString(16)}`);
    if (silent) return;
    let c = clients.get(rinfo.port);
    if (!c) {
      c = { datagrams: 0, nonce: `n-${rinfo.port}-1`, restaled: false };
      clients.set(rinfo.port, c);
    }
    if (c.datagrams++ === 0) return; // lost
    const reply = (b: Buffer) => sock.send(b, rinfo.port, rinfo.address);
    const challenge = [
      [Attr.Realm, Buffer.from(REALM)],
      [Attr.Nonce, Buffer.from(c.nonce)],
    ] as [number, Buffer][];
    if (!m.attrs.has(Attr.Username)) {
      reply(errorResponse(m, 401, challenge));
      return;
    }
    const bad = badRequest(msg, m, c.nonce);
    if (bad) {
      problems.push(bad);
      reply(errorResponse(m, 400));
      return;
    }
    if (!c.restaled) {
      c.restaled = true;
      c.nonce = `n-${rinfo.port}-2`;
      reply(errorResponse(m, 438, [[Attr.Nonce, Buffer.from(c.nonce)]]));
      return;
    }
    const user = m.attrs.get(Attr.Username)?.toString("utf8") ?? "";
    users.set(rinfo.port, (users.get(rinfo.port) ?? new Set()).add(user));
    if (methodOf(m.type) === Method.Refresh) {
      lifetimes.push(m.attrs.get(Attr.Lifetime)?.readUInt32BE(0) ?? -1);
    }
    const attrs: [number, Buffer][] =
      methodOf(m.type) === Method.Allocate
        ? [
            [Attr.XorRelayedAddress, xorAddressValue({ address: "127.0.0.1", port: 50000 })],
            [Attr.Lifetime, u32(600)],
          ]
        : [];
    reply(encode(messageType(methodOf(m.type), Class.Success), m.transactionId, attrs));
  });
  return {
    port: sock.address().port,
    seen,
    lifetimes,
    users,
    problems,
    close: () => new Promise((resolve) => sock.close(() => resolve())),
  };
}

describe("native setup generator", () => {
  const stops: (() => Promise<void>)[] = [];

  beforeAll(() => {
    // Built at install (bench/scripts/build-native.mjs); the machines this runs on have cc.
    expect(nativeUnavailable()).toBeUndefined();
  });
  afterEach(async () => {
    for (const stop of stops.splice(0).reverse()) await stop();
  });

  function generator(port: number, token: string, rtoMs?: number): NativeSetupGenerator {
    const gen = NativeSetupGenerator.start({ host: "127.0.0.1", port, token }, rtoMs);
    stops.push(() => gen.stop());
    return gen;
  }

  it("computes SHA-1, MD5, HMAC-SHA1, base64 and CRC-32 as RFC 3174, 1321, 2202 and 4648 say", () => {
    const run = spawnSync(nativeBinary("turnpike-setupgen"), ["selftest"], { encoding: "utf8" });
    expect(run.stdout).toContain("passed 0");
    expect(run.status).toBe(0);
    // 4 SHA-1, 7 MD5, 7 HMAC-SHA1, 7 base64 vectors and the CRC-32 check value.
    expect(run.stdout.split("\n").filter((l) => l.startsWith("ok "))).toHaveLength(26);
  });

  it("retransmits a lost request, answers the 401 challenge and a 438 stale nonce, with a valid MESSAGE-INTEGRITY", async () => {
    const relay = await scriptedRelay();
    stops.push(() => relay.close());
    const gen = generator(relay.port, SECRET, 20);
    const run = await gen.open({
      count: 3,
      concurrency: 2,
      userPrefix: "scripted",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 10,
    });
    expect(relay.problems).toEqual([]);
    expect(run).toMatchObject({ done: 3, failures: 0, live: 3, firstError: undefined });
    expect(run.cpuMicros).toBeGreaterThanOrEqual(0);
    // Per client: Allocate lost, sent again (401), authenticated (438), again with the new
    // nonce (success); then CreatePermission and ChannelBind.
    const perClient = [
      "Allocate",
      "Allocate",
      "Allocate",
      "Allocate",
      "CreatePermission",
      "ChannelBind",
    ];
    expect(relay.seen.filter((m) => m === "Allocate")).toHaveLength(3 * 4);
    expect(relay.seen).toHaveLength(3 * perClient.length);
    expect(await gen.closeAll()).toBe(3);
  });

  it("with deleteEach ends every setup with Refresh(0) and keeps no allocation open", async () => {
    const relay = await scriptedRelay();
    stops.push(() => relay.close());
    const gen = generator(relay.port, SECRET, 20);
    const run = await gen.open({
      count: 3,
      concurrency: 3,
      userPrefix: "warm",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 10,
      deleteEach: true,
    });
    expect(relay.problems).toEqual([]);
    expect(run).toMatchObject({ done: 3, failures: 0, live: 0, firstError: undefined });
    // Per client as above, then the delete: RFC 8656 §7.3, a Refresh with LIFETIME 0.
    expect(relay.seen.filter((m) => m === "Refresh")).toHaveLength(3);
    expect(relay.lifetimes).toEqual([0, 0, 0]);
    expect(relay.seen).toHaveLength(3 * 7);
    expect(await gen.closeAll()).toBe(0);
  });

  it("deletes every allocation the last open kept, each with Refresh(0) under the user it was set up with", async () => {
    const relay = await scriptedRelay();
    stops.push(() => relay.close());
    const gen = generator(relay.port, SECRET, 20);
    const open = await gen.open({
      count: 4,
      concurrency: 2,
      userPrefix: "kept",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 10,
    });
    expect(open).toMatchObject({ done: 4, failures: 0, live: 4 });
    const setupRequests = relay.seen.length;
    const deleted = await gen.deleteAll({ concurrency: 3, boundSeconds: 10 });
    expect(relay.problems).toEqual([]);
    expect(deleted).toMatchObject({ done: 4, failures: 0, firstError: undefined });
    // Per allocation: the Refresh without a credential (401 with the nonce), then with it.
    expect(relay.seen.slice(setupRequests)).toEqual(Array(8).fill("Refresh"));
    expect(relay.lifetimes).toEqual([0, 0, 0, 0]);
    // From the setup's own socket, under the setup's user (RFC 8656 §7: 441 otherwise).
    expect(relay.users.size).toBe(4);
    for (const names of relay.users.values()) expect(names.size).toBe(1);
    // Nothing is left to close, and a second delete has nothing to do.
    expect(await gen.closeAll()).toBe(0);
    expect(await gen.deleteAll({ concurrency: 3, boundSeconds: 10 })).toMatchObject({
      done: 0,
      failures: 0,
    });
  });

  it("gives up on a relay that never answers, within its retransmission schedule", async () => {
    const relay = await scriptedRelay(true);
    stops.push(() => relay.close());
    const gen = generator(relay.port, SECRET, 10);
    const t0 = Date.now();
    const run = await gen.open({
      count: 2,
      concurrency: 2,
      userPrefix: "silent",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 10,
    });
    expect(run).toMatchObject({ done: 0, failures: 2, live: 0, firstError: "request timed out" });
    // 6 sends each, 10 ms doubling: 10 + 20 + ... + 320 = 630 ms.
    expect(relay.seen).toHaveLength(12);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  /**
   * These relays run on the host's loopback, beside whatever other relays run there: a relay
   * range of their own (below the default 49152-65535) keeps a neighbour holding thousands of
   * relayed ports from failing our Allocates with 508.
   */
  const settings = () => ({ ...defaultSettings(), minPort: 40000, maxPort: 48999 });

  async function handshakes(server: RunningServer): Promise<void> {
    const gen = generator(server.port, server.token);
    const progress: number[] = [];
    const open = await gen.open({
      count: 200,
      concurrency: 64,
      userPrefix: "native",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 20,
      onProgress: (done) => progress.push(done),
    });
    expect(open.firstError).toBeUndefined();
    expect(open).toMatchObject({ done: 200, failures: 0, live: 200 });
    expect(open.elapsedMs).toBeGreaterThan(0);
    // The allocations scenario's rounds: every kept allocation deleted by the relay's own answer.
    const deleted = await gen.deleteAll({ concurrency: 64, boundSeconds: 20 });
    expect(deleted.firstError).toBeUndefined();
    expect(deleted).toMatchObject({ done: 200, failures: 0 });
    expect(await gen.closeAll()).toBe(0);
    // The scenarios' warm-up: set up, then deleted, none left open.
    const warm = await gen.open({
      count: 100,
      concurrency: 32,
      userPrefix: "nwarm",
      bind: true,
      peer: { address: "127.0.0.1", port: 9 },
      boundSeconds: 20,
      deleteEach: true,
    });
    expect(warm.firstError).toBeUndefined();
    expect(warm).toMatchObject({ done: 100, failures: 0, live: 0 });
    expect(await gen.closeAll()).toBe(0);
    const churn = await gen.churn({
      workers: 8,
      seconds: 0.5,
      cyclesPerWorker: 0,
      userPrefix: "nchurn",
    });
    expect(churn.firstError).toBeUndefined();
    expect(churn.failures).toBe(0);
    expect(churn.done).toBeGreaterThanOrEqual(8);
    // A bounded churn: one cycle per worker.
    const once = await gen.churn({ workers: 4, seconds: 10, cyclesPerWorker: 1, userPrefix: "w" });
    expect(once).toMatchObject({ done: 4, failures: 0 });
  }

  it.skipIf(!turnpikeAvailable())(
    "sets up allocations and churns them against the real Turnpike relay",
    async () => {
      const server = await startTurnpike(settings());
      stops.push(() => server.stop());
      await handshakes(server);
    },
  );

  it.skipIf(skipUnlessTools("turnserver"))(
    "sets up allocations and churns them against the real coturn",
    async () => {
      const server = await startCoturn(settings());
      stops.push(() => server.stop());
      await handshakes(server);
    },
  );
});
