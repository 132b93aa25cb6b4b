// Proves the interop harness against coturn, the reference TURN server: every check here runs
// unchanged against Turnpike in interop-turnpike.test.ts, so a failure there that passes here is
// Turnpike's, not the harness's. Loopback only; every process and wait is bounded.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runWebRtcRelayTest } from "../../../test-support/chromium.js";
import { type CoturnHandle, startCoturn } from "../../../test-support/coturn.js";
import { restCredentials } from "../../../test-support/credentials.js";
import { freePort, type PortRange, reservePortRange } from "../../../test-support/ports.js";
import { requireTools, skipUnlessTools } from "../../../test-support/tools.js";
import {
  type PeerHandle,
  runStunclient,
  runUclient,
  startPeer,
  type UclientOptions,
} from "../../../test-support/turnutils.js";

const SECRET = "interop-reference-secret";
const TOOLS = ["turnserver", "turnutils_uclient", "turnutils_peer", "turnutils_stunclient"];

describe.skipIf(skipUnlessTools(...TOOLS))("coturn reference: turnutils against coturn", () => {
  let coturn: CoturnHandle;
  let peer: PeerHandle;
  let range: PortRange;
  let load: Omit<UclientOptions, "port">;

  beforeAll(async () => {
    requireTools(...TOOLS);
    range = reservePortRange(200);
    const port = await freePort();
    coturn = await startCoturn({
      port,
      mode: "rest",
      secret: SECRET,
      minPort: range.min,
      maxPort: range.max,
    });
    peer = await startPeer();
    // A few allocations x 50 messages each, 5 ms apart: enough to notice loss, quick to run.
    load = {
      secret: SECRET,
      user: "interop",
      clients: 4,
      messages: 50,
      messageSize: 120,
      intervalMs: 5,
      peer: { port: peer.port },
    };
  });

  afterAll(async () => {
    await peer?.stop();
    await coturn?.stop();
    range?.release();
  });

  it("answers turnutils_stunclient's Binding with the client's reflexive address", async () => {
    const r = await runStunclient("127.0.0.1", coturn.port);
    expect(r.exitCode, r.log).toBe(0);
    expect(r.reflexive?.address).toBe("127.0.0.1");
    expect(r.reflexive?.port).toBeGreaterThan(0);
  });

  it.concurrent.each([
    ["UDP with channels", {}],
    ["UDP with Send indications", { sendIndications: true }],
    ["TCP with channels", { transport: "tcp" }],
  ] as const)("relays every uclient message over %s with zero loss", async (_name, variant) => {
    const r = await runUclient({ ...load, ...variant, port: coturn.port });
    const expected = load.clients! * load.messages!;
    expect(r.errors, r.log).toEqual([]);
    expect(r.exitCode, r.log).toBe(0);
    expect(r.sentMsgs).toBe(expected);
    expect(r.recvMsgs).toBe(expected);
    expect(r.lostPackets).toBe(0);
    console.info(
      `[coturn] ${_name}: ${r.recvMsgs}/${r.sentMsgs} msgs, lost ${r.lostPackets}, rtt ${r.avgRttMs} ms, ${r.durationMs} ms`,
    );
  });

  it("relays over RFC 6062 TCP allocations (uclient -T)", async () => {
    const r = await runUclient({
      ...load,
      peer: undefined,
      clients: 2,
      tcpRelay: true,
      messages: 20,
      port: coturn.port,
    });
    expect(r.exitCode, r.log).toBe(0);
    expect(r.sentMsgs).toBe(40);
    expect(r.recvMsgs).toBe(40);
    console.info(
      `[coturn] RFC 6062: ${r.recvMsgs}/${r.sentMsgs} msgs, rtt ${r.avgRttMs} ms, ${r.durationMs} ms`,
    );
  });

  it("refuses an allocation made with the wrong shared secret", async () => {
    const r = await runUclient({
      ...load,
      secret: "not-the-secret",
      clients: 1,
      port: coturn.port,
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.errors.join("\n")).toMatch(/Cannot complete Allocation/);
    expect(r.recvMsgs || 0).toBe(0);
  });
});

describe.skipIf(skipUnlessTools("turnserver", "chromium"))(
  "coturn reference: Chromium WebRTC",
  () => {
    let coturn: CoturnHandle;
    let range: PortRange;

    beforeAll(async () => {
      requireTools("turnserver", "chromium");
      range = reservePortRange(200);
      coturn = await startCoturn({
        port: await freePort(),
        mode: "rest",
        secret: SECRET,
        minPort: range.min,
        maxPort: range.max,
      });
    });

    afterAll(async () => {
      await coturn?.stop();
      range?.release();
    });

    it.each([
      ["UDP", ""],
      ["TCP", "?transport=tcp"],
    ])(
      "echoes data channel messages between two relay-only peers over TURN/%s",
      async (name, query) => {
        const creds = restCredentials(SECRET, "chromium");
        const r = await runWebRtcRelayTest({
          turnUrl: `turn:127.0.0.1:${coturn.port}${query}`,
          username: creds.username,
          credential: creds.credential,
          messages: 30,
        });
        expect(r.echoed, JSON.stringify(r.log)).toBe(30);
        expect(r.selectedPair?.local?.candidateType).toBe("relay");
        expect(r.selectedPair?.remote?.candidateType).toBe("relay");
        expect(r.selectedPair?.local?.relayProtocol).toBe(name.toLowerCase());
        expect(r.peerSelectedPair?.local?.candidateType).toBe("relay");
        console.info(
          `[coturn] Chromium TURN/${name}: ${r.echoed}/30 echoed, connect ${r.connectMs} ms, echo ${r.echoMs} ms, total ${r.totalMs} ms, pair ${JSON.stringify(r.selectedPair?.local)} -> ${JSON.stringify(r.selectedPair?.remote)}`,
        );
      },
    );
  },
);
