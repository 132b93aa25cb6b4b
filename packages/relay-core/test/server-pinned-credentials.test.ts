// Pinned credentials have a key of their own: a generic TURN REST minting service that holds the
// token (a WebRTC app minting for user names its users choose) cannot produce them, old-scheme
// ones are refused unless a transition window is open, and the refusal says nothing more than
// a wrong password would.
import { describe, expect, it } from "vitest";
import { SharedSecretCredentials, type SharedSecretOptions } from "../src/auth/credentials.js";
import { mintPinnedCredentials } from "../src/auth/pinned-username.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { readErrorCode } from "../src/codec/attributes.js";
import { AttributeType } from "../src/codec/constants.js";
import { Harness, type Response, TestClient, UNIX_T0 } from "./harness.js";

const TOKEN = "platform-token";

function harness(options: SharedSecretOptions = {}, secrets = [TOKEN]): Harness {
  return new Harness({
    credentials: new SharedSecretCredentials(secrets, options),
    pinnedPorts: { min: 40000, max: 40009 },
    minPort: 50000,
    maxPort: 50009,
  });
}

let nextPort = 1;

function client(h: Harness, c: { username: string; password: string }): TestClient {
  return new TestClient(h, { port: nextPort++, username: c.username, password: c.password });
}

/** What a 401 carries, without the parts that differ per challenge (nonce, transaction). */
function shape(r: Response) {
  return {
    code: r.code,
    attributes: r.msg.attributes.map((a) =>
      a.type === AttributeType.Nonce || a.type === AttributeType.Fingerprint
        ? a.type
        : [a.type, a.length],
    ),
    realm: r.string(AttributeType.Realm),
    reason: readErrorCode(r.msg)?.reason,
  };
}

describe("pinned credentials", () => {
  it("minted by mintPinnedCredentials get their port", () => {
    const h = harness();
    const r = client(h, mintPinnedCredentials(TOKEN, UNIX_T0, 3600, "acme-pg", 40007)).allocate();
    expect(r.code).toBe(0);
    expect(r.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(40007);
  });

  it("signed with the token by a generic REST minting service get a 401 no different from a wrong password's", () => {
    const h = harness();
    // What a WebRTC app holding the token mints for a user who calls themselves "x;port=40007".
    const generic = mintRestCredentials(TOKEN, UNIX_T0, 3600, "x;port=40007");
    const forged = client(h, generic).allocate();
    expect(forged.code).toBe(401);
    expect(h.server.stats.authFailures["legacy-pinned"]).toBe(1);
    const wrong = client(h, {
      username: generic.username,
      password: "not-the-password",
    }).allocate();
    expect(wrong.code).toBe(401);
    expect(h.server.stats.authFailures["bad-integrity"]).toBe(1);
    expect(shape(forged)).toEqual(shape(wrong));
    expect(h.server.allocationCount).toBe(0);
    // The same app's ordinary credentials still work.
    expect(client(h, mintRestCredentials(TOKEN, UNIX_T0, 3600, "x")).allocate().code).toBe(0);
  });

  it("of the old scheme are accepted inside a transition window, counted, and refused once it closes", () => {
    const oldScheme = mintRestCredentials(TOKEN, UNIX_T0, 7200, "acme-pg;port=40007");
    const h = harness({ legacyPinnedUntil: UNIX_T0 + 600 });
    const c = client(h, oldScheme);
    const r = c.allocate();
    expect(r.code).toBe(0);
    expect(r.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(40007);
    expect(h.server.stats.legacyPinnedAccepted).toBe(1);
    h.advance(599);
    expect(c.refresh(600).code).toBe(0);
    expect(h.server.stats.legacyPinnedAccepted).toBe(2);
    h.advance(1);
    expect(c.refresh(600).code).toBe(401);
    expect(h.server.stats.authFailures["legacy-pinned"]).toBe(1);
    // New-scheme credentials of the same user take the allocation over from there.
    const renewed = mintPinnedCredentials(TOKEN, UNIX_T0 + 600, 3600, "acme-pg", 40007);
    c.username = renewed.username;
    c.password = renewed.password;
    expect(c.refresh(600).code).toBe(0);
  });

  it("verify with the pinned secret of every token during rotation", () => {
    const h = harness({}, ["new-token", TOKEN]);
    const old = mintPinnedCredentials(TOKEN, UNIX_T0, 3600, "acme-pg", 40001);
    const fresh = mintPinnedCredentials("new-token", UNIX_T0, 3600, "globex", 40002);
    expect(client(h, old).allocate().code).toBe(0);
    expect(client(h, fresh).allocate().code).toBe(0);
  });
});
