// Pinned TURN REST usernames ("<expiry>:<user>;port=<P>"): the format, the key of their own
// (derived from the token), and that the HMAC covers the pin.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SharedSecretCredentials } from "../src/auth/credentials.js";
import {
  mintPinnedCredentials,
  parsePinnedUser,
  pinnedCredentialSecret,
  pinnedUser,
  pinOfUsername,
  userOfUsername,
} from "../src/auth/pinned-username.js";
import { parseRestUsername, restPassword } from "../src/auth/rest-credentials.js";

describe("pinned REST usernames", () => {
  it("carry the port in the <user> part of a draft-uberti REST username", () => {
    const c = mintPinnedCredentials("north", 1_700_000_000, 3600, "acme-pg", 40007);
    expect(c.username).toBe("1700003600:acme-pg;port=40007");
    expect(c.password).toBe(restPassword(pinnedCredentialSecret("north"), c.username));
    expect(c.ttl).toBe(3600);
    // An ordinary REST parser (coturn reads the same) sees expiry and user as usual.
    expect(parseRestUsername(c.username)).toEqual({
      expiry: 1_700_003_600,
      user: "acme-pg;port=40007",
    });
    expect(pinOfUsername(c.username)).toEqual({ user: "acme-pg", port: 40007 });
    expect(userOfUsername(c.username)).toBe("acme-pg");
  });

  it("are signed with hex(HMAC-SHA256(token, label)), never with the token itself", () => {
    // A fixed vector: the derivation is part of the protocol between platform and relays.
    expect(pinnedCredentialSecret("north")).toBe(
      "2e297f464167360bcabb3d9f1a2d1bab7bdd276c42638a6118b7402b1332d172",
    );
    const c = mintPinnedCredentials("north", 1_700_000_000, 3600, "acme-pg", 40007);
    expect(c.password).not.toBe(restPassword("north", c.username));
    expect(pinnedCredentialSecret("south")).not.toBe(pinnedCredentialSecret("north"));
  });

  it("are not pinned without the marker, and name their user plainly", () => {
    expect(pinOfUsername("1700003600:acme-pg")).toBeUndefined();
    expect(pinOfUsername("1700003600")).toBeUndefined();
    expect(userOfUsername("1700003600:acme-pg")).toBe("acme-pg");
    expect(userOfUsername("alice")).toBe("alice");
    // Only a REST username pins: a static user name that happens to contain the marker does not.
    expect(pinOfUsername("alice;port=40007")).toBeUndefined();
  });

  it("read a marker with no valid port as a pin to no port (the relay refuses it)", () => {
    for (const bad of ["0", "65536", "040007", "", "4x", "-1", "99999"]) {
      expect(parsePinnedUser(`acme;port=${bad}`), bad).toEqual({ user: "acme", port: undefined });
    }
    expect(parsePinnedUser("acme;port=65535")).toEqual({ user: "acme", port: 65535 });
    expect(parsePinnedUser("acme;port=1")).toEqual({ user: "acme", port: 1 });
  });

  it("round-trip every user without the marker and every port", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 40 }).filter((u) => !u.includes(";port=")),
        fc.integer({ min: 1, max: 65535 }),
        (user, port) => {
          expect(parsePinnedUser(pinnedUser(user, port))).toEqual({ user, port });
        },
      ),
    );
  });

  it("fail verification when the port, the expiry or the user is changed (HMAC over the whole username)", () => {
    const store = new SharedSecretCredentials(["north"]);
    const c = mintPinnedCredentials("north", 1000, 600, "acme-pg", 40007);
    const good = store.lookup(c.username, "realm", 1000);
    expect(good.ok).toBe(true);
    for (const tampered of [
      c.username.replace("40007", "40008"),
      c.username.replace("1600", "1601"),
      c.username.replace("acme-pg", "acme-ph"),
    ]) {
      const r = store.lookup(tampered, "realm", 1000);
      // The store derives a key from the username it is given; a client holding only the
      // original password computes another key, so MESSAGE-INTEGRITY fails (401).
      expect(r.ok && r.key).not.toEqual(good.ok && good.key);
    }
  });
});
