// A real database end to end: PostgreSQL (Debian's package, initdb in a temporary directory,
// listening on 127.0.0.1 only) is the private service behind turnpike-tunnel; the real `psql` on
// the platform side runs queries and a \copy of more than 20 MB in each direction through the
// pinned relayed address, before and after the relay is killed (kill -9) and restarted and after
// the tunnel is killed and restarted; then the same through coturn as the relay (dynamic port).

import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pinnedCredentialSecret } from "@turnpike/relay-core";
import { type CoturnHandle, startCoturn } from "@turnpike/test-support/coturn";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import {
  type PostgresHandle,
  postgresProbe,
  psql,
  startPostgres,
} from "@turnpike/test-support/postgres";
import { requireTools, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  exposeArgs,
  logCount,
  mintTunnelKey,
  parseAddress,
  startTunnel,
  type TunnelProcess,
  useTunnelFixture,
} from "./harness.js";

const TOKEN = "tunnel-postgres-secret";
const ADMIN = "tunnel-postgres-admin";
/** 160,000 rows of 128 random hex characters: 21.7 MB of CSV. */
const ROWS = 160_000;
const BACKOFF_MAX = 2;

const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe.skipIf(skipUnlessTools(postgresProbe()))(
  "a real PostgreSQL behind turnpike-tunnel",
  () => {
    let dir: string;
    let csv: string;
    let csvSha: string;
    let rowsMd5: string;
    let pg: PostgresHandle;
    let tunnel: TunnelProcess | undefined;
    let tunnelArgs: string[];
    const pinnedPort = () => f.pinned.min + 5;
    const key = () => ({ TURNPIKE_KEY: mintTunnelKey(TOKEN, "acme-pg", pinnedPort()) });

    /** Queries and a \copy of the CSV in both directions through `at`; returns MB/s each way. */
    async function exercise(at: { host: string; port: number }, tag: string) {
      const run = async (...args: string[]) => {
        const r = await psql(at, pg, args, 120_000);
        expect(r.code, `${tag}: psql ${args.join(" ")}\n${r.stderr}`).toBe(0);
        return r.stdout.trim();
      };
      expect(await run("-c", "select version()")).toMatch(/^PostgreSQL \d+/);
      await run(
        "-c",
        "drop table if exists customer_events",
        "-c",
        "create table customer_events (id int primary key, payload text not null)",
      );
      const mb = statSync(csv).size / 1e6;
      let t0 = performance.now();
      await run("-c", `\\copy customer_events from '${csv}' with (format csv)`);
      const up = mb / ((performance.now() - t0) / 1000);
      // What the server stored, checked by the server itself.
      expect(
        await run(
          "-c",
          "select count(*) || ' ' || md5(string_agg(id || ',' || payload, E'\\n' order by id)) from customer_events",
        ),
      ).toBe(`${ROWS} ${rowsMd5}`);
      const out = join(dir, `out-${tag.replace(/\W+/g, "-")}.csv`);
      t0 = performance.now();
      await run(
        "-c",
        `\\copy (select id, payload from customer_events order by id) to '${out}' with (format csv)`,
      );
      const down = mb / ((performance.now() - t0) / 1000);
      expect(sha256(readFileSync(out)), `${tag}: the CSV that came back`).toBe(csvSha);
      rmSync(out);
      expect(await run("-c", "select count(*) from customer_events where id % 1000 = 0")).toBe(
        String(ROWS / 1000),
      );
      console.log(
        `[tunnel-postgres] ${tag}: \\copy ${mb.toFixed(1)} MB up at ${up.toFixed(0)} MB/s, down at ${down.toFixed(0)} MB/s through ${at.host}:${at.port}`,
      );
    }

    beforeAll(async () => {
      requireTools(postgresProbe());
      dir = mkdtempSync(join(tmpdir(), "turnpike-tunnel-pg-"));
      const lines: string[] = [];
      for (let i = 1; i <= ROWS; i++) lines.push(`${i},${randomBytes(64).toString("hex")}`);
      csv = join(dir, "events.csv");
      writeFileSync(csv, `${lines.join("\n")}\n`);
      csvSha = sha256(readFileSync(csv));
      rowsMd5 = createHash("md5").update(lines.join("\n")).digest("hex");
      expect(statSync(csv).size).toBeGreaterThan(20 * 1024 * 1024);
      pg = await startPostgres();
    }, 180_000);
    afterAll(async () => {
      await pg?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });
    const f = useTunnelFixture({
      token: TOKEN,
      relayPorts: 20,
      pinnedPorts: 10,
      relayEnv: { TURNPIKE_ADMIN_TOKEN: ADMIN },
      echo: [],
      tunnel: false,
    });
    beforeAll(async () => {
      tunnelArgs = [
        ...exposeArgs(`${f.relayUri}?transport=tcp`, { pg: `tcp://127.0.0.1:${pg.port}` }),
        "--backoff-max",
        String(BACKOFF_MAX),
        "--keepalive",
        "1",
      ];
      tunnel = await startTunnel(tunnelArgs, key());
    });
    afterAll(async () => {
      await tunnel?.proc.stop("SIGKILL", 1000);
    });

    const pinnedEndpoint = () => ({ host: "127.0.0.1", port: pinnedPort() });
    const readyOnPin = (t: TunnelProcess, what: string, reconnects = 0) =>
      t.waitFor(
        (rows) =>
          rows[0]?.state === "ready" &&
          rows[0].relayedAddress === `127.0.0.1:${pinnedPort()}` &&
          rows[0].reconnects >= reconnects,
        BACKOFF_MAX * 1000 + 15_000,
        what,
      );

    it("runs psql queries and a 20 MB \\copy both ways through the pinned relayed address", async () => {
      await readyOnPin(tunnel!, "the tunnel ready on its pinned port");
      // The platform finds the endpoint on the relay, not inside the customer's network.
      const res = await fetch(
        `http://127.0.0.1:${f.relay.healthPort}/v1/allocations?user=acme-pg`,
        {
          headers: { authorization: `Bearer ${ADMIN}` },
        },
      );
      const found = ((await res.json()) as { allocations: { relayedAddress: string }[] })
        .allocations;
      expect(found.map((a) => a.relayedAddress)).toEqual([`127.0.0.1:${pinnedPort()}`]);
      await exercise(pinnedEndpoint(), "first");
    });

    it("does it again on the same address after the relay is killed (kill -9) and restarted", async () => {
      await f.stopRelay();
      await f.startRelay();
      await readyOnPin(tunnel!, "the tunnel back on its pinned port", 1);
      await exercise(pinnedEndpoint(), "after relay kill -9");
    });

    it("does it again on the same address after the tunnel is killed (kill -9) and restarted", async () => {
      await tunnel!.proc.stop("SIGKILL", 1000);
      tunnel = await startTunnel(tunnelArgs, key());
      await readyOnPin(tunnel, "the restarted tunnel on its pinned port");
      await exercise(pinnedEndpoint(), "after tunnel kill -9");
    });

    describe.skipIf(skipUnlessTools("turnserver"))("with coturn as the relay", () => {
      let coturn: CoturnHandle | undefined;
      let coturnTunnel: TunnelProcess | undefined;
      let coturnRange: PortRange | undefined;
      afterAll(async () => {
        await coturnTunnel?.proc.stop("SIGKILL", 1000);
        await coturn?.stop();
        coturnRange?.release();
      });

      it("runs the same queries and \\copy through coturn's relayed address (a dynamic port)", async () => {
        coturnRange = reservePortRange(20);
        const port = await freePort();
        coturn = await startCoturn({
          port,
          mode: "rest",
          secret: TOKEN,
          // Pinned credentials have a key of their own; given it as a second shared secret,
          // coturn accepts them as plain REST credentials (a dynamic port).
          extraArgs: [`--static-auth-secret=${pinnedCredentialSecret(TOKEN)}`],
          minPort: coturnRange.min,
          maxPort: coturnRange.max,
        });
        coturnTunnel = await startTunnel(
          [
            ...tunnelArgs.slice(0, 1),
            `turn:127.0.0.1:${port}?transport=tcp`,
            ...tunnelArgs.slice(2),
          ],
          key(),
        );
        const [row] = await coturnTunnel.waitFor(
          (r) => r[0]?.state === "ready",
          20_000,
          "the tunnel ready on coturn",
        );
        const at = parseAddress(row!.relayedAddress!);
        expect(at.port).not.toBe(pinnedPort());
        expect(logCount(coturnTunnel.proc, "did not honour the pinned port")).toBe(1);
        await exercise({ host: at.ip, port: at.port }, "coturn");
      });
    });
  },
);
