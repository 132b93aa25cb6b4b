// The tunnel's lifecycle decisions (src/lifecycle.ts) in simulated time against relay-core's
// real TurnServer (lifecycle-harness.ts): reconnect backoff (full jitter, doubling up to the cap, starting over after a stable
// connection), dead-relay detection from keep-alives, access windows and pinned-port takeovers.
// Minutes and hours of protocol time run in milliseconds; the real-process suites
// (tunnel-*.test.ts) cover the same behaviour end to end over sockets; credential renewal has
// its own suite (lifecycle-renewal.test.ts).
import { mintPinnedCredentials, PeerAddressPolicy } from "@turnpike/relay-core";
import { describe, expect, it } from "vitest";
import { type CredentialSource, createCredentialSource } from "../src/credentials.js";
import { PinClaims } from "../src/pins.js";
import { parseWindow, WindowWatch } from "../src/windows.js";
import {
  outputsOf,
  PINNED_PORTS,
  reachable,
  ready,
  refreshes,
  type SimTunnel,
  TOKEN,
  TunnelNet,
  WALL_EPOCH,
} from "./lifecycle-harness.js";

/**
 * A ready tunnel that notices a silent relay within 2 s and backs off from 0.5 s up to 8 s,
 * by default drawing the top of each window (jitter 0.999: delays 499, 999, 1998, ... ms).
 */
async function quickToGiveUp(jitter = () => 0.999): Promise<{ h: TunnelNet; t: SimTunnel }> {
  const h = new TunnelNet();
  const t = h.addTunnel("db", h.restCredentials("acme", 3600), {
    keepalive: 1,
    backoffBase: 0.5,
    backoffMax: 8,
    jitter,
  });
  await h.start(t);
  await ready(h, t);
  return { h, t };
}

describe("tunnel lifecycle: reconnect backoff", () => {
  it("draws every delay from [0, min(cap, base * 2^n)) while the relay is unreachable", async () => {
    const draws: number[] = [];
    const sequence = [0.999, 0.5, 0.25, 0.0, 0.75, 0.999, 0.1, 0.9];
    const jitter = () => {
      const j = sequence[draws.length % sequence.length]!;
      draws.push(j);
      return j;
    };
    const { h, t } = await quickToGiveUp(jitter);
    h.relayUp = false;
    await h.runUntil(() => outputsOf(t, "down").length === 8, 300_000);
    const downs = outputsOf(t, "down").map((d) => d.output);
    const windows = [500, 1000, 2000, 4000, 8000, 8000, 8000, 8000];
    expect(downs.map((d) => d.delayMs)).toEqual(
      windows.map((w, i) => Math.floor(sequence[i]! * w)),
    );
    expect(downs.map((d) => d.failures)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(downs[0]!.wasReady).toBe(true);
    expect(downs.slice(1).every((d) => !d.wasReady)).toBe(true);
    expect(t.life.reconnects).toBe(8);
    // Each attempt waits its delay, then tries again from the start (fresh credentials).
    const at = outputsOf(t, "down").map((d) => d.at);
    const fetches = outputsOf(t, "fetch-credentials").map((f) => f.at);
    for (let i = 0; i < 7; i++) expect(fetches).toContain(at[i]! + downs[i]!.delayMs);

    // The relay is back: the next attempt (at most one cap away) gets through.
    h.relayUp = true;
    const back = h.now;
    await ready(h, t, 8000 + 100);
    expect(h.now - back).toBeLessThanOrEqual(8000 + 100);
  });

  it("starts over at the base window after a connection that stayed up for the cap", async () => {
    const { h, t } = await quickToGiveUp();
    // Three failures in a row, then a connection that holds for longer than the cap.
    h.relayUp = false;
    await h.runUntil(() => outputsOf(t, "down").length === 3, 60_000);
    h.relayUp = true;
    await ready(h, t, 10_000);
    await h.advance(9000);
    h.relayUp = false;
    await h.runUntil(() => outputsOf(t, "down").length === 4, 60_000);
    const downs = outputsOf(t, "down").map((d) => d.output);
    expect(downs.map((d) => d.delayMs)).toEqual([499, 999, 1998, 499]);
    expect(downs[3]!.failures).toBe(1);
  });

  it("keeps the window growing when the relay flaps faster than the cap", async () => {
    const { h, t } = await quickToGiveUp();
    for (let i = 0; i < 3; i++) {
      h.relayUp = false;
      await h.runUntil(() => outputsOf(t, "down").length === i + 1, 60_000);
      h.relayUp = true;
      await ready(h, t, 10_000);
    }
    expect(outputsOf(t, "down").map((d) => d.output.failures)).toEqual([1, 2, 3]);
  });
});

describe("tunnel lifecycle: dead-relay detection", () => {
  it("gives up exactly twice the keep-alive after the relay's last answer, and never while it answers", async () => {
    const h = new TunnelNet();
    const t = h.addTunnel("db", h.restCredentials("acme", 3600), { keepalive: 15 });
    await h.start(t);
    await ready(h, t);
    // Ten minutes of keep-alives (and a Refresh): the relay answers, nothing goes down.
    await h.advance(600_000);
    expect(outputsOf(t, "down")).toEqual([]);
    const keepalives = outputsOf(t, "transmit").length;
    expect(keepalives).toBeGreaterThanOrEqual(40);
    h.relayUp = false;
    const lastAnswer = t.lastFromRelay;
    await h.runUntil(() => outputsOf(t, "down").length === 1, 60_000);
    const [down] = outputsOf(t, "down");
    expect(down!.at).toBe(lastAnswer + 30_000);
    expect(down!.output.reason).toBe("no answer from the relay for 30 s");
    expect(down!.output.wasReady).toBe(true);
    expect(t.life.state).toBe("backoff");
    expect(t.life.relayedAddress).toBeUndefined();
  });

  it("allocates afresh on a relay that was restarted (kill -9) and forgot the allocation", async () => {
    const { h, t } = await quickToGiveUp();
    // Killed: silent until a fresh process answers on the same address, knowing nothing.
    h.relayUp = false;
    h.restartRelay();
    await h.runUntil(() => outputsOf(t, "down").length === 1, 10_000);
    h.relayUp = true;
    await ready(h, t, 3000);
    expect(h.server.allocations(h.now)).toHaveLength(1);
    expect(await reachable(h, t)).toBe(true);
  });

  it("allocates afresh within one keep-alive when the relay restarted between two (a deploy)", async () => {
    const h = new TunnelNet();
    const t = h.addTunnel("db", h.restCredentials("acme", 3600), { keepalive: 15 });
    await h.start(t);
    await ready(h, t);
    await h.advance(20_000);
    // Restarted in an instant: no datagram lost, every allocation forgotten. A Binding would
    // be answered as before; the keep-alive Refresh is not (438, then 437).
    h.restartRelay();
    const restartedAt = h.now;
    await h.runUntil(() => outputsOf(t, "down").length === 1, 60_000);
    const [down] = outputsOf(t, "down");
    expect(down!.output.reason).toMatch(/refresh failed: 437/);
    expect(down!.at - restartedAt).toBeLessThanOrEqual(15_000);
    await ready(h, t, 10_000);
    expect(h.server.allocations(h.now)).toHaveLength(1);
    expect(await reachable(h, t)).toBe(true);
  });
});

describe("tunnel lifecycle: access windows", () => {
  it("releases the allocation at 18:00 Berlin, stays silent overnight and allocates again at 08:00", async () => {
    const h = new TunnelNet();
    const parsed = parseWindow("Mon-Fri 08:00-18:00 Europe/Berlin");
    if ("error" in parsed) throw new Error(parsed.error);
    const t = h.addTunnel("db", h.restCredentials("acme", 3600));
    const watch = new WindowWatch([parsed], h.date());
    expect(watch.open).toBe(true); // Wednesday noon in Berlin
    await h.start(t);
    await ready(h, t);
    // The supervisor looks every 5 s.
    let closedAt: number | undefined;
    let openedAt: number | undefined;
    let outputsAtClose = 0;
    while (openedAt === undefined && h.now < 24 * 3600_000) {
      await h.advance(5000);
      const change = watch.update(h.date());
      if (change === "closed") {
        closedAt = h.wall();
        await h.act(t, (life, now) => life.closeWindow(now));
        expect(t.life.state).toBe("closed-window");
        expect(t.life.pollTimeout()).toBeUndefined();
        outputsAtClose = t.outputs.length;
      } else if (change === "opened") {
        openedAt = h.wall();
        // Nothing at all went to the relay while the window was closed.
        expect(t.outputs.length).toBe(outputsAtClose);
        await h.act(t, (life) => life.reopen());
      }
    }
    // At the first look after 18:00 CEST and after 08:00 CEST.
    const closesAt = Date.parse("2025-07-02T16:00:00Z");
    const opensAt = Date.parse("2025-07-03T06:00:00Z");
    expect(closedAt! - closesAt).toBeGreaterThanOrEqual(0);
    expect(closedAt! - closesAt).toBeLessThan(5000);
    expect(openedAt! - opensAt).toBeGreaterThanOrEqual(0);
    expect(openedAt! - opensAt).toBeLessThan(5000);
    expect(outputsOf(t, "window-closed")).toHaveLength(1);
    // Closing sent the release (Refresh LIFETIME 0, RFC 8656 §8) at once, and the relayed
    // address was gone long before the window opened again.
    const release = refreshes(t).find((r) => r.lifetime === 0);
    expect(release?.at).toBe(closedAt! - WALL_EPOCH);
    expect(h.ended).toHaveLength(1);
    expect(h.ended[0]!.at).toBeLessThan(openedAt! - WALL_EPOCH);
    await ready(h, t);
    expect(h.server.allocations(h.now)).toHaveLength(1);
    // Closed on purpose is not a lost relay.
    expect(t.life.reconnects).toBe(0);
    expect(await reachable(h, t)).toBe(true);
  });

  it("cancels a pending reconnect when the window closes, and reopens with the backoff forgotten", async () => {
    const { h, t } = await quickToGiveUp();
    h.relayUp = false;
    await h.runUntil(() => outputsOf(t, "down").length === 3, 60_000);
    await h.act(t, (life, now) => life.closeWindow(now));
    const outputs = t.outputs.length;
    await h.advance(3600_000);
    expect(t.outputs.length).toBe(outputs);
    expect(t.life.state).toBe("closed-window");
    // The operator's schedule, not the relay, closed it: the next failure starts at the base.
    await h.act(t, (life) => life.reopen());
    await h.runUntil(() => outputsOf(t, "down").length === 4, 60_000);
    const fourth = outputsOf(t, "down")[3]!.output;
    expect(fourth.failures).toBe(1);
    expect(fourth.delayMs).toBe(499);
  });
});

describe("tunnel lifecycle: a relay that refuses the tunnel", () => {
  it("is refused, not ready, when the relay's peer policy refuses an allowed peer, and says so once", async () => {
    // The relay's default policy: loopback peers refused (the platform here is 127.0.0.1).
    const h = new TunnelNet({ peerPolicy: new PeerAddressPolicy() });
    const t = h.addTunnel("db", h.restCredentials("acme", 3600), { backoffMax: 8 });
    await h.start(t);
    await h.advance(60_000);
    expect(outputsOf(t, "ready")).toEqual([]);
    expect(t.life.state).toBe("refused");
    expect(t.life.lastError).toBe(
      "permission for 127.0.0.1 refused: 403 Forbidden (the relay's peer policy refuses 127.0.0.1: run the relay with --allow-loopback-peers when everything is on one machine, or leave it out of this tunnel's --allow-peer)",
    );
    const downs = outputsOf(t, "down").map((d) => d.output);
    expect(downs.length).toBeGreaterThan(3);
    expect(downs.every((d) => d.refused)).toBe(true);
    // Once as news, then as the same refusal (the log: WARN once, DEBUG after).
    expect(downs.map((d) => d.repeated)).toEqual([false, ...downs.slice(1).map(() => true)]);
  });

  it("keeps trying revoked credentials with a backoff that grows to the cap, and is ready once they are not", async () => {
    const h = new TunnelNet({ revokedUsers: ["acme"] });
    const t = h.addTunnel("db", h.restCredentials("acme", 3600), {
      backoffBase: 0.5,
      backoffMax: 8,
      jitter: () => 0.999,
    });
    await h.start(t);
    await h.runUntil(() => outputsOf(t, "down").length === 6, 120_000);
    const downs = outputsOf(t, "down").map((d) => d.output);
    expect(downs.map((d) => d.delayMs)).toEqual([499, 999, 1998, 3996, 7992, 7992]);
    expect(
      downs.every(
        (d) => d.refused && d.reason === "allocate failed: 403 Forbidden: credentials revoked",
      ),
    ).toBe(true);
    expect(downs.map((d) => d.repeated)).toEqual([false, true, true, true, true, true]);
    expect(t.life.state).toBe("refused");
    // The operator takes the revocation back: the next attempt (one cap away at most) serves.
    h.server.setRevokedUsers([], h.now);
    await ready(h, t, 8000 + 100);
  });
});

describe("tunnel lifecycle: ALTERNATE-SERVER from a draining relay (RFC 8489 §10)", () => {
  const ALTERNATE = { family: 4 as const, address: "192.0.2.50", port: 3479 };

  it("allocates on the alternate at once, and follows each relay's redirect at most once in 5 minutes", async () => {
    // One TurnServer answers every address here, draining: each Allocate gets 300.
    const h = new TunnelNet({ alternateServer: ALTERNATE });
    h.server.startDraining();
    const t = h.addTunnel("db", h.restCredentials("acme", 3600), { backoffMax: 8 });
    await h.start(t);
    await h.advance(1000);
    const redirects = outputsOf(t, "redirected").map((r) => r.output);
    // Home -> alternate, then the alternate's own redirect (to itself, here) once.
    expect(redirects).toEqual([
      {
        type: "redirected",
        from: { family: 4, ip: "127.0.0.1", port: 3478 },
        to: { family: 4, ip: "192.0.2.50", port: 3479 },
      },
      {
        type: "redirected",
        from: { family: 4, ip: "192.0.2.50", port: 3479 },
        to: { family: 4, ip: "192.0.2.50", port: 3479 },
      },
    ]);
    // Each redirect dials the alternate without waiting.
    const connects = outputsOf(t, "connect").map((c) => c.output.relay.ip);
    expect(connects.slice(0, 3)).toEqual(["127.0.0.1", "192.0.2.50", "192.0.2.50"]);
    // The third 300 is a loop: not followed, an ordinary failure, and back home to try again.
    const [down] = outputsOf(t, "down").map((d) => d.output);
    expect(down!.reason).toBe(
      "allocate failed: 300 Try Alternate: 192.0.2.50:3479 redirected this tunnel within the last 5 minutes, not followed again",
    );
    expect(down!.refused).toBe(false);
    expect(t.life.relay.ip).toBe("127.0.0.1");
    await h.advance(4 * 60_000);
    expect(outputsOf(t, "redirected")).toHaveLength(2);
    // Five minutes on, a redirect is news again.
    await h.advance(90_000);
    expect(outputsOf(t, "redirected").length).toBeGreaterThan(2);
  });
});

describe("tunnel lifecycle: pinned relay ports", () => {
  const PORT = PINNED_PORTS.min + 7;
  const pinnedKey = (h: TunnelNet, user: string): CredentialSource => {
    const c = mintPinnedCredentials(TOKEN, Math.floor(h.wall() / 1000), 3600, user, PORT);
    return createCredentialSource(
      { kind: "key", username: c.username, password: c.password },
      { nowMs: () => h.wall() },
    );
  };

  it("serves a pinned port from one service only, and the other takes it once the first stops", async () => {
    const h = new TunnelNet();
    const one = h.addTunnel("one", pinnedKey(h, "acme-pg"), { backoffMax: 2 });
    const two = h.addTunnel("two", pinnedKey(h, "acme-pg"), { backoffMax: 2 });
    await h.start(one);
    await h.start(two);
    await ready(h, one);
    expect(one.life.relayedAddress?.port).toBe(PORT);
    await h.advance(10_000);
    // "two" keeps trying (the holder might go away) and says why it waits.
    const refusals = outputsOf(two, "down").map((d) => d.output.reason);
    expect(refusals.length).toBeGreaterThan(3);
    expect(new Set(refusals)).toEqual(
      new Set([
        `pinned port ${PORT} on 127.0.0.1 is already served by service "one": one service per pinned credential`,
      ]),
    );
    // It never even asked the relay.
    expect(outputsOf(two, "transmit")).toEqual([]);
    await h.act(one, (life, now) => life.stop(now));
    await ready(h, two, 3000);
    expect(two.life.relayedAddress?.port).toBe(PORT);
    expect(h.ended.map((e) => e.reason)).toEqual(["deleted"]);
  });

  it("takes its pinned port back at once after its process is killed and restarted", async () => {
    const h = new TunnelNet();
    const key = pinnedKey(h, "acme-dns");
    const old = h.addTunnel("dns", key);
    await h.start(old);
    await ready(h, old);
    h.kill(old);
    // The restarted process: a new socket (a new 5-tuple) and a pin registry of its own. Over
    // UDP the relay cannot see that the old tunnel died; the newer allocation of the same user
    // takes the port over instead of waiting out the old one's lifetime.
    const restarted = h.addTunnel("dns", key, { pins: new PinClaims() });
    const t0 = h.now;
    await h.start(restarted);
    await ready(h, restarted);
    expect(h.now - t0).toBeLessThan(100);
    expect(restarted.life.relayedAddress?.port).toBe(PORT);
    expect(h.ended.map((e) => e.reason)).toEqual(["taken-over"]);
    expect(outputsOf(restarted, "pin-ignored")).toEqual([]);
    expect(await reachable(h, restarted)).toBe(true);
  });
});
