// Replacing credentials while the relay runs (secret rotation, a reload): requests are checked
// against the new list at once, keys cached from a removed secret authenticate nothing, and live
// allocations are not dropped.
import { describe, expect, it } from "vitest";
import { SharedSecretCredentials, StaticCredentials } from "../src/auth/credentials.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { RouteKind } from "../src/server/types.js";
import { Harness, TestClient, UNIX_T0, USERS } from "./harness.js";

function restClient(h: Harness, secret: string, user: string, port: number): TestClient {
  const c = mintRestCredentials(secret, UNIX_T0, 3600, user);
  return new TestClient(h, { port, username: c.username, password: c.password });
}

describe("shared secrets replaced at run time", () => {
  it("stop authenticating a removed secret's credentials at once, even with their keys cached", () => {
    const store = new SharedSecretCredentials(["old"]);
    const h = new Harness({ credentials: store });
    const alice = restClient(h, "old", "alice", 1);
    expect(alice.allocate().code).toBe(0);
    expect(alice.channelBind(0x4000, "198.51.100.1", 5000).code).toBe(0);
    expect(store.cacheSize).toBe(1);

    // Rotation, step 1: the new secret first (it mints), the old one still verifies.
    store.setSecrets(["new", "old"]);
    expect(alice.refresh(600).code).toBe(0);
    expect(restClient(h, "new", "bob", 2).allocate().code).toBe(0);

    // Step 2: the old secret goes. Alice's cached key must not let her in any more.
    store.setSecrets(["new"]);
    expect(alice.refresh(600).code).toBe(401);
    expect(h.server.stats.authFailures["bad-integrity"]).toBe(1);
    // Her allocation is not dropped: it relays until its lifetime ends...
    expect(h.server.allocationCount).toBe(2);
    expect(alice.channelData(0x4000, Uint8Array.of(1, 2, 3)).kind).toBe(RouteKind.ToPeer);
    // ...and credentials of the new secret for the same user (the same principal) refresh it.
    const renewed = mintRestCredentials("new", UNIX_T0, 3600, "alice");
    alice.username = renewed.username;
    alice.password = renewed.password;
    expect(alice.refresh(600).code).toBe(0);
  });

  it("let an allocation lapse at its lifetime when nothing valid refreshes it", () => {
    const store = new SharedSecretCredentials(["old"]);
    const h = new Harness({ credentials: store });
    const alice = restClient(h, "old", "alice", 1);
    expect(alice.allocate({ lifetime: 600 }).code).toBe(0);
    store.setSecrets(["new"]);
    h.tick(599);
    expect(h.server.allocationCount).toBe(1);
    h.tick(1);
    expect(h.server.allocationCount).toBe(0);
    h.expectOutputs([{ type: "close-relay" }, { type: "allocation-ended", reason: "expired" }]);
  });
});

describe("the credential store replaced at run time (setCredentials)", () => {
  it("checks requests against the new store, keeps nonces valid and keeps live allocations", () => {
    const h = new Harness({ credentials: new StaticCredentials(USERS) });
    const alice = new TestClient(h, { port: 1, username: "alice" });
    const bob = new TestClient(h, { port: 2, username: "bob" });
    expect(alice.allocate().code).toBe(0);
    expect(bob.allocate().code).toBe(0);
    h.server.setCredentials(new StaticCredentials([["bob", "bob-pass"]]));
    // A 401, not a 438: her nonce is as good as before, her user is gone.
    expect(alice.refresh(600).code).toBe(401);
    expect(h.server.stats.authFailures["unknown-user"]).toBe(1);
    expect(h.server.stats.authFailures["stale-nonce"]).toBe(0);
    expect(bob.refresh(600).code).toBe(0);
    expect(h.server.allocationCount).toBe(2);
  });
});
