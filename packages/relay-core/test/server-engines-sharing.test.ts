// Engines that serve one relay together (the relay's worker threads) share who owns each pinned
// port and their RESERVATION-TOKENs: a pinned port belongs to one principal whichever engine an
// Allocate reaches and whatever its protocol, the same principal takes it over from a stale
// allocation in another engine, and a reservation made in one engine is redeemed in another
// (RFC 8656 §7.2: the Allocate with the token comes from another 5-tuple), once, its quota count
// moving with it. The shared state here is a plain in-memory table with the semantics the
// interfaces document; the relay's own, in shared memory, is tested in relay-server.
import { describe, expect, it } from "vitest";
import { CombinedCredentials, SharedSecretCredentials } from "../src/auth/credentials.js";
import { mintPinnedCredentials } from "../src/auth/pinned-username.js";
import { mintRestCredentials } from "../src/auth/rest-credentials.js";
import { readBytes } from "../src/codec/attributes.js";
import { AttributeType, Method, TransportProtocol } from "../src/codec/constants.js";
import type { StunMessageBuilder } from "../src/codec/message-builder.js";
import type { AllocationId } from "../src/ids.js";
import { SeededRandom } from "../src/rng.js";
import { LocalAllocationQuota } from "../src/server/allocation-quota.js";
import type { PinnedPortClaim, PinnedPortOwners } from "../src/server/pinned-port-owners.js";
import type {
  ExchangedReservation,
  ReservationExchange,
} from "../src/server/reservation-exchange.js";
import { Harness, type OutputOf, Response, TestClient, UNIX_T0 } from "./harness.js";

const SECRET = "platform-token";
const PINNED = { min: 40000, max: 40009 };
const tokenKey = (t: Uint8Array) => Buffer.from(t).toString("hex");

/** One table of pinned-port owners for every engine (the semantics of PinnedPortOwners). */
class SharedOwners {
  readonly ports = new Map<
    number,
    { principal: string; holders: Map<4 | 6, { engine: number; allocation: AllocationId }> }
  >();

  view(engine: number): PinnedPortOwners {
    return {
      claim: (port, family, principal, allocation): PinnedPortClaim => {
        const owner = this.ports.get(port) ?? { principal, holders: new Map() };
        if (owner.principal !== principal) return "held-by-other";
        this.ports.set(port, owner);
        const before = owner.holders.get(family);
        owner.holders.set(family, { engine, allocation });
        return before === undefined || before.engine === engine ? "claimed" : before;
      },
      release: (port, family, allocation) => {
        const owner = this.ports.get(port);
        const holder = owner?.holders.get(family);
        if (holder?.engine !== engine || holder.allocation !== allocation) return;
        owner!.holders.delete(family);
        if (owner!.holders.size === 0) this.ports.delete(port);
      },
    };
  }
}

/** One exchange of reservations for every engine, over one shared quota (no clock skew). */
class SharedReservations {
  readonly entries = new Map<
    string,
    { engine: number; family: 4 | 6; port: number; expiresAt: number; principal: string }
  >();

  constructor(readonly quota: LocalAllocationQuota) {}

  view(engine: number): ReservationExchange {
    const find = (token: Uint8Array, principal: string, now: number) => {
      const e = this.entries.get(tokenKey(token));
      if (e === undefined || e.engine === engine || e.expiresAt <= now) return undefined;
      const inherits = e.principal === principal;
      return { e, r: { engine: e.engine, family: e.family, port: e.port, inherits } };
    };
    return {
      publish: ({ token, family, port, expiresAt, principal }) => {
        this.entries.set(tokenKey(token), { engine, family, port, expiresAt, principal });
        return true;
      },
      withdraw: (token) => this.entries.delete(tokenKey(token)),
      peek: (token, principal, now): ExchangedReservation | undefined =>
        find(token, principal, now)?.r,
      take: (token, principal, now): ExchangedReservation | undefined => {
        const found = find(token, principal, now);
        if (found === undefined) return undefined;
        this.entries.delete(tokenKey(token));
        // One quota for all engines: an inherited count stays, another is given back.
        if (!found.r.inherits) this.quota.release(found.e.principal);
        return found.r;
      },
    };
  }
}

/** Two engines of one relay: each its own slice of the dynamic range, everything else shared. */
function twoEngines(maxAllocationsPerUser = 10) {
  const owners = new SharedOwners();
  const quota = new LocalAllocationQuota(100, maxAllocationsPerUser);
  const reservations = new SharedReservations(quota);
  const engines = [0, 1].map(
    (engine) =>
      new Harness({
        credentials: new CombinedCredentials([new SharedSecretCredentials([SECRET])]),
        random: new SeededRandom(`engine-${engine}`),
        minPort: 50000 + engine * 100,
        maxPort: 50099 + engine * 100,
        pinnedPorts: PINNED,
        maxUnauthenticatedRate: 0,
        allocationQuota: quota,
        pinnedPortOwners: owners.view(engine),
        reservationExchange: reservations.view(engine),
      }),
  );
  return { engines: engines as [Harness, Harness], owners, reservations };
}

let nextPort = 1;

/** A UDP client (or, with `connection`, TCP) with credentials pinned to `pin`, or plain REST ones. */
function client(h: Harness, user: string, pin?: number, connection?: number): TestClient {
  const c =
    pin === undefined
      ? mintRestCredentials(SECRET, UNIX_T0, 3600, user)
      : mintPinnedCredentials(SECRET, UNIX_T0, 3600, user, pin);
  return new TestClient(h, {
    port: nextPort++,
    ...(connection !== undefined ? { connection } : {}),
    username: c.username,
    password: c.password,
  });
}

const tcp = (b: StunMessageBuilder) => {
  b.requestedTransport(TransportProtocol.Tcp);
};

const udp = (b: StunMessageBuilder) => {
  b.requestedTransport(TransportProtocol.Udp);
};

/** An Allocate (UDP, or TCP for RFC 6062) up to its first outputs. */
function ask(c: TestClient, transport = udp) {
  c.learn(c.ask(c.build(Method.Allocate, transport)));
  c.send(c.buildSigned(Method.Allocate, transport));
  return c.h.drain();
}

/**
 * Redeem `token` from a new 5-tuple on `h` when another engine made it: the Allocate queues
 * "reservation-taken" for the maker before its "open-relay". Returns the success, and what the
 * maker is to be told.
 */
function redeemElsewhere(h: Harness, user: string, token: Uint8Array) {
  const c = client(h, user);
  const fill = (b: StunMessageBuilder) => {
    udp(b);
    b.bytes(AttributeType.ReservationToken, token);
  };
  c.learn(c.ask(c.build(Method.Allocate, fill)));
  c.send(c.buildSigned(Method.Allocate, fill));
  const [taken, open] = h.expectOutputs([
    { type: "reservation-taken" },
    { type: "open-relay" },
  ]) as [OutputOf<"reservation-taken">, OutputOf<"open-relay">];
  h.server.handleRelayBound(open.relay, h.now);
  const [sent] = h.expectOutputs([
    { type: "transmit", errorCode: 0 },
    { type: "allocation-created" },
  ]) as [OutputOf<"transmit">];
  return { taken, r: c.verified(new Response(sent.data)) };
}

/** Alice reserves in engine 0 (EVEN-PORT R=1); `redeemer` redeems the token in engine 1. */
function reservedInOneRedeemedInTheOther(maxAllocationsPerUser: number, redeemer: string) {
  const { engines } = twoEngines(maxAllocationsPerUser);
  const [a, b] = engines;
  const made = client(a, "alice").allocate(reserveNext);
  const token = readBytes(made.msg, AttributeType.ReservationToken)!.slice();
  redeemElsewhere(b, redeemer, token);
  return { a, b, token };
}

const onIpv6 = {
  extra: (b: StunMessageBuilder) => b.addressFamily(AttributeType.RequestedAddressFamily, 6),
};
const reserveNext = { extra: (b: StunMessageBuilder) => b.evenPort(true) };
const redeem = (token: Uint8Array) => ({
  extra: (b: StunMessageBuilder) => b.bytes(AttributeType.ReservationToken, token),
});

describe("pinned ports across engines", () => {
  it("refuses another principal's pin held in another engine, over TCP and on the other family", () => {
    const { engines } = twoEngines();
    const [a, b] = engines;
    expect(client(a, "alice", 40003).allocate().code).toBe(0);
    const [refused] = ask(client(b, "bob", 40003, 1), tcp) as [OutputOf<"transmit">];
    expect(new Response(refused.data).code).toBe(403);
    expect(client(b, "bob", 40003).allocate(onIpv6).code).toBe(403);
    expect(client(a, "bob", 40003).allocate(onIpv6).code).toBe(403);
    expect(b.server.allocationCount).toBe(0);
  });

  it("takes the same principal's pin over from another engine: that engine ends the stale allocation it names", () => {
    const { engines } = twoEngines();
    const [a, b] = engines;
    const stale = client(a, "alice", 40004);
    expect(stale.allocate().code).toBe(0);
    const [held] = a.server.allocations(a.now);
    const outputs = ask(client(b, "alice", 40004, 1), tcp);
    expect(outputs.map((o) => o.type)).toEqual(["release-pinned-port", "open-relay"]);
    const release = outputs[0] as OutputOf<"release-pinned-port">;
    expect(release).toMatchObject({ engine: 0, allocation: held!.id, family: 4, port: 40004 });
    // The runtime delivers it to engine 0, which ends the allocation named.
    expect(a.server.releasePinnedPort(release, a.now)).toBe("released");
    a.expectOutputs([{ type: "close-relay" }, { type: "allocation-ended", reason: "taken-over" }]);
    expect(stale.refresh(600).code).toBe(437);
    // Another principal still finds the port held (by the TCP allocation binding in engine 1).
    expect(client(a, "bob", 40004).allocate().code).toBe(403);
  });

  it("leaves a newer claim alone when another engine's release arrives late", () => {
    const { engines } = twoEngines();
    const [a, b] = engines;
    expect(client(a, "alice", 40005).allocate().code).toBe(0);
    // Engine 1 takes it over (its release for engine 0 still on its way) ...
    const [late, open] = ask(client(b, "alice", 40005)) as [
      OutputOf<"release-pinned-port">,
      OutputOf<"open-relay">,
    ];
    b.server.handleRelayBound(open.relay, b.now);
    b.drain();
    // ... and engine 0 takes it back first: its own stale allocation ends here, and engine 1's
    // allocation is named for release.
    const back = client(a, "alice", 40005);
    const outputs = ask(back);
    expect(outputs.map((o) => o.type)).toEqual([
      "release-pinned-port",
      "close-relay",
      "allocation-ended",
      "open-relay",
    ]);
    a.server.handleRelayBound((outputs[3] as OutputOf<"open-relay">).relay, a.now);
    a.drain();
    // The late release names an allocation that no longer holds the port: nothing ends.
    expect(a.server.releasePinnedPort(late, a.now)).toBe("none");
    a.expectNoOutputs();
    expect(back.refresh(600).code).toBe(0);
    const toB = outputs[0] as OutputOf<"release-pinned-port">;
    expect(b.server.releasePinnedPort(toB, b.now)).toBe("released");
  });

  it("keeps a principal's pins on both families of one port in different engines", () => {
    const { engines } = twoEngines();
    const [a, b] = engines;
    expect(client(a, "alice", 40006).allocate().code).toBe(0);
    expect(client(b, "alice", 40006).allocate(onIpv6).code).toBe(0);
    expect(a.server.allocationCount + b.server.allocationCount).toBe(2);
  });
});

describe("RESERVATION-TOKENs across engines (RFC 8656 §7.2)", () => {
  it("redeems a reservation another engine made, exactly once, with the reserved port", () => {
    const { engines, reservations } = twoEngines();
    const [a, b] = engines;
    const made = client(a, "alice").allocate(reserveNext);
    expect(made.code).toBe(0);
    const token = readBytes(made.msg, AttributeType.ReservationToken)!.slice();
    const even = made.xorAddress(AttributeType.XorRelayedAddress)!.port;
    const { taken, r: redeemed } = redeemElsewhere(b, "alice", token);
    expect(redeemed.xorAddress(AttributeType.XorRelayedAddress)?.port).toBe(even + 1);
    // Engine 1 tells engine 0 (through the runtime), which stops holding the reservation.
    expect(taken).toEqual({ type: "reservation-taken", engine: 0, token });
    expect(a.server.stats.reservationsActive).toBe(1);
    a.server.handleReservationTaken(token);
    expect(a.server.stats.reservationsActive).toBe(0);
    // Single use, in the maker's engine too.
    expect(client(a, "alice").allocate(redeem(token)).code).toBe(508);
    expect(client(b, "carol").allocate(redeem(token)).code).toBe(508);
    expect(reservations.entries.size).toBe(0);
  });

  it("moves the maker's count with a reservation another engine took, so the maker's expiry gives nothing back", () => {
    const { a, b } = reservedInOneRedeemedInTheOther(2, "alice");
    // Two allocations of alice's now; the reservation's lifetime passes in engine 0.
    a.tick(30);
    expect(a.server.stats.reservationsActive).toBe(0);
    expect(client(a, "alice").allocate().code).toBe(486);
    expect(client(b, "alice").allocate().code).toBe(486);
  });

  it("gives the maker's count back when another principal redeems it in another engine", () => {
    const { a, b } = reservedInOneRedeemedInTheOther(2, "bob");
    expect(client(a, "alice").allocate().code).toBe(0);
    expect(client(b, "alice").allocate().code).toBe(486);
  });

  it("refuses the maker's own redemption with 508 once another engine took the token", () => {
    const { a, token } = reservedInOneRedeemedInTheOther(10, "bob");
    expect(client(a, "alice").allocate(redeem(token)).code).toBe(508);
    expect(a.server.stats.reservationsActive).toBe(0);
  });
});
