// The revocation list names principals: static users, TURN REST users (pinned or not) and
// expiry-only REST credentials can each be revoked, and none by a name that only looks alike.
import { describe, expect, it } from "vitest";
import {
  CombinedCredentials,
  expiryOnlyPrincipal,
  type Principal,
  restPrincipal,
  SharedSecretCredentials,
  StaticCredentials,
  staticPrincipal,
} from "../src/auth/credentials.js";
import { mintPinnedCredentials } from "../src/auth/pinned-username.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { RevocationList } from "../src/auth/revocation.js";
import { Harness, TestClient, UNIX_T0 } from "./harness.js";

const SECRET = "platform-token";
const STATIC_USERS: [string, string][] = [
  ["alice", "alice-pass"],
  ["12345", "digits-pass"],
  ["ops:admin", "colon-pass"],
  ["123:abc", "looks-rest-pass"],
];

function harness(revokedUsers: string[] = []): Harness {
  return new Harness({
    credentials: new CombinedCredentials([
      new StaticCredentials(STATIC_USERS),
      new SharedSecretCredentials([SECRET]),
    ]),
    pinnedPorts: { min: 40000, max: 40009 },
    minPort: 50000,
    maxPort: 50099,
    revokedUsers,
  });
}

let nextPort = 1;

/** A client on its own 5-tuple with the static user `name`. */
function staticUser(h: Harness, name: string): TestClient {
  const password = STATIC_USERS.find(([u]) => u === name)![1];
  return new TestClient(h, { port: nextPort++, username: name, password });
}

/** A client holding TURN REST credentials for `user` (undefined: expiry-only), an hour long. */
function restUser(h: Harness, user: string | undefined, ttl = 3600): TestClient {
  const c = mintRestCredentials(SECRET, UNIX_T0, ttl, user);
  return new TestClient(h, { port: nextPort++, username: c.username, password: c.password });
}

function pinnedUser(h: Harness, user: string, port: number): TestClient {
  const c = mintPinnedCredentials(SECRET, UNIX_T0, 3600, user, port);
  return new TestClient(h, { port: nextPort++, username: c.username, password: c.password });
}

describe("the revocation list's entries", () => {
  /** Each row: an entry, a principal, and whether the entry revokes it. */
  const expectRevokes = (rows: readonly [string, Principal, boolean][]) => {
    for (const [entry, principal, revoked] of rows) {
      expect(new RevocationList([entry]).revokes(principal), `${entry} / ${principal}`).toBe(
        revoked,
      );
    }
  };

  it("read a plain name as the static user, the REST user and the expiry-only credentials of that name", () => {
    expectRevokes([
      ["12345", staticPrincipal("12345"), true],
      ["12345", restPrincipal("12345"), true],
      ["12345", expiryOnlyPrincipal("12345"), true],
      ["12345", staticPrincipal("123456"), false],
    ]);
  });

  it("single one kind out with static:, rest: and rest-expiry:", () => {
    expectRevokes([
      ["static:12345", staticPrincipal("12345"), true],
      ["static:12345", restPrincipal("12345"), false],
      ["static:12345", expiryOnlyPrincipal("12345"), false],
      ["rest:12345", restPrincipal("12345"), true],
      ["rest:12345", staticPrincipal("12345"), false],
      ["rest:12345", expiryOnlyPrincipal("12345"), false],
      ["rest-expiry:12345", expiryOnlyPrincipal("12345"), true],
      ["rest-expiry:12345", restPrincipal("12345"), false],
    ]);
  });

  it("read everything after the prefix as the name, colons included", () => {
    expectRevokes([
      ["static:ops:admin", staticPrincipal("ops:admin"), true],
      ["ops:admin", staticPrincipal("ops:admin"), true],
      ["rest:team:a", restPrincipal("team:a"), true],
      ["static:rest:x", staticPrincipal("rest:x"), true],
      ["rest:x", staticPrincipal("rest:x"), false],
    ]);
  });

  it("revoke every pin of a REST user by its name, and one pin by the pinned name", () => {
    expectRevokes([
      ["acme-pg", restPrincipal("acme-pg;port=40007"), true],
      ["rest:acme-pg", restPrincipal("acme-pg;port=40007"), true],
      ["rest:acme-pg;port=40007", restPrincipal("acme-pg;port=40007"), true],
      ["rest:acme-pg;port=40007", restPrincipal("acme-pg;port=40008"), false],
      ["rest:acme-pg;port=40007", restPrincipal("acme-pg"), false],
      ["acme-pg", staticPrincipal("acme-pg;port=40007"), false],
    ]);
  });

  it("ignore empty entries and revoke nothing when empty", () => {
    expect(new RevocationList(["", ""]).size).toBe(0);
    expect(new RevocationList([]).revokes(staticPrincipal("alice"))).toBe(false);
  });
});

describe("revoked credentials at the server", () => {
  it("refuse a static user named 12345, whose name reads like a REST expiry", () => {
    const h = harness(["12345"]);
    expect(staticUser(h, "12345").allocate().code).toBe(403);
    const only = harness(["static:12345"]);
    expect(staticUser(only, "12345").allocate().code).toBe(403);
    expect(restUser(only, "12345").allocate().code).toBe(0);
  });

  it("refuse a static user whose name holds a colon, and never by the part after it", () => {
    const h = harness(["ops:admin", "abc"]);
    expect(staticUser(h, "ops:admin").allocate().code).toBe(403);
    // "123:abc" is a static user here, not the REST user "abc" with an expiry.
    expect(staticUser(h, "123:abc").allocate().code).toBe(0);
    expect(restUser(h, "abc").allocate().code).toBe(403);
    expect(staticUser(harness(["123:abc"]), "123:abc").allocate().code).toBe(403);
  });

  it("refuse expiry-only REST credentials by their whole username", () => {
    const probe = harness();
    const username = restUser(probe, undefined).username;
    expect(username).toBe(String(UNIX_T0 + 3600));
    expect(restUser(harness([username]), undefined).allocate().code).toBe(403);
    expect(restUser(harness([`rest-expiry:${username}`]), undefined).allocate().code).toBe(403);
    // The REST user whose name is those digits is someone else.
    expect(restUser(harness([`rest:${username}`]), undefined).allocate().code).toBe(0);
    expect(restUser(harness([`rest-expiry:${username}`]), username).allocate().code).toBe(0);
    // Another expiry is another principal.
    expect(restUser(harness([username]), undefined, 7200).allocate().code).toBe(0);
  });

  it("refuse pinned credentials of a revoked user, and only the revoked pin when one is named", () => {
    const h = harness(["acme-pg"]);
    expect(pinnedUser(h, "acme-pg", 40007).allocate().code).toBe(403);
    const one = harness(["rest:acme-pg;port=40007"]);
    expect(pinnedUser(one, "acme-pg", 40007).allocate().code).toBe(403);
    expect(pinnedUser(one, "acme-pg", 40008).allocate().code).toBe(0);
    expect(restUser(one, "acme-pg").allocate().code).toBe(0);
  });

  it("ends the live allocations of the principals named, and only theirs", () => {
    const h = harness();
    const staticAlice = staticUser(h, "alice");
    const restAlice = restUser(h, "alice");
    const pinned = pinnedUser(h, "acme-pg", 40003);
    for (const c of [staticAlice, restAlice, pinned]) expect(c.allocate().code).toBe(0);
    expect(h.server.setRevokedUsers(["static:alice"], h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: staticAlice.relayFor(4) },
      { type: "allocation-ended", reason: "revoked" },
    ]);
    expect(restAlice.refresh(600).code).toBe(0);
    expect(h.server.setRevokedUsers(["static:alice", "acme-pg"], h.now)).toBe(1);
    h.expectOutputs([
      { type: "close-relay", relay: pinned.relayFor(4) },
      { type: "allocation-ended", reason: "revoked" },
    ]);
    expect(h.server.stats.allocationsActive).toBe(1);
  });
});
