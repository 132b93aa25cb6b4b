// The pure parts of the tunnel's lifecycle machine (src/lifecycle/), one decision at a time:
// what a relay's failure means (failures.ts), when a tunnel gives up and tries again
// (reconnect.ts), and when credentials are renewed in place or the tunnel re-allocates
// (renewal.ts). No socket and no TurnServer: state, event and `now` in, a decision out. The
// machine as a whole runs against a real TurnServer in lifecycle.test.ts.
import { Method, type TurnClientEvent } from "@turnpike/relay-core";
import { describe, expect, it } from "vitest";
import type { TurnCredentials } from "../src/credentials.js";
import { type Failure, failureOf, lost, pinTaken } from "../src/lifecycle/failures.js";
import { Reconnect } from "../src/lifecycle/reconnect.js";
import {
  CredentialRenewal,
  EXPIRY_MARGIN_MS,
  nextCredentialStep,
  RENEW_RETRY_MS,
  toMachineClock,
} from "../src/lifecycle/renewal.js";
import { REDIRECT_WINDOW_MS } from "../src/redirects.js";

describe("what a relay's failure means for the tunnel", () => {
  const allocateFailed = (code: number, reason: string): TurnClientEvent => ({
    type: "allocate-failed",
    code,
    reason,
  });

  it("takes a 401 or 403 to Allocate as a refusal and any other error as a lost relay", () => {
    expect(failureOf(allocateFailed(401, "Unauthorized"), false)).toEqual({
      reason: "allocate failed: 401 Unauthorized",
      refused: true,
      immediate: false,
    });
    expect(failureOf(allocateFailed(403, "Forbidden"), false)).toMatchObject({ refused: true });
    expect(failureOf(allocateFailed(486, "Allocation Quota Reached"), false)).toEqual(
      lost("allocate failed: 486 Allocation Quota Reached"),
    );
    expect(failureOf(allocateFailed(300, "Try Alternate"), false)).toMatchObject({
      refused: false,
    });
  });

  it("follows a 300's ALTERNATE-SERVER, with a lost relay to fall back on when it was followed lately", () => {
    const alternate = { family: 4 as const, address: "192.0.2.7", port: 3478 };
    const verdict = failureOf(
      { type: "allocate-failed", code: 300, reason: "Try Alternate", alternateServer: alternate },
      false,
    );
    expect(verdict).toEqual({
      alternate,
      otherwise: lost(
        `allocate failed: 300 Try Alternate: 192.0.2.7:3478 redirected this tunnel within the last ${REDIRECT_WINDOW_MS / 60_000} minutes, not followed again`,
      ),
    });
  });

  it("re-allocates at once after a refused Refresh only while renewed credentials are tried", () => {
    const e: TurnClientEvent = { type: "refresh-failed", code: 441, reason: "Wrong Credentials" };
    expect(failureOf(e, true)).toEqual({
      reason: "refresh failed: 441 Wrong Credentials",
      refused: false,
      immediate: true,
    });
    expect(failureOf(e, false)).toMatchObject({ immediate: false });
  });

  it("loses the relay when a keep-alive, Allocate or Refresh goes unanswered, but not for the data path's requests", () => {
    const timeout = (method: number): TurnClientEvent => ({ type: "transaction-timeout", method });
    expect(failureOf(timeout(Method.Binding), false)).toEqual(
      lost("relay did not answer (keep-alive)"),
    );
    expect(failureOf(timeout(Method.Allocate), false)).toEqual(
      lost("relay did not answer (Allocate)"),
    );
    expect(failureOf(timeout(Method.Refresh), false)).toEqual(
      lost("relay did not answer (Refresh)"),
    );
    expect(failureOf(timeout(Method.ChannelBind), false)).toBeUndefined();
    expect(failureOf(timeout(Method.CreatePermission), false)).toBeUndefined();
  });

  it("refuses the tunnel when a peer's permission is refused, naming the relay option that would let it in", () => {
    const refusedPeer = (peerIp: string, code = 403): Failure | undefined =>
      failureOf({ type: "permission-failed", peerIp, code, reason: "Forbidden" }, false) as
        | Failure
        | undefined;
    const loopback = refusedPeer("127.0.0.1");
    expect(loopback?.refused).toBe(true);
    expect(loopback?.reason).toMatch(/^permission for 127\.0\.0\.1 refused: 403 Forbidden \(/);
    expect(loopback?.reason).toContain("--allow-loopback-peers");
    expect(refusedPeer("::1")?.reason).toContain("--allow-loopback-peers");
    const privatePeer = refusedPeer("10.0.0.5");
    expect(privatePeer?.reason).toContain("the relay needs --allow-peer 10.0.0.5");
    expect(privatePeer?.reason).not.toContain("--allow-loopback-peers");
    // Only a 403 is the peer policy's: another code gets no hint.
    expect(refusedPeer("10.0.0.5", 400)?.reason).toBe(
      "permission for 10.0.0.5 refused: 400 Forbidden",
    );
  });

  it("sees no failure in what goes well", () => {
    const relayed = { family: 4 as const, address: "198.51.100.1", port: 50_000 };
    expect(
      failureOf({ type: "allocated", relayed, lifetime: 600 } as TurnClientEvent, false),
    ).toBeUndefined();
    expect(failureOf({ type: "refreshed", lifetime: 600 }, true)).toBeUndefined();
    expect(failureOf({ type: "permission-created", peerIp: "10.0.0.5" }, false)).toBeUndefined();
  });

  it("names the service holding a pinned port, as a wait rather than a refusal", () => {
    expect(pinTaken(50_001, "192.0.2.1", "db")).toEqual(
      lost(
        'pinned port 50001 on 192.0.2.1 is already served by service "db": one service per pinned credential',
      ),
    );
  });
});

describe("when a tunnel gives up on its relay and tries again", () => {
  /** Keep-alive every 5 s; backoff from 1 s up to 8 s, drawing the middle of each window. */
  const reconnect = (jitter = () => 0.5) =>
    new Reconnect({ keepalive: 5, backoffBase: 1, backoffMax: 8, jitter });

  it("counts a relay silent for two keep-alive intervals as lost, and not a millisecond earlier", () => {
    const r = reconnect();
    r.heard(1_000);
    expect(r.silentAt).toBe(11_000);
    expect(r.silence(10_999)).toBeUndefined();
    expect(r.silence(11_000)).toEqual(lost("no answer from the relay for 10 s"));
    r.heard(10_000);
    expect(r.silence(11_000)).toBeUndefined();
  });

  it("waits a full-jitter delay from a window that doubles up to the cap, and is due then", () => {
    const r = reconnect();
    const delays: number[] = [];
    for (let now = 0; delays.length < 6; now += 100) {
      const down = r.down(lost("gone"), false, now);
      expect(r.retryAt).toBe(now + down.delayMs);
      expect(r.due(now + down.delayMs - 1)).toBe(false);
      expect(r.due(now + down.delayMs)).toBe(true);
      delays.push(down.delayMs);
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 4000, 4000]);
    expect(r.count).toBe(6);
  });

  it("retries an immediate failure at once without growing the backoff", () => {
    const r = reconnect();
    r.down(lost("gone"), false, 0);
    const down = r.down({ reason: "refresh failed", refused: false, immediate: true }, true, 50);
    expect(down).toMatchObject({ delayMs: 0, failures: 1, wasReady: true });
    expect(r.due(50)).toBe(true);
    expect(r.count).toBe(2);
  });

  it("starts the backoff over after a connection that stayed up for the cap, or an access window", () => {
    const r = reconnect();
    r.down(lost("gone"), false, 0);
    r.down(lost("gone"), false, 1_000);
    r.connected(2_000);
    expect(r.down(lost("gone"), true, 10_000)).toMatchObject({ delayMs: 500, failures: 1 });
    r.down(lost("gone"), false, 11_000);
    r.reset();
    expect(r.down(lost("gone"), false, 12_000)).toMatchObject({ delayMs: 500, failures: 1 });
  });

  it("says the same refusal once, until the tunnel was ready or lost in between", () => {
    const r = reconnect();
    const refusal: Failure = {
      reason: "allocate failed: 403 Forbidden",
      refused: true,
      immediate: false,
    };
    expect(r.down(refusal, false, 0)).toMatchObject({ refused: true, repeated: false });
    expect(r.down(refusal, false, 1_000)).toMatchObject({ refused: true, repeated: true });
    expect(
      r.down({ ...refusal, reason: "allocate failed: 401 Unauthorized" }, false, 2_000),
    ).toMatchObject({ repeated: false });
    r.ready();
    expect(r.down(refusal, false, 3_000)).toMatchObject({ repeated: false });
    r.down(lost("gone"), false, 4_000);
    expect(r.down(refusal, false, 5_000)).toMatchObject({ repeated: false });
    // A lost relay is never "said already", even worded like the refusal before it.
    expect(r.down({ ...refusal, refused: false }, false, 6_000)).toMatchObject({
      refused: false,
      repeated: false,
    });
  });

  it("has no retry scheduled once an attempt starts", () => {
    const r = reconnect();
    r.down(lost("gone"), false, 0);
    r.cancel();
    expect(r.retryAt).toBeUndefined();
    expect(r.due(1e12)).toBe(false);
  });
});

describe("when credentials are renewed in place and when the tunnel re-allocates", () => {
  /** Credentials of a 1-hour ttl issued at 0, renewed from 80% of it (credentials.ts). */
  const hour: TurnCredentials = {
    username: "3600:acme",
    password: "p",
    expiresAt: 3_600_000,
    renewAt: 2_880_000,
  };
  const reallocAt = hour.expiresAt - EXPIRY_MARGIN_MS;
  const step = (s: Partial<Parameters<typeof nextCredentialStep>[0]>) =>
    nextCredentialStep({
      creds: hour,
      renewing: false,
      renewRetryAt: 0,
      inPlaceRefused: false,
      ready: true,
      ...s,
    });

  it("renews a ready allocation's credentials at their renewal time", () => {
    expect(step({})).toEqual({ at: hour.renewAt, step: "renew" });
  });

  it("re-allocates a minute before expiry when not ready, or when the relay refused renewals in place", () => {
    expect(step({ ready: false })).toEqual({ at: reallocAt, step: "reallocate" });
    expect(step({ inPlaceRefused: true })).toEqual({ at: reallocAt, step: "reallocate" });
  });

  it("re-allocates at the renewal time itself when the ttl is too short for a minute's margin", () => {
    const short = { username: "90:acme", password: "p", expiresAt: 90_000, renewAt: 72_000 };
    expect(step({ creds: short, inPlaceRefused: true })).toEqual({
      at: 72_000,
      step: "reallocate",
    });
  });

  it("tries a failed renewal again later, unless that would pass the re-allocation", () => {
    expect(step({ renewRetryAt: 3_000_000 })).toEqual({ at: 3_000_000, step: "renew" });
    expect(step({ renewRetryAt: reallocAt })).toEqual({ at: reallocAt, step: "reallocate" });
  });

  it("plans nothing while a renewal is under way, or for credentials that never expire", () => {
    expect(step({ renewing: true })).toBeUndefined();
    expect(step({ creds: { ...hour, expiresAt: Infinity, renewAt: Infinity } })).toBeUndefined();
    expect(step({ creds: undefined })).toBeUndefined();
  });

  it("moves wall-clock deadlines onto the machine's clock", () => {
    // The machine's clock reads 5_000 when the wall clock reads 1_000_000.
    expect(toMachineClock(hour, 5_000, 1_000_000)).toEqual({
      ...hour,
      expiresAt: hour.expiresAt - 995_000,
      renewAt: hour.renewAt - 995_000,
    });
  });

  it("keeps one renewal at a time, and looks again a little later after a failed fetch", () => {
    const r = new CredentialRenewal();
    expect(r.step(true)).toBeUndefined();
    r.allocating(hour);
    expect(r.step(true)).toEqual({ at: hour.renewAt, step: "renew" });
    r.begin();
    expect(r.renewing).toBe(true);
    expect(r.step(true)).toBeUndefined();
    r.fetchFailed(hour.renewAt);
    expect(r.renewing).toBe(false);
    expect(r.step(true)).toEqual({ at: hour.renewAt + RENEW_RETRY_MS, step: "renew" });
    // A new allocation starts from its own credentials, with no failed renewal behind it.
    r.allocating({ ...hour, username: "7200:acme" });
    expect(r.step(true)).toEqual({ at: hour.renewAt, step: "renew" });
    r.begin();
    r.dropped();
    expect(r.renewing).toBe(false);
    expect(r.renewals).toBe(0);
  });
});
