// The response cache (server/responses.ts): a retransmitted request gets the very same bytes
// for about 40 s (RFC 8489 §6.3.1), and after that the cache holds nothing for it.
import { describe, expect, it } from "vitest";
import { connectionId, listenerId, NO_CONNECTION } from "../src/ids.js";
import { ipv4ToUint32 } from "../src/policy/ip.js";
import type { ClientEndpoint } from "../src/server/allocation.js";
import { ResponseCache } from "../src/server/responses.js";

const bytes = (n: number) => Uint8Array.of(n);

describe("ResponseCache", () => {
  it("answers a retransmission with the remembered bytes until the lifetime is over", () => {
    const cache = new ResponseCache(40);
    cache.remember("a", bytes(1), 0, 1000);
    expect(cache.get("a", 40_999)?.data).toEqual(bytes(1));
    expect(cache.get("a", 41_000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("lets expired entries go when later ones come in, not only when the cap is reached", () => {
    const cache = new ResponseCache(40);
    for (let i = 0; i < 100; i++) cache.remember(`old${i}`, bytes(i), 0, i);
    cache.remember("new", bytes(0), 401, 40_050);
    // old0..old50 expired at 40,000..40,050; old51..old99 are still fresh.
    expect(cache.size).toBe(50);
    expect(cache.get("old50", 40_050)).toBeUndefined();
    expect(cache.get("old51", 40_050)?.data).toEqual(bytes(51));
    expect(cache.get("new", 40_050)?.errorCode).toBe(401);
  });

  it("holds at most 8,192 entries, dropping the oldest", () => {
    const cache = new ResponseCache(40);
    for (let i = 0; i < 8200; i++) cache.remember(`k${i}`, bytes(i & 0xff), 0, 0);
    expect(cache.size).toBe(8192);
    expect(cache.get("k7", 0)).toBeUndefined();
    expect(cache.get("k8", 0)).toBeDefined();
  });

  it("keys a request by its whole 5-tuple and transaction id, and nothing else", () => {
    const endpoint = (
      transport: ClientEndpoint["transport"],
      address: string,
      port: number,
      listener = 0,
      connection = transport === "udp" ? NO_CONNECTION : connectionId(7),
    ): ClientEndpoint => {
      const family = address.includes(":") ? 6 : 4;
      return {
        transport,
        listener: listenerId(listener),
        connection,
        family,
        address,
        port,
        ip4: family === 4 ? ipv4ToUint32(address) : -1,
        ip6: undefined,
      };
    };
    const tid = (last: number, first = 0) =>
      Uint8Array.of(first, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, last);
    const endpoints = [
      endpoint("udp", "192.0.2.1", 5000),
      endpoint("udp", "192.0.2.2", 5000),
      endpoint("udp", "192.0.2.1", 5001),
      endpoint("udp", "192.0.2.1", 5000, 1),
      endpoint("udp", "192.0.2.1", 5000, 0x10000),
      endpoint("udp", "2001:db8::1", 5000),
      endpoint("udp", "2001:db8::2", 5000),
      endpoint("tcp", "192.0.2.1", 5000),
      endpoint("tls", "192.0.2.1", 5000),
      endpoint("tcp", "192.0.2.1", 5000, 0, connectionId(8)),
    ];
    const keys = new Set<string>();
    for (const e of endpoints) {
      for (const id of [tid(0), tid(1), tid(0, 0x80)]) {
        const key = ResponseCache.key(e, id);
        expect(ResponseCache.key({ ...e }, Uint8Array.from(id))).toBe(key);
        keys.add(key);
      }
    }
    expect(keys.size).toBe(endpoints.length * 3);
  });
});
