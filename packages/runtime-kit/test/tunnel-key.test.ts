// The tunnel key (TURNPIKE_KEY): username and password in one opaque string.
import { describe, expect, it } from "vitest";
import { decodeTunnelKey, encodeTunnelKey } from "../src/tunnel-key.js";

describe("tunnel keys", () => {
  it("carry a username and password through encode and decode unchanged", () => {
    const c = { username: "1796026514:acme-pg;port=40007", password: "gXrOPZX0lcXw+B8X/4S=" };
    const key = encodeTunnelKey(c);
    expect(key).toMatch(/^tpk1\.[A-Za-z0-9_-]+$/);
    expect(decodeTunnelKey(key)).toEqual(c);
    expect(decodeTunnelKey(` ${key}\n`)).toEqual(c);
  });

  it("refuse anything else with a reason that never repeats the input", () => {
    const secretish = "hunter2-not-a-key";
    for (const bad of [
      secretish,
      "tpk1.",
      "tpk1.!!!",
      `tpk1.${Buffer.from("not json").toString("base64url")}`,
      `tpk1.${Buffer.from('{"u":"a"}').toString("base64url")}`,
      `tpk1.${"A".repeat(5000)}`,
    ]) {
      const r = decodeTunnelKey(bad);
      expect("error" in r, bad).toBe(true);
      expect(JSON.stringify(r)).not.toContain(secretish);
    }
  });
});
