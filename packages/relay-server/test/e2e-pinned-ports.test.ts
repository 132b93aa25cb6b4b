// Pinned relay ports, the discovery API and revocation through a real turnpike-relay process:
// credentials minted by the real `turnpike-relay credentials --port`, a standard TURN client
// (coturn's turnutils_uclient) and a TCP (RFC 6062) allocation get the pinned port,
// `turnpike-relay allocations` finds it, SIGHUP with a --revoke-file withdraws it. A pinned port
// is one principal's whatever the protocol and whichever worker an Allocate reaches.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mintPinnedCredentials, readXorAddress } from "@turnpike/relay-core";
import { connectionRefused, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import {
  AttributeType,
  Method,
  TransportProtocol,
  TurnClientLite,
} from "@turnpike/test-support/turn-client-lite";
import { startTurnpike, TURNPIKE_BIN, type TurnpikeHandle } from "@turnpike/test-support/turnpike";
import { runUclient, startPeer } from "@turnpike/test-support/turnutils";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const TOKEN = "e2e-pinned-token";
const ADMIN = "e2e-admin-token";

/** The real CLI, as a platform would run it. */
function cli(
  args: string[],
  env: Record<string, string>,
): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [TURNPIKE_BIN, ...args], {
    env: { PATH: process.env.PATH, ...env },
    encoding: "utf8",
    timeout: 20_000,
  });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function mint(user: string, port: number, ttl = 3600): { username: string; password: string } {
  const r = cli(["credentials", "--user", user, "--port", String(port), "--ttl", String(ttl)], {
    TURNPIKE_TOKEN: TOKEN,
  });
  expect(r.status, r.err).toBe(0);
  return JSON.parse(r.out);
}

async function tcpAllocate(
  relayPort: number,
  creds: { username: string; password: string },
  localAddress?: string,
) {
  const c = await TurnClientLite.open({
    port: relayPort,
    transport: "tcp",
    localAddress,
    ...creds,
  });
  const r = await c.request(Method.Allocate, (b) => {
    b.requestedTransport(TransportProtocol.Tcp);
  });
  return { client: c, r, relayed: readXorAddress(r.message, AttributeType.XorRelayedAddress) };
}

describe.skipIf(skipUnlessTools("turnutils_uclient", "turnutils_peer"))(
  "pinned relay ports, discovery and revocation through turnpike-relay",
  () => {
    let range: PortRange;
    let relay: TurnpikeHandle | undefined;
    let dir: string;
    let revokeFile: string;
    let pinned: { min: number; max: number };
    const clients: TurnClientLite[] = [];

    beforeAll(async () => {
      requireTools("turnutils_uclient", "turnutils_peer");
      range = reservePortRange(40);
      // The lower half is the dynamic range, the upper half the pinned one.
      pinned = { min: range.min + 20, max: range.max };
      dir = mkdtempSync(join(tmpdir(), "turnpike-pinned-"));
      revokeFile = join(dir, "revoked.txt");
      writeFileSync(revokeFile, "# nobody yet\n");
      relay = await startTurnpike({
        minPort: range.min,
        maxPort: range.min + 19,
        token: TOKEN,
        env: { TURNPIKE_ADMIN_TOKEN: ADMIN },
        legacyChannelNumbers: true, // uclient binds RFC 5766 channel numbers
        logLevel: "info",
        extraArgs: ["--pinned-ports", `${pinned.min}-${pinned.max}`, "--revoke-file", revokeFile],
      });
    });

    afterAll(async () => {
      for (const c of clients) c.close();
      await relay?.stop("SIGINT", 5000);
      range?.release();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it("gives a standard TURN client (turnutils_uclient) the pinned port with no client change", async () => {
      const port = pinned.min + 2; // even: uclient asks for EVEN-PORT
      const creds = mint("uclient", port);
      const peer = await startPeer();
      try {
        const r = await runUclient({
          port: relay!.port,
          user: creds.username,
          password: creds.password,
          peer: { port: peer.port },
          messages: 10,
          extraArgs: ["-v"],
        });
        expect(r.errors, r.log).toEqual([]);
        expect(r.log).toContain(`Received relay addr: 127.0.0.1:${port}`);
        expect(r.recvMsgs).toBe(10);
      } finally {
        await peer.stop();
      }
    });

    it("gives a TCP allocation its pinned port, refuses another user's pin, and hands the port to the same user's newer allocation", async () => {
      const port = pinned.min + 7;
      const first = await tcpAllocate(relay!.port, mint("acme-pg", port));
      clients.push(first.client);
      expect(first.r.code, first.r.reason).toBe(0);
      expect(first.relayed).toEqual({ family: 4, address: "127.0.0.1", port });

      const intruder = await tcpAllocate(relay!.port, mint("globex", port));
      clients.push(intruder.client);
      expect(intruder.r.code).toBe(403);
      expect(intruder.r.reason).toBe(`Forbidden: pinned port ${port} is held by another user`);

      // Fresh credentials for the same user, from a new connection (a restarted tunnel).
      const second = await tcpAllocate(relay!.port, mint("acme-pg", port, 7200));
      clients.push(second.client);
      expect(second.r.code, second.r.reason).toBe(0);
      expect(second.relayed?.port).toBe(port);
      expect((await first.client.refresh(600)).code).toBe(437);
      expect(relay!.stderr).toContain(
        "pinned port taken over by a newer allocation of the same user",
      );
    });

    it("refuses a username whose pinned port was changed (401) and a pin outside the range (403)", async () => {
      const creds = mint("acme-pg", pinned.min + 5);
      const tampered = await tcpAllocate(relay!.port, {
        username: creds.username.replace(`port=${pinned.min + 5}`, `port=${pinned.min + 6}`),
        password: creds.password,
      });
      clients.push(tampered.client);
      expect(tampered.r.code).toBe(401);
      const outside = await tcpAllocate(relay!.port, mint("acme-pg", range.min + 3));
      clients.push(outside.client);
      expect(outside.r.code).toBe(403);
      expect(outside.r.reason).toContain(
        `outside this relay's pinned range ${pinned.min}-${pinned.max}`,
      );
    });

    it("shows the pinned endpoint in `turnpike-relay allocations`, only with the admin token", async () => {
      const port = pinned.min + 9;
      const live = await tcpAllocate(relay!.port, mint("initech", port));
      clients.push(live.client);
      expect(live.r.code).toBe(0);
      const url = `http://127.0.0.1:${relay!.healthPort}`;
      const table = cli(["allocations", "--url", url, "--user", "initech"], {
        TURNPIKE_ADMIN_TOKEN: ADMIN,
      });
      expect(table.status, table.err).toBe(0);
      const [header, row, more] = table.out.trimEnd().split("\n");
      expect(header).toMatch(
        /^ID +USER +PIN +TRANSPORT +RELAYED ADDRESS +CLIENT +PEERS +CREATED +EXPIRES$/,
      );
      expect(row).toMatch(
        new RegExp(
          `^\\d+-\\d+ +initech +${port} +tcp +127\\.0\\.0\\.1:${port} +tcp:127\\.0\\.0\\.1:\\d+ +- `,
        ),
      );
      expect(more).toBeUndefined();
      const json = cli(["allocations", "--url", url, "--json"], { TURNPIKE_ADMIN_TOKEN: ADMIN });
      const all = JSON.parse(json.out).allocations as { user: string }[];
      expect(all.map((a) => a.user).sort()).toEqual(["acme-pg", "initech"]);
      // The REST usernames and passwords of those allocations appear nowhere.
      expect(json.out).not.toContain(";port=");
      const wrong = cli(["allocations", "--url", url], { TURNPIKE_ADMIN_TOKEN: "guess" });
      expect(wrong.status).toBe(1);
      expect(wrong.err).toContain("HTTP 401");
    });

    it("ends a revoked user's allocation on SIGHUP and refuses its credentials from then on", async () => {
      const port = pinned.min + 11;
      const creds = mint("umbrella", port);
      const live = await tcpAllocate(relay!.port, creds);
      clients.push(live.client);
      expect(live.r.code).toBe(0);
      writeFileSync(revokeFile, "# revoked\numbrella\n");
      process.kill(relay!.pid, "SIGHUP");
      const deadline = Date.now() + 5000;
      while (!relay!.stderr.includes("reload: applied") && Date.now() < deadline) {
        await sleep(20);
      }
      expect(relay!.stderr).toMatch(
        /reload: applied .*changed=--revoke-file revocationEntries=1 allocationsEnded=1/,
      );
      const refused = await live.client.refresh(600);
      expect(refused.code).toBe(403);
      expect(refused.reason).toBe("Forbidden: credentials revoked");
      const again = await tcpAllocate(relay!.port, creds);
      clients.push(again.client);
      expect(again.r.code).toBe(403);
      // Still running: SIGHUP reloads, it does not stop the relay.
      expect(relay!.process.exited).toBe(false);
    });
  },
);

/** Pinned credentials for `user` and `port`, as `turnpike-relay credentials --port` mints them. */
function pinnedCreds(user: string, port: number): { username: string; password: string } {
  const c = mintPinnedCredentials(TOKEN, Math.floor(Date.now() / 1000), 3600, user, port);
  return { username: c.username, password: c.password };
}

describe("a pinned port belongs to one principal, whatever the protocol and whichever worker", () => {
  let range: PortRange;
  let relay: TurnpikeHandle | undefined;
  let pinned: { min: number; max: number };
  const clients: TurnClientLite[] = [];

  beforeAll(async () => {
    range = reservePortRange(40);
    pinned = { min: range.min + 20, max: range.max };
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.min + 19,
      token: TOKEN,
      extraArgs: ["--pinned-ports", `${pinned.min}-${pinned.max}`],
    });
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await relay?.stop("SIGINT", 5000);
    range?.release();
  });

  async function udpAllocate(creds: { username: string; password: string }) {
    const c = await TurnClientLite.open({ port: relay!.port, ...creds });
    clients.push(c);
    return { client: c, r: await c.allocate() };
  }

  it("refuses another user's TCP (RFC 6062) allocations on a port held over UDP, on every worker, and a connection to the port reaches nobody of theirs", async () => {
    const port = pinned.min + 1;
    const alice = await udpAllocate(pinnedCreds("alice", port));
    expect(alice.r.code, alice.r.reason).toBe(0);
    expect(alice.r.relayed[0]?.port).toBe(port);
    // 127.0.0.1 and 127.0.0.2 reach different workers (the listeners steer by source address).
    for (let i = 0; i < 4; i++) {
      const bob = await tcpAllocate(
        relay!.port,
        pinnedCreds("bob", port),
        `127.0.0.${1 + (i % 2)}`,
      );
      clients.push(bob.client);
      expect(bob.r.code, `try ${i}: ${bob.r.reason}`).toBe(403);
      expect(bob.r.reason).toBe(`Forbidden: pinned port ${port} is held by another user`);
    }
    expect(await connectionRefused(port)).toBe(true);
    // Alice's tunnel comes back from a new 5-tuple: the port is hers again at once.
    const again = await udpAllocate(pinnedCreds("alice", port));
    expect(again.r.code, again.r.reason).toBe(0);
    expect(again.r.relayed[0]?.port).toBe(port);
    expect((await alice.client.refresh(600)).code).toBe(437);
  });

  it("refuses another user's UDP allocations on a port held over TCP, whichever worker they reach", async () => {
    const port = pinned.min + 3;
    const alice = await tcpAllocate(relay!.port, pinnedCreds("alice", port), "127.0.0.2");
    clients.push(alice.client);
    expect(alice.r.code, alice.r.reason).toBe(0);
    // Each from a socket of its own: the kernel spreads the 5-tuples over the workers.
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await udpAllocate(pinnedCreds("bob", port))).r.code);
    expect(codes).toEqual(Array(8).fill(403));
    expect(await connectionRefused(port)).toBe(false); // alice's relayed address listens
    expect((await alice.client.refresh(600)).code).toBe(0);
  });
});
