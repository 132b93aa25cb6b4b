// The tunnel supervisor in-process with an injectable resolver: as the answer for the relay name changes,
// allocations are added and removed (one per resolved relay IP per service). Real relays on
// 127.0.0.1 and 127.0.0.2.
import { SeededRandom } from "@turnpike/relay-core";
import { createLogger } from "@turnpike/runtime-kit";
import { sleep } from "@turnpike/test-support/process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCredentialSource } from "../src/credentials.js";
import { expandAllowList } from "../src/peers.js";
import { StaticResolver } from "../src/resolver.js";
import { type ListEntry, TunnelSupervisor } from "../src/supervisor.js";
import { parseTurnUri, type TurnUri } from "../src/uri.js";
import { echoUdp, parseAddress, udpPeer, useTunnelFixture } from "./harness.js";

const TOKEN = "supervisor-dns-secret";

async function until(
  supervisor: TunnelSupervisor,
  pred: (rows: ListEntry[]) => boolean,
  what: string,
): Promise<ListEntry[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const rows = supervisor.list();
    if (pred(rows)) return rows;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(rows)}`);
    await sleep(50);
  }
}

describe("tunnel supervisor follows the relay name's DNS answer", () => {
  const f = useTunnelFixture({
    token: TOKEN,
    relayIps: ["127.0.0.1", "127.0.0.2"],
    echo: ["udp"],
    tunnel: false,
  });
  let supervisor: TunnelSupervisor;
  const resolver = new StaticResolver([["relay.test", ["127.0.0.1"]]]);

  beforeAll(async () => {
    supervisor = new TunnelSupervisor({
      relays: [parseTurnUri(`turn:relay.test:${f.relayPort}`) as TurnUri],
      credentials: createCredentialSource({
        kind: "token",
        token: TOKEN,
        name: "supervisor-test",
        ttl: 3600,
      }),
      resolver,
      logger: createLogger({ level: "error" }),
      random: new SeededRandom(7),
      dnsInterval: 0.2,
      keepalive: 1,
      backoffBase: 0.1,
      backoffMax: 1,
      lifetime: 600,
      software: "supervisor-test",
      jitter: () => 0.5,
    });
    const allow = expandAllowList(["127.0.0.1"], 64);
    if ("error" in allow) throw new Error(allow.error);
    supervisor.addService({
      name: "echo",
      protocol: "udp",
      target: { host: "127.0.0.1", port: f.udp.port },
      allowPeers: allow,
      windows: [],
    });
    await supervisor.start();
  });

  afterAll(async () => {
    await supervisor?.stop();
  });

  it("adds an allocation when an address appears and removes it when the address goes", async () => {
    let rows = await until(
      supervisor,
      (r) => r.length === 1 && r[0]!.state === "ready",
      "one ready tunnel",
    );
    expect(parseAddress(rows[0]!.relayedAddress!).ip).toBe("127.0.0.1");

    resolver.set("relay.test", ["127.0.0.1", "127.0.0.2"]);
    rows = await until(
      supervisor,
      (r) => r.length === 2 && r.every((x) => x.state === "ready"),
      "two ready tunnels",
    );
    const ips = rows.map((r) => parseAddress(r.relayedAddress!).ip).sort();
    expect(ips).toEqual(["127.0.0.1", "127.0.0.2"]);
    const platform = await udpPeer("127.0.0.1");
    for (const r of rows)
      expect(await echoUdp(platform, parseAddress(r.relayedAddress!), 50)).toBe(50);

    resolver.set("relay.test", ["127.0.0.2"]);
    rows = await until(
      supervisor,
      (r) => r.length === 1 && r[0]!.relay.includes("127.0.0.2"),
      "only the 127.0.0.2 tunnel",
    );
    expect(rows[0]!.state).toBe("ready");
    expect(await echoUdp(platform, parseAddress(rows[0]!.relayedAddress!), 50)).toBe(50);
    platform.close();
  });
});

describe("tunnel supervisor stopped while starting", () => {
  it("leaves no DNS or window timers behind when stop() runs during the first resolution", async () => {
    let calls = 0;
    let answer: (ips: string[]) => void = () => {};
    const supervisor = new TunnelSupervisor({
      relays: [parseTurnUri("turn:relay.test:3478") as TurnUri],
      credentials: createCredentialSource({ kind: "token", token: "t", name: "n", ttl: 3600 }),
      resolver: {
        resolve: () => {
          calls++;
          return calls === 1
            ? new Promise<string[]>((r) => {
                answer = r;
              })
            : Promise.resolve([]);
        },
      },
      logger: createLogger({ level: "error" }),
      random: new SeededRandom(7),
      dnsInterval: 0.1,
      keepalive: 1,
      backoffBase: 0.1,
      backoffMax: 1,
      lifetime: 600,
      software: "test",
    });
    const started = supervisor.start();
    await supervisor.stop();
    answer([]);
    await started;
    await sleep(500); // five DNS intervals
    expect(calls).toBe(1);
  });
});
