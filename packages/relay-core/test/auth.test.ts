import { createHmac } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { constantTimeEqual } from "../src/auth/constant-time.js";
import {
  CombinedCredentials,
  type CredentialStore,
  type KeyLookup,
  SharedSecretCredentials,
  StaticCredentials,
} from "../src/auth/credentials.js";
import { longTermKeyMd5, longTermKeySha256, userHash } from "../src/auth/long-term-key.js";
import {
  NONCE_COOKIE,
  NonceIssuer,
  nonceSecurityFeatures,
  SecurityFeature,
} from "../src/auth/nonce.js";
import {
  mintRestCredentials,
  parseRestUsername,
  restPassword,
} from "../src/auth/rest-credentials.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

function okKey(result: KeyLookup): Uint8Array {
  if (!result.ok) throw new Error(`expected ok, got ${result.reason}`);
  return result.key;
}

describe("long-term keys (RFC 8489 §9.2.2)", () => {
  it("derives the key that signs the RFC 5769 §2.4 sample request", () => {
    // RFC 5769 §2.4: USERNAME "マトリックス", REALM "example.org", password "TheMatrIX".
    const message = Buffer.from(
      (
        "00010060 2112a442 78ad3433 c6ad72c0 29da412e 00060012 e3839ee3 8388e383 aae38383" +
        " e382afe3 82b90000 0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679" +
        " 36347341 0014000b 6578616d 706c652e 6f726700"
      ).replace(/ /g, ""),
      "hex",
    );
    const key = longTermKeyMd5("マトリックス", "example.org", "TheMatrIX");
    const mac = createHmac("sha1", key).update(message).digest("hex");
    expect(mac).toBe("f67024656dd64a3e02b8e0712e85c9a28ca89666");
  });

  it("hashes the username for USERHASH as in the RFC 8489 §B.1 vector", () => {
    expect(hex(userHash("マトリックス", "example.org"))).toBe(
      "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704",
    );
  });

  it("derives MD5 and SHA-256 keys of user:realm:password", () => {
    expect(hex(longTermKeyMd5("user", "realm", "pass"))).toBe("8493fbc53ba582fb4c044c456bdc40eb");
    expect(longTermKeySha256("user", "realm", "pass")).toHaveLength(32);
    expect(hex(longTermKeySha256("user", "realm", "pass"))).not.toBe(
      hex(longTermKeySha256("user", "realm", "pas")),
    );
  });
});

describe("constantTimeEqual", () => {
  it("is true only for equal contents of equal length", () => {
    expect(constantTimeEqual(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 3))).toBe(true);
    expect(constantTimeEqual(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2, 4))).toBe(false);
    expect(constantTimeEqual(Uint8Array.of(1, 2, 3), Uint8Array.of(1, 2))).toBe(false);
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(0))).toBe(true);
    expect(constantTimeEqual(undefined as never, Uint8Array.of(1))).toBe(false);
  });
});

describe("TURN REST credentials", () => {
  it("mints coturn-compatible username and password", () => {
    const c = mintRestCredentials("north", 1_700_000_000, 86_400, "alice");
    expect(c.username).toBe("1700086400:alice");
    expect(c.ttl).toBe(86_400);
    // base64(HMAC-SHA1(secret, username)), as coturn's --use-auth-secret computes it.
    expect(c.password).toBe(
      createHmac("sha1", "north").update("1700086400:alice").digest("base64"),
    );
    expect(restPassword("north", c.username)).toBe(c.password);
    expect(mintRestCredentials("north", 1_700_000_000, 60).username).toBe("1700000060");
  });

  it("computes the password as base64(HMAC-SHA1(secret, username)) for any text", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", maxLength: 100 }),
        fc.string({ unit: "grapheme", maxLength: 100 }),
        (secret, username) => {
          expect(restPassword(secret, username)).toBe(
            createHmac("sha1", secret).update(username, "utf8").digest("base64"),
          );
        },
      ),
    );
  });

  it("parses timestamp-first usernames only", () => {
    expect(parseRestUsername("1700086400")).toEqual({ expiry: 1_700_086_400, user: undefined });
    expect(parseRestUsername("1700086400:alice")).toEqual({ expiry: 1_700_086_400, user: "alice" });
    expect(parseRestUsername("1700086400:a:b:c")).toEqual({ expiry: 1_700_086_400, user: "a:b:c" });
    for (const bad of [
      "",
      "alice",
      "alice:1700086400",
      ":alice",
      "1700086400:",
      "-5:x",
      "1e9",
      "1234567890123456",
    ]) {
      expect(parseRestUsername(bad), bad).toBeUndefined();
    }
  });

  it("round-trips minted usernames", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.integer({ min: 1, max: 10 ** 7 }),
        fc.option(fc.string({ minLength: 1 }), { nil: undefined }),
        (now, ttl, user) => {
          const c = mintRestCredentials("s", now, ttl, user);
          expect(parseRestUsername(c.username)).toEqual({ expiry: now + ttl, user });
        },
      ),
    );
  });
});

describe("credential stores", () => {
  it("finds a static user by USERHASH (RFC 8489 §14.4); a REST store finds none", () => {
    const combined = new CombinedCredentials([
      new SharedSecretCredentials(["s"]),
      new StaticCredentials([
        ["alice", "wonderland"],
        ["bob", "builder"],
      ]),
    ]);
    expect(combined.usernameForHash(userHash("bob", "example.org"), "example.org")).toBe("bob");
    // Another realm hashes to something else.
    expect(combined.usernameForHash(userHash("bob", "other.org"), "example.org")).toBeUndefined();
    expect(combined.usernameForHash(userHash("carol", "example.org"), "example.org")).toBe(
      undefined,
    );
    const rest: CredentialStore = new SharedSecretCredentials(["s"]);
    expect(rest.usernameForHash).toBeUndefined();
  });

  it("StaticCredentials returns the long-term key of known users only", () => {
    const store = new StaticCredentials([["alice", "wonderland"]]);
    const result = store.lookup("alice", "example.org", 0);
    expect(result).toMatchObject({ ok: true, principal: "static:alice" });
    expect(hex(okKey(result))).toBe(hex(longTermKeyMd5("alice", "example.org", "wonderland")));
    expect(hex(okKey(store.lookup("alice", "example.org", 0, "sha256")))).toBe(
      hex(longTermKeySha256("alice", "example.org", "wonderland")),
    );
    expect(store.lookup("bob", "example.org", 0)).toEqual({ ok: false, reason: "unknown-user" });
    // Many client-chosen realms: still correct keys, memory stays bounded.
    for (let i = 0; i < 50; i++) {
      expect(hex(okKey(store.lookup("alice", `realm${i}`, 0)))).toBe(
        hex(longTermKeyMd5("alice", `realm${i}`, "wonderland")),
      );
    }
  });

  it("SharedSecretCredentials accepts minted credentials until they expire", () => {
    const store = new SharedSecretCredentials(["north"]);
    const c = mintRestCredentials("north", 1000, 600, "alice");
    const ok = store.lookup(c.username, "example.org", 1599);
    expect(ok).toMatchObject({ ok: true, principal: "rest:alice" });
    expect(hex(okKey(ok))).toBe(hex(longTermKeyMd5(c.username, "example.org", c.password)));
    expect(store.lookup(c.username, "example.org", 1600)).toEqual({ ok: false, reason: "expired" });
    expect(store.lookup("alice", "example.org", 0)).toEqual({ ok: false, reason: "malformed" });
    const bare = mintRestCredentials("north", 1000, 600);
    expect(store.lookup(bare.username, "r", 1000)).toMatchObject({
      ok: true,
      principal: "rest-expiry:1600",
    });
  });

  it("SharedSecretCredentials offers one candidate key per secret during rotation", () => {
    const store = new SharedSecretCredentials(["new", "old"]);
    const minted = mintRestCredentials("old", 1000, 600, "bob");
    const result = store.lookup(minted.username, "r", 1000);
    if (!result.ok) throw new Error("expected ok");
    expect(result.keys).toHaveLength(2);
    expect(result.key).toBe(result.keys[0]);
    const wanted = hex(longTermKeyMd5(minted.username, "r", minted.password));
    expect(result.keys.map(hex)).toContain(wanted);
    expect(hex(result.keys[1]!)).toBe(wanted);
    expect(hex(result.keys[0]!)).not.toBe(wanted);
  });

  it("SharedSecretCredentials answers with the key that verifies, or bad-integrity", () => {
    const store = new SharedSecretCredentials(["new", "old"]);
    const minted = mintRestCredentials("old", 1000, 600, "bob");
    const wanted = hex(longTermKeyMd5(minted.username, "r", minted.password));
    const result = store.lookup(minted.username, "r", 1000, "md5", (k) => hex(k) === wanted);
    expect(hex(okKey(result))).toBe(wanted);
    expect(store.lookup(minted.username, "r", 1000, "md5", () => false)).toEqual({
      ok: false,
      reason: "bad-integrity",
    });
  });

  it("SharedSecretCredentials caches keys only once MESSAGE-INTEGRITY verified with them", () => {
    const store = new SharedSecretCredentials(["s"]);
    // Strangers: any number of made-up usernames, however long, with integrity that fails.
    for (let i = 0; i < 1000; i++) {
      const username = `${2000 + i}:${"a".repeat(500)}`;
      expect(store.lookup(username, "r", 1000, "md5", () => false)).toMatchObject({ ok: false });
      store.lookup(username, "r", 1000); // no verify: candidates only, nothing cached either
    }
    expect(store.cacheSize).toBe(0);
    // The holder of real credentials: cached once verified.
    const c = mintRestCredentials("s", 1000, 600, "alice");
    const key = hex(longTermKeyMd5(c.username, "r", c.password));
    expect(store.lookup(c.username, "r", 1000, "md5", (k) => hex(k) === key).ok).toBe(true);
    expect(store.cacheSize).toBe(1);
    // A cached username with a wrong MAC is still refused.
    expect(store.lookup(c.username, "r", 1000, "md5", () => false).ok).toBe(false);
  });

  it("SharedSecretCredentials keeps its cache bounded", () => {
    const store = new SharedSecretCredentials(["s"], { maxCacheEntries: 3 });
    for (let i = 0; i < 10; i++) store.lookup(`${2000 + i}:u`, "r", 1000, "md5", () => true);
    expect(store.cacheSize).toBe(3);
    const again = store.lookup("2000:u", "r", 1000); // evicted, recomputed identically
    expect(hex(okKey(again))).toBe(hex(longTermKeyMd5("2000:u", "r", restPassword("s", "2000:u"))));
  });

  it("SharedSecretCredentials answers a cached username with the key of the realm and algorithm asked", () => {
    const store = new SharedSecretCredentials(["s"]);
    const c = mintRestCredentials("s", 1000, 600, "alice");
    const keyOf = (realm: string, sha256: boolean) =>
      hex(
        sha256
          ? longTermKeySha256(c.username, realm, c.password)
          : longTermKeyMd5(c.username, realm, c.password),
      );
    const ask = (realm: string, sha256: boolean, now = 1000) =>
      store.lookup(
        c.username,
        realm,
        now,
        sha256 ? "sha256" : "md5",
        (k) => hex(k) === keyOf(realm, sha256),
      );
    expect(ask("r", false).ok).toBe(true);
    expect(store.cacheSize).toBe(1);
    // Cached under (r, MD5): another realm or algorithm still gets its own key, never r's.
    for (const [realm, sha256] of [
      ["q", false],
      ["r", true],
      ["r", false],
      ["q", true],
    ] as const) {
      const answer = ask(realm, sha256);
      expect(answer.ok).toBe(true);
      expect(hex(okKey(answer))).toBe(keyOf(realm, sha256));
      expect(hex(okKey(store.lookup(c.username, realm, 1000, sha256 ? "sha256" : "md5")))).toBe(
        keyOf(realm, sha256),
      );
    }
    expect(store.cacheSize).toBe(1);
    // A cached username still expires with its name (draft-uberti-behave-turn-rest §2.2).
    expect(ask("q", true, 1600)).toEqual({ ok: false, reason: "expired" });
    // And a key that does not verify is refused, cached or not.
    expect(store.lookup(c.username, "q", 1000, "sha256", () => false).ok).toBe(false);
  });

  it("SharedSecretCredentials lets the keys of expired usernames go as new ones come in", () => {
    const store = new SharedSecretCredentials(["s"]);
    // A minute of clients minting a username a second with a 60 s TTL.
    for (let t = 1000; t < 1060; t++) store.lookup(`${t + 60}:u`, "r", t, "md5", () => true);
    expect(store.cacheSize).toBe(60);
    // An hour later one client comes back: the expired keys at the front go with it.
    for (let i = 0; i < 20; i++) store.lookup(`${5000 + i}:v`, "r", 4600, "md5", () => true);
    expect(store.cacheSize).toBe(20);
  });

  it("names a static user and a TURN REST user of the same name as different principals", () => {
    const combined = new CombinedCredentials([
      new StaticCredentials([["alice", "pw"]]),
      new SharedSecretCredentials(["s"]),
    ]);
    const staticAlice = combined.lookup("alice", "r", 0);
    const restAlice = combined.lookup(
      mintRestCredentials("s", 1000, 600, "alice").username,
      "r",
      1000,
    );
    expect(staticAlice.ok && restAlice.ok).toBe(true);
    if (staticAlice.ok && restAlice.ok) expect(staticAlice.principal).not.toBe(restAlice.principal);
  });

  it("CombinedCredentials takes the first store that knows the user", () => {
    const combined = new CombinedCredentials([
      new StaticCredentials([["alice", "pw"]]),
      new SharedSecretCredentials(["s"]),
    ]);
    expect(combined.lookup("alice", "r", 0)).toMatchObject({ ok: true, principal: "static:alice" });
    expect(combined.lookup("2000:bob", "r", 1000)).toMatchObject({
      ok: true,
      principal: "rest:bob",
    });
    // A known user with a wrong MAC: that store's answer stands (no fall-through).
    expect(combined.lookup("alice", "r", 0, "md5", () => false)).toEqual({
      ok: false,
      reason: "bad-integrity",
    });
    expect(combined.lookup("500:bob", "r", 1000)).toEqual({ ok: false, reason: "expired" });
    expect(combined.lookup("carol", "r", 0)).toEqual({ ok: false, reason: "unknown-user" });
    expect(
      new CombinedCredentials([new SharedSecretCredentials(["s"])]).lookup("carol", "r", 0),
    ).toEqual({
      ok: false,
      reason: "malformed",
    });
  });
});

describe("NonceIssuer (RFC 8489 §9.2)", () => {
  const secret = Uint8Array.from({ length: 32 }, (_, i) => i);
  const issuer = new NonceIssuer(secret, 60_000);

  it("reads the security features a nonce cookie announces", () => {
    expect(nonceSecurityFeatures(issuer.issue(1, "x"))).toBe(SecurityFeature.PasswordAlgorithms);
    expect(nonceSecurityFeatures(`${NONCE_COOKIE}AAAD`)).toBe(3);
    expect(nonceSecurityFeatures("d5207566d5cfc168")).toBeUndefined(); // coturn's: no cookie
    expect(nonceSecurityFeatures(`${NONCE_COOKIE}A`)).toBeUndefined();
  });

  it("issues printable nonces that start with the nonce cookie", () => {
    const nonce = issuer.issue(123_456, "udp:192.0.2.1:5000");
    expect(nonce.startsWith(`${NONCE_COOKIE}AAAB`)).toBe(true); // PASSWORD-ALGORITHMS bit
    expect(nonce.length).toBeLessThan(128);
    expect(nonce).toMatch(/^[\x21\x23-\x5b\x5d-\x7e]+$/); // qdtext without '"' and '\'
    const both = new NonceIssuer(
      secret,
      1,
      SecurityFeature.PasswordAlgorithms | SecurityFeature.UsernameAnonymity,
    );
    expect(both.issue(0, "x").startsWith("obMatJos2AAAD")).toBe(true);
    expect(new NonceIssuer(secret, 1, 0).issue(0, "x").startsWith("obMatJos2AAAA")).toBe(true);
  });

  it("accepts a nonce for its lifetime, then calls it stale", () => {
    const nonce = issuer.issue(1000, "a");
    expect(issuer.check(nonce, 1000, "a")).toBe("valid");
    expect(issuer.check(nonce, 60_999, "a")).toBe("valid");
    expect(issuer.check(nonce, 61_000, "a")).toBe("stale");
  });

  it("writes the issue time as 48 bits in 8 base64url characters, across the whole range", () => {
    const prefixLength = NONCE_COOKIE.length + 4;
    for (const t of [0, 63, 64, 0xffffff, 0x1000000, 0x1000001, 2 ** 47 + 12_345, 2 ** 48 - 1]) {
      const nonce = issuer.issue(t, "a");
      const bytes = Buffer.alloc(6);
      bytes.writeUIntBE(t, 0, 6);
      expect(nonce.slice(prefixLength, prefixLength + 8)).toBe(bytes.toString("base64url"));
      expect(issuer.check(nonce, t, "a")).toBe("valid");
      expect(issuer.check(nonce, t - 1, "a")).toBe("invalid");
    }
    // Later than 48 bits hold: the largest time, not a wrapped one.
    expect(issuer.issue(2 ** 50, "a")).toBe(issuer.issue(2 ** 48 - 1, "a"));
  });

  it("rejects a nonce replayed from another client, from another secret, or from the future", () => {
    const nonce = issuer.issue(1000, "a");
    expect(issuer.check(nonce, 1000, "b")).toBe("invalid");
    expect(new NonceIssuer(new Uint8Array(32), 60_000).check(nonce, 1000, "a")).toBe("invalid");
    expect(issuer.check(nonce, 999, "a")).toBe("invalid");
    expect(issuer.check("", 1000, "a")).toBe("invalid");
    expect(issuer.check(undefined as never, 1000, "a")).toBe("invalid");
  });

  it("gives the same answers for nonces it minted, verified once, or has forgotten", () => {
    // Another issuer with the same secret (another engine, a restart): its nonces verify by MAC.
    const other = new NonceIssuer(secret, 60_000);
    const minted = issuer.issue(5000, "a");
    const foreign = other.issue(5000, "a");
    for (let round = 0; round < 2; round++) {
      for (const nonce of [minted, foreign]) {
        expect(issuer.check(nonce, 5000, "a")).toBe("valid");
        expect(issuer.check(nonce, 5000, "b")).toBe("invalid");
        expect(issuer.check(nonce, 4999, "a")).toBe("invalid");
        expect(issuer.check(nonce, 65_000, "a")).toBe("stale");
      }
    }
    // Far more nonces than it keeps, for other clients: the first ones are verified again.
    for (let i = 0; i < 5000; i++) issuer.issue(6000 + i, `c${i}`);
    expect(issuer.check(minted, 5000, "a")).toBe("valid");
    expect(issuer.check(foreign, 5000, "b")).toBe("invalid");
    expect(issuer.check(minted, 5000, undefined as never)).toBe("invalid");
  });

  it("ends the nonce with base64url(HMAC-SHA256(secret, the rest || the client)), 12 bytes", () => {
    for (const client of ["192.0.2.1", "2001:db8::7", "h\u00f6st-\u{1f600}"]) {
      const nonce = issuer.issue(987_654_321, client);
      const head = nonce.slice(0, -16);
      const mac = createHmac("sha256", secret)
        .update(head, "latin1")
        .update(client, "utf8")
        .digest()
        .subarray(0, 12)
        .toString("base64url");
      expect(nonce).toBe(head + mac);
      expect(issuer.check(nonce, 987_654_321, client)).toBe("valid");
    }
  });

  it("rejects any tampered nonce, even with a later timestamp", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 47 }),
        fc.nat(),
        fc.integer({ min: 0x21, max: 0x7e }),
        (now, pos, ch) => {
          const nonce = issuer.issue(now, "client");
          const i = pos % nonce.length;
          const tampered = nonce.slice(0, i) + String.fromCharCode(ch) + nonce.slice(i + 1);
          fc.pre(tampered !== nonce);
          expect(issuer.check(tampered, now + 1, "client")).toBe("invalid");
          expect(issuer.check(nonce, now + 1, "client")).toBe("valid");
        },
      ),
      { numRuns: 500 },
    );
  });
});
