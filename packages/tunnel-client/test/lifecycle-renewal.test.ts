// Credential renewal (src/lifecycle/renewal.ts) in simulated time against relay-core's real
// TurnServer (lifecycle-harness.ts): credentials renewed in place keep the allocation and its
// relayed address; a relay that refuses renewed credentials (441, RFC 8656 §7) makes the tunnel
// re-allocate a minute before expiry; a failed fetch is tried again; a Refresh in flight is
// waited for. Hours of credential ttls run in milliseconds; tunnel-renewal.test.ts covers the
// same over sockets with real processes.
import { describe, expect, it } from "vitest";
import type { CredentialSource } from "../src/credentials.js";
import { reallocateBy } from "../src/lifecycle/renewal.js";
import {
  outputsOf,
  reachable,
  ready,
  refreshes,
  TunnelNet,
  WALL_EPOCH,
} from "./lifecycle-harness.js";

describe("tunnel lifecycle: credential renewal", () => {
  it("renews 5 s credentials in place for 10 minutes: one allocation, one relayed address, no reconnect", async () => {
    const h = new TunnelNet();
    const t = h.addTunnel("db", h.restCredentials("acme", 5));
    await h.start(t);
    await ready(h, t);
    const relayed = t.life.relayedAddress;
    await h.advance(600_000);
    // Renewal is due at 80% of each ttl (4 s), plus a few ms to fetch and refresh.
    expect(t.life.credentialRenewals).toBeGreaterThan(100);
    expect(outputsOf(t, "renewed")).toHaveLength(t.life.credentialRenewals);
    expect(t.life.state).toBe("ready");
    expect(t.life.relayedAddress).toEqual(relayed);
    expect(t.life.reconnects).toBe(0);
    expect(outputsOf(t, "reallocating")).toEqual([]);
    expect(outputsOf(t, "down")).toEqual([]);
    // The first credentials are long expired: the relay kept the allocation alive on renewed ones.
    const allocations = h.server.allocations(h.now);
    expect(allocations).toHaveLength(1);
    expect(allocations[0]!.relayed[0]!.port).toBe(relayed!.port);
    expect(await reachable(h, t)).toBe(true);
  });

  it("re-allocates a minute before expiry when the relay refuses renewed credentials (441)", async () => {
    // turnpike-relay ties an allocation to the REST <user>: credentials for another user are
    // answered with 441, as coturn answers any new USERNAME.
    const h = new TunnelNet();
    let user = "alice";
    const mint = () => h.restCredentials(user, 600);
    let source = mint();
    const credentials: CredentialSource = { get: () => source.get() };
    const t = h.addTunnel("db", credentials);
    await h.start(t);
    await ready(h, t);
    const first = await source.get();
    user = "bob";
    source = mint();
    await h.runUntil(() => outputsOf(t, "ready").length === 2, 700_000);
    const [refused] = outputsOf(t, "renewal-refused");
    const [reallocating] = outputsOf(t, "reallocating");
    // Renewal is tried at 80% of the ttl (480 s), refused, and the re-allocation waits until a
    // minute before the first credentials expire (540 s), not until they are refused.
    expect(refused!.at).toBeGreaterThanOrEqual(first.renewAt - WALL_EPOCH);
    expect(refused!.at).toBeLessThan(first.renewAt - WALL_EPOCH + 100);
    expect(reallocating!.at).toBe(reallocateBy(first) - WALL_EPOCH);
    expect(reallocating!.output.refusedInPlace).toBe(true);
    expect(reallocating!.at).toBeLessThan(first.expiresAt - WALL_EPOCH);
    // The old allocation was released (not left to expire), the new one belongs to bob, and a
    // planned re-allocation is not a reconnect.
    expect(h.ended.map((e) => e.reason)).toEqual(["deleted"]);
    expect(h.server.allocations(h.now).map((a) => a.user)).toEqual(["bob"]);
    expect(t.life.reconnects).toBe(0);
    expect(await reachable(h, t)).toBe(true);
  });

  it("tries a failed credential fetch again 5 s later and keeps the allocation meanwhile", async () => {
    const h = new TunnelNet();
    // An hour's ttl: renewal at 48 min, so a retry 5 s later is still long before the
    // re-allocation deadline (a minute before expiry).
    const real = h.restCredentials("acme", 3600);
    let fetches = 0;
    const credentials: CredentialSource = {
      get: () => (++fetches === 2 ? Promise.reject(new Error("HTTP 503")) : real.get()),
    };
    const t = h.addTunnel("db", credentials);
    await h.start(t);
    await ready(h, t);
    const relayed = t.life.relayedAddress;
    await h.runUntil(() => outputsOf(t, "renewal-failed").length === 1, 3600_000);
    expect(t.life.lastError).toBe("renewing credentials: HTTP 503");
    expect(t.life.state).toBe("ready");
    await h.runUntil(() => t.life.credentialRenewals === 1, 60_000);
    const [failed] = outputsOf(t, "renewal-failed");
    const [renewed] = outputsOf(t, "renewed");
    expect(failed!.output.error).toBe("HTTP 503");
    expect(renewed!.at - failed!.at).toBeGreaterThanOrEqual(5000);
    expect(renewed!.at - failed!.at).toBeLessThan(5100);
    expect(t.life.relayedAddress).toEqual(relayed);
    expect(outputsOf(t, "reallocating")).toEqual([]);
    expect(t.life.reconnects).toBe(0);
  });

  it("waits for a Refresh in flight before trying renewed credentials on the allocation", async () => {
    const h = new TunnelNet();
    // ttl 676 s: renewal is due at 540.8 s, just after the client's own Refresh of its 600 s
    // allocation (at 540 s, a minute before the lifetime ends). The relay's answers are lost
    // for 1.5 s, so that Refresh is still being retransmitted when the renewal comes.
    const t = h.addTunnel("db", h.restCredentials("acme", 676));
    await h.start(t);
    await ready(h, t);
    const before = refreshes(t).length;
    const renewAt = 540_800;
    h.loseToTunnel = (at) => at >= 540_000 && at < 541_500;
    await h.runUntil(() => t.life.credentialRenewals === 1, 600_000);
    const sent = refreshes(t).slice(before);
    const original = sent[0]!.username;
    const renewed = sent.find((r) => r.username !== original)!;
    // The in-flight Refresh (and its retransmissions) kept the old USERNAME; the renewed one went
    // out only once that transaction was answered, and it was taken in place.
    expect(sent[0]!.at).toBeLessThan(renewAt);
    expect(sent.filter((r) => r.username === original).length).toBeGreaterThan(1);
    expect(renewed.at).toBeGreaterThanOrEqual(541_500);
    expect(outputsOf(t, "renewed")[0]!.at).toBeGreaterThan(renewed.at);
    expect(outputsOf(t, "renewal-refused")).toEqual([]);
    expect(t.life.reconnects).toBe(0);
  });

  it("renews 5 s credentials in place even when a keep-alive Refresh is in flight at the renewal", async () => {
    // With a 5 s ttl, renewing and re-allocating are due at the same instant: a renewal that
    // stepped aside for a keep-alive Refresh used to find re-allocating overdue (a new relayed
    // address). The same run twice: the first finds when the renewal starts and the keep-alive
    // before it; the second loses the relay's answers from that keep-alive until just after the
    // renewal started, so the keep-alive Refresh is still being retransmitted then.
    const run = async (lose: (at: number) => boolean) => {
      const h = new TunnelNet();
      const t = h.addTunnel("db", h.restCredentials("acme", 5), { keepalive: 3 });
      await h.start(t);
      await ready(h, t);
      h.loseToTunnel = lose;
      await h.runUntil(() => t.life.credentialRenewals >= 1, 20_000);
      return { h, t };
    };
    const dry = await run(() => false);
    const renewalStart = outputsOf(dry.t, "fetch-credentials")[1]!.at;
    const keepalive = refreshes(dry.t)
      .filter((r) => r.at < renewalStart)
      .at(-1)!.at;
    const answersBack = renewalStart + 500;
    const { h, t } = await run((at) => at >= keepalive - 10 && at < answersBack);
    const relayed = t.life.relayedAddress;
    expect(t.life.credentialRenewals).toBe(1);
    expect(outputsOf(t, "reallocating")).toEqual([]);
    expect(t.life.reconnects).toBe(0);
    // The renewed Refresh went out once the keep-alive's answer got through.
    const sent = refreshes(t);
    const renewed = sent.find((r) => r.username !== sent[0]!.username)!;
    expect(renewed.at).toBeGreaterThanOrEqual(answersBack);
    await h.advance(10_000);
    expect(t.life.relayedAddress).toEqual(relayed);
    expect(t.life.reconnects).toBe(0);
  });
});
