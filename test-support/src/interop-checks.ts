// The real-client interop checks, written once and registered against any TURN server that
// speaks TURN REST API credentials: coturn (interop-coturn-reference.test.ts, proving the
// harness) and Turnpike (interop-turnpike.test.ts). Call these inside a `describe` whose
// beforeAll has started the server; `target()` is read lazily when each test runs.
import { afterAll, beforeAll, expect, it } from "vitest";
import { runWebRtcRelayTest } from "./chromium.js";
import { restCredentials } from "./credentials.js";
import { type PortRange, reservePortRange } from "./ports.js";
import { startTurnpike, type TurnpikeHandle } from "./turnpike.js";
import {
  type PeerHandle,
  runStunclient,
  runUclient,
  startPeer,
  type UclientOptions,
} from "./turnutils.js";

export interface RelayUnderTest {
  /** Label in the printed measurements, e.g. "coturn" or "turnpike". */
  name: string;
  /** UDP+TCP port on 127.0.0.1. */
  port: number;
  /** TURN REST API shared secret (coturn --static-auth-secret, Turnpike TURNPIKE_TOKEN). */
  secret: string;
}

export interface TurnutilsLoad {
  /** uclient -m allocations per run. */
  clients?: number;
  /** uclient -n messages per allocation. */
  messages?: number;
  /** uclient -z ms between messages of one allocation. */
  intervalMs?: number;
  /** uclient -l payload bytes. */
  messageSize?: number;
}

/**
 * The load both servers must carry with zero loss (RFC 8656 relaying, issue 4 §5: dozens of
 * allocations, hundreds of messages each): 24 allocations x 200 messages of 120 bytes, 5 ms
 * apart, per transport variant; the three variants run at the same time (14,400 messages).
 */
export const INTEROP_LOAD: Required<TurnutilsLoad> = {
  clients: 24,
  messages: 200,
  intervalMs: 5,
  messageSize: 120,
};

const report = (line: string) => console.info(line);

/**
 * Starts turnpike-relay for a `describe` of interop checks (beforeAll; stopped with SIGINT in
 * afterAll, which closes at once where SIGTERM would drain): free loopback ports, a relay port
 * block of its own, RFC 5766 channel numbers accepted (coturn's uclient binds channels above
 * 0x4FFF), `extraArgs` added. Returns `target()` as the checks want it.
 */
export function useTurnpike(
  secret: string,
  options: { name?: string; extraArgs?: string[] } = {},
): { target: () => RelayUnderTest; relay: () => TurnpikeHandle | undefined } {
  let relay: TurnpikeHandle | undefined;
  let range: PortRange | undefined;
  beforeAll(async () => {
    // Room for the three concurrent uclient runs (72 allocations, each on an even port:
    // EVEN-PORT, often with the next one reserved), even when --workers 2 puts all of one
    // source's TCP clients on one worker's half of the range.
    range = reservePortRange(400);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: secret,
      legacyChannelNumbers: true,
      extraArgs: options.extraArgs ?? [],
    });
  }, 60_000);
  afterAll(async () => {
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });
  return {
    target: () => {
      if (!relay) throw new Error("turnpike-relay did not start");
      return { name: options.name ?? "turnpike", port: relay.port, secret };
    },
    relay: () => relay,
  };
}

/**
 * turnutils_stunclient Binding; turnutils_uclient over UDP with channels, UDP with Send
 * indications, TCP with channels (run concurrently, zero loss each); RFC 6062 (-T) when
 * `tcpRelay` is set; a wrong secret that must be refused.
 */
export function defineTurnutilsChecks(
  target: () => RelayUnderTest,
  opts: { load?: TurnutilsLoad; tcpRelay?: boolean } = {},
): void {
  let peer: PeerHandle | undefined;
  const load = {
    clients: opts.load?.clients ?? INTEROP_LOAD.clients,
    messages: opts.load?.messages ?? INTEROP_LOAD.messages,
    intervalMs: opts.load?.intervalMs ?? INTEROP_LOAD.intervalMs,
    messageSize: opts.load?.messageSize ?? INTEROP_LOAD.messageSize,
  };
  const uclient = (extra: Partial<UclientOptions>) =>
    runUclient({
      ...load,
      secret: target().secret,
      user: "interop",
      peer: peer && { port: peer.port },
      port: target().port,
      ...extra,
    });

  beforeAll(async () => {
    peer = await startPeer();
  });
  afterAll(async () => {
    await peer?.stop();
  });

  it("answers turnutils_stunclient's Binding with the client's reflexive address", async () => {
    const r = await runStunclient("127.0.0.1", target().port);
    expect(r.timedOut, r.log).toBe(false);
    expect(r.exitCode, r.log).toBe(0);
    expect(r.reflexive?.address).toBe("127.0.0.1");
    expect(r.reflexive?.port).toBeGreaterThan(0);
  });

  // One REST user per variant (the three run at once), so a per-user allocation quota
  // (Turnpike's --max-allocations-per-user, default 100) is not what is being measured.
  it.concurrent.each([
    ["UDP with channels", { user: "interop-udp" }],
    ["UDP with Send indications", { user: "interop-send", sendIndications: true }],
    ["TCP with channels", { user: "interop-tcp", transport: "tcp" }],
  ] as const)("relays every uclient message over %s with zero loss", async (name, variant) => {
    const r = await uclient(variant);
    const expected = load.clients * load.messages;
    expect(r.timedOut, r.log).toBe(false);
    expect(unexplainedErrors(r), r.log).toEqual([]);
    expect(r.exitCode, r.log).toBe(0);
    expect(r.sentMsgs).toBe(expected);
    expect(r.recvMsgs).toBe(expected);
    expect(r.lostPackets).toBe(0);
    report(
      `[${target().name}] uclient ${name}: ${load.clients} allocations, ${r.recvMsgs}/${r.sentMsgs} msgs echoed, lost ${r.lostPackets}, avg rtt ${r.avgRttMs} ms, jitter ${r.avgJitterMs} ms, ${r.durationMs} ms wall`,
    );
  });

  if (opts.tcpRelay) {
    it("relays client to client over RFC 6062 TCP allocations (uclient -T)", async () => {
      // -T: two clients, each connects to the other's relayed TCP address (Connect,
      // ConnectionAttempt, ConnectionBind), no external peer.
      const r = await uclient({ tcpRelay: true, clients: 2, messages: 20, peer: undefined });
      expect(r.timedOut, r.log).toBe(false);
      expect(r.errors, r.log).toEqual([]);
      expect(r.exitCode, r.log).toBe(0);
      expect(r.sentMsgs).toBe(40);
      expect(r.recvMsgs).toBe(40);
      report(
        `[${target().name}] uclient RFC 6062 -T: ${r.recvMsgs}/${r.sentMsgs} msgs, avg rtt ${r.avgRttMs} ms, ${r.durationMs} ms wall`,
      );
    });
  }

  it("refuses an allocation made with the wrong shared secret", async () => {
    const r = await uclient({ secret: `not-${target().secret}`, clients: 1 });
    expect(r.timedOut, r.log).toBe(false);
    expect(r.exitCode, r.log).not.toBe(0);
    expect(r.errors.join("\n"), r.log).toMatch(/Cannot complete Allocation/);
    expect(Number.isNaN(r.recvMsgs) || r.recvMsgs === 0).toBe(true);
  });
}

/**
 * Chromium: two relay-only RTCPeerConnections through the server over TURN/UDP and TURN/TCP;
 * every data channel message echoed and the selected pair relay/relay; wrong credentials give no
 * relay candidate and no connection.
 */
export function defineChromiumChecks(
  target: () => RelayUnderTest,
  opts: { messages?: number } = {},
): void {
  const messages = opts.messages ?? 30;

  it.each([
    ["UDP", "udp", ""],
    ["TCP", "tcp", "?transport=tcp"],
  ])(
    "echoes data channel messages between two relay-only Chromium peers over TURN/%s",
    async (name, proto, query) => {
      const creds = restCredentials(target().secret, "chromium");
      const r = await runWebRtcRelayTest({
        turnUrl: `turn:127.0.0.1:${target().port}${query}`,
        username: creds.username,
        credential: creds.credential,
        messages,
      });
      const why = JSON.stringify({ log: r.log, candidates: r.candidates });
      expect(r.echoed, why).toBe(messages);
      expect(r.selectedPair?.local?.candidateType, why).toBe("relay");
      expect(r.selectedPair?.remote?.candidateType, why).toBe("relay");
      expect(r.selectedPair?.local?.relayProtocol, why).toBe(proto);
      expect(r.peerSelectedPair?.local?.candidateType, why).toBe("relay");
      expect(r.peerSelectedPair?.remote?.candidateType, why).toBe("relay");
      const l = r.selectedPair?.local;
      const rem = r.selectedPair?.remote;
      report(
        `[${target().name}] Chromium TURN/${name}: ${r.echoed}/${messages} echoed; pair ${l?.candidateType}/${l?.relayProtocol} ${l?.address}:${l?.port} -> ${rem?.candidateType} ${rem?.address}:${rem?.port}; connect ${r.connectMs} ms, echo ${r.echoMs} ms, total ${r.totalMs} ms (with launch)`,
      );
    },
  );

  it("gathers no relay candidate and never connects with a wrong credential", async () => {
    const creds = restCredentials(target().secret, "chromium");
    const r = await runWebRtcRelayTest({
      turnUrl: `turn:127.0.0.1:${target().port}`,
      username: creds.username,
      credential: `${creds.credential}x`,
      messages: 3,
      timeoutMs: 10_000,
    });
    expect(r.echoed).toBe(0);
    expect(r.candidates.a).toEqual([]);
    expect(r.selectedPair).toBeNull();
    expect(r.log.join("\n")).toMatch(/gathered no relay candidate/);
  });
}

/**
 * uclient's error lines, less one known client-side race: when the machine is busy, uclient
 * can answer a late duplicate 401 with a fresh Allocate on a 5-tuple whose allocation already
 * exists, get 437 (coturn itself answers "437 Mismatched allocation: wrong transaction ID"), and
 * recover by itself ("trying allocate again" on a new socket). That line is tolerated only
 * together with the recovery; everything else still fails the check.
 */
function unexplainedErrors(r: { errors: string[]; log: string }): string[] {
  const recovered = r.log.includes("trying allocate again 437");
  return r.errors.filter((line) => !(recovered && /error 437 \(/.test(line)));
}
