// The amplification guard: unauthenticated answers are capped per source IP (rate-limit.ts).
import { describe, expect, it } from "vitest";
import { Method } from "../src/codec/constants.js";
import { SourceRateLimiter } from "../src/server/rate-limit.js";
import { Harness, TestClient } from "./harness.js";

describe("unauthenticated response rate per source IP", () => {
  it("stops answering a source's Bindings past its burst, and counts the drops", () => {
    const h = new Harness({ maxUnauthenticatedRate: 10 });
    const c = new TestClient(h, { address: "192.0.2.10", port: 40000 });
    let answered = 0;
    for (let i = 0; i < 50; i++) {
      c.send(c.build(Method.Binding));
      answered += h.drain().filter((x) => x.type === "transmit").length;
    }
    expect(answered).toBe(20); // the burst: twice the per-second rate
    expect(h.server.stats.drops["rate-limited"]).toBe(30);
  });

  it("refills with time and leaves other sources alone", () => {
    const h = new Harness({ maxUnauthenticatedRate: 10 });
    const a = new TestClient(h, { address: "192.0.2.10", port: 40000 });
    const b = new TestClient(h, { address: "192.0.2.20", port: 40000 });
    for (let i = 0; i < 20; i++) a.send(a.build(Method.Binding));
    h.drain();
    a.send(a.build(Method.Binding));
    expect(h.drain()).toEqual([]);
    expect(b.ask(b.build(Method.Binding)).code).toBe(0);
    h.advance(0.1); // one token back at 10/s
    expect(a.ask(a.build(Method.Binding)).code).toBe(0);
  });

  it("never limits authenticated requests, which credentials and quotas govern", () => {
    const h = new Harness({ maxUnauthenticatedRate: 1 });
    const c = new TestClient(h, { address: "192.0.2.10", port: 40000 });
    expect(c.allocate().code).toBe(0); // uses the 401 challenge from the budget
    for (let i = 0; i < 20; i++) expect(c.refresh(600).code).toBe(0);
    expect(h.server.stats.drops["rate-limited"]).toBe(0);
  });

  it("forgets the oldest source beyond its bound, so spoofed sprays cannot grow memory", () => {
    const limiter = new SourceRateLimiter(1, 1, 100);
    for (let i = 0; i < 10_000; i++) limiter.allow(`198.51.${i >> 8}.${i & 255}`, 0);
    expect(limiter.trackedSources).toBe(100);
  });

  it("is off when the rate is 0", () => {
    const limiter = new SourceRateLimiter(0);
    for (let i = 0; i < 1000; i++) expect(limiter.allow("192.0.2.1", 0)).toBe(true);
    expect(limiter.trackedSources).toBe(0);
  });
});
