// SIGHUP through a real turnpike-relay process: secret rotation with --token-file (old and new
// credentials, plain and pinned, then the old secret withdrawn while a live allocation keeps
// relaying until its refresh), a renewed TLS certificate (new handshakes get it, a connection
// opened before keeps working, a broken pair is refused), the log level and limits from the
// config file, the one line naming restart-only changes, and a broken config file that changes
// nothing. (The relay-server project runs two workers, relay-server-dgram one engine.)
import { spawnSync } from "node:child_process";
import { createHmac, X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import {
  mintPinnedCredentials,
  mintRestCredentials,
  pinnedCredentialSecret,
} from "@turnpike/relay-core";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { skipUnlessTools } from "@turnpike/test-support/tools";
import { startEchoPeer, TurnClientLite } from "@turnpike/test-support/turn-client-lite";
import {
  httpGet,
  startTurnpike,
  TURNPIKE_BIN,
  type TurnpikeHandle,
} from "@turnpike/test-support/turnpike";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

const A = "secret-a-for-e2e-reload";
const B = "secret-b-for-e2e-reload";

let relay: TurnpikeHandle | undefined;
let range: PortRange | undefined;
let dir: string;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "turnpike-e2e-reload-"));
});

afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await relay?.stop("SIGINT", 5000);
  relay = undefined;
  range?.release();
  rmSync(dir, { recursive: true, force: true });
});

/** SIGHUP, and the line that ended that reload (bounded). */
async function hup(): Promise<string> {
  const before = relay!.stderr.length;
  process.kill(relay!.pid, "SIGHUP");
  const deadline = Date.now() + 10_000;
  for (;;) {
    const line = relay!.stderr
      .slice(before)
      .split("\n")
      .find((l) => /reload: (applied|kept)/.test(l));
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error("no reload line within 10 s");
    await sleep(20);
  }
}

async function client(
  creds: { username: string; password: string },
  transport?: "tls",
  port?: number,
) {
  const c = await TurnClientLite.open({ port: port ?? relay!.port, transport, ...creds });
  cleanups.push(() => c.close());
  return c;
}

const now = () => Math.floor(Date.now() / 1000);
const plain = (token: string, user: string) => mintRestCredentials(token, now(), 600, user);

describe("secret rotation with --token-file and SIGHUP", () => {
  it("verifies old and new secrets while both are listed, mints with the first, and refuses the old one once it is gone", async () => {
    range = reservePortRange(100);
    const pinned = { min: range.min + 60, max: range.max };
    const tokens = join(dir, "tokens");
    writeFileSync(tokens, `${A}\n`);
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.min + 59,
      token: undefined,
      logLevel: "info",
      extraArgs: ["--token-file", tokens, "--pinned-ports", `${pinned.min}-${pinned.max}`],
    });
    const peer = await startEchoPeer();
    cleanups.push(() => peer.close());
    // Handed out before the rotation: plain and pinned credentials of A, and a live allocation.
    const oldPlain = plain(A, "webapp");
    const oldPinned = mintPinnedCredentials(A, now(), 600, "acme-pg", pinned.min + 1);
    const live = await client(oldPlain);
    expect((await live.allocate()).code).toBe(0);
    expect((await live.channelBind(0x4000, peer.address)).code).toBe(0);

    writeFileSync(tokens, `# rotating: B mints, A still verifies\n${B}\n${A}\n`);
    expect(await hup()).toMatch(/reload: applied .*generation=2 changed=--token-file/);
    const newPinned = mintPinnedCredentials(B, now(), 600, "globex-db", pinned.min + 2);
    for (const creds of [oldPlain, oldPinned, plain(B, "webapp"), newPinned]) {
      const c = await client(creds);
      const r = await c.allocate();
      expect(r.code, `${creds.username}: ${r.reason}`).toBe(0);
      expect((await c.refresh(0)).code).toBe(0);
    }
    // `credentials` next to the relay mints with the first secret of the file.
    const minted = spawnSync(process.execPath, [TURNPIKE_BIN, "credentials", "--user", "x"], {
      env: { PATH: process.env.PATH, TURNPIKE_TOKEN_FILE: tokens },
      encoding: "utf8",
    });
    const creds = JSON.parse(minted.stdout);
    expect(creds.password).toBe(createHmac("sha1", B).update(creds.username).digest("base64"));
    const secret = spawnSync(process.execPath, [TURNPIKE_BIN, "credentials", "--pinned-secret"], {
      env: { PATH: process.env.PATH, TURNPIKE_TOKEN_FILE: tokens },
      encoding: "utf8",
    });
    expect(secret.stdout).toBe(`${pinnedCredentialSecret(B)}\n`);

    writeFileSync(tokens, `${B}\n`);
    expect(await hup()).toMatch(/reload: applied .*generation=3 changed=--token-file/);
    for (const creds of [oldPlain, oldPinned]) {
      expect((await (await client(creds)).allocate()).code).toBe(401);
    }
    expect((await (await client(plain(B, "webapp"))).allocate()).code).toBe(0);
    // The allocation made with A relays on until it must be refreshed, which A can no longer do.
    live.sendChannelData(0x4000, Buffer.from("still relayed"));
    await live.waitForChannelData(1);
    expect(live.channelData[0]!.data.toString()).toBe("still relayed");
    expect((await live.refresh(600)).code).toBe(401);
  });
});

describe.skipIf(skipUnlessTools("openssl"))("a renewed TLS certificate and SIGHUP", () => {
  it("serves new handshakes with the new pair, keeps connections opened before, and refuses a broken pair", async () => {
    const [first, second] = ["first", "second"].map((name) => {
      const at = join(dir, name);
      mkdirSync(at);
      return selfSignedCert(at);
    });
    const cert = join(dir, "tls.crt");
    const key = join(dir, "tls.key");
    copyFileSync(first!.cert, cert);
    copyFileSync(first!.key, key);
    range = reservePortRange(40);
    const tlsPort = await freePort();
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: A,
      logLevel: "info",
      extraArgs: ["--tls-listen", `127.0.0.1:${tlsPort}`, "--tls-cert", cert, "--tls-key", key],
    });
    const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
    // What a new handshake is served, from two source addresses: with two workers, TCP is
    // steered by source address, so they reach different ones.
    const handshake = (localAddress: string) =>
      new Promise<string>((resolve, reject) => {
        const raw = net.connect({ host: "127.0.0.1", port: tlsPort, localAddress });
        const s = tls.connect({ socket: raw, rejectUnauthorized: false }, () => {
          resolve(s.getPeerCertificate().fingerprint256);
          s.end();
        });
        s.once("error", reject);
      });
    const served = async () => {
      const seen = await Promise.all(["127.0.0.1", "127.0.0.2"].map(handshake));
      expect(seen[1]).toBe(seen[0]);
      return seen[0];
    };
    const pem = (path: string) => readFileSync(path, "utf8");
    expect(await served()).toBe(fingerprint(pem(first!.cert)));
    const before = await client(plain(A, "tls-user"), "tls", tlsPort);
    expect((await before.allocate()).code).toBe(0);

    copyFileSync(second!.cert, cert);
    copyFileSync(second!.key, key);
    expect(await hup()).toMatch(/reload: applied .*changed=--tls-cert/);
    expect(await served()).toBe(fingerprint(pem(second!.cert)));
    expect((await before.refresh(600)).code).toBe(0);

    // A certificate without its key (a renewal copied half-way): the pair in use stays.
    copyFileSync(first!.cert, cert);
    const refused = await hup();
    expect(refused).toContain("reload: kept the previous configuration");
    expect(refused).toContain(
      "--tls-cert and --tls-key are not a usable pair: key values mismatch",
    );
    expect(await served()).toBe(fingerprint(pem(second!.cert)));
    expect((await before.refresh(600)).code).toBe(0);
  });
});

describe("the config file and SIGHUP", () => {
  it("changes the log level and limits live, names restart-only changes once, and keeps everything on a broken file", async () => {
    range = reservePortRange(40);
    const file = join(dir, "relay.json");
    const write = (o: object) => writeFileSync(file, JSON.stringify(o));
    write({ "log-level": "warn", "max-allocations-per-user": 5 });
    relay = await startTurnpike({
      minPort: range.min,
      maxPort: range.max,
      token: A,
      logLevel: null,
      extraArgs: ["--config", file],
    });
    const allocated = async (user: string) =>
      (await (await client(plain(A, user))).allocate()).code;
    const debugLines = () =>
      relay!.stderr.split("\n").filter((l) => / DEBUG allocation created/.test(l));
    expect(await allocated("quiet")).toBe(0);
    expect(debugLines()).toEqual([]);

    write({
      "log-level": "debug",
      "max-allocations-per-user": 1,
      realm: "elsewhere",
      "max-channels": 8,
    });
    const warned = relay!.stderr.length;
    await hup();
    const afterHup = relay!.stderr.slice(warned);
    expect(afterHup.match(/reload: these need a restart: [^\n]*/g)).toEqual([
      "reload: these need a restart: --realm, --max-channels",
    ]);
    expect(afterHup).toMatch(
      /INFO reload: applied .*changed=--log-level,--max-allocations-per-user/,
    );
    // Debug lines now, from whichever worker; and the per-user quota of 1 on every worker.
    expect(await allocated("loud")).toBe(0);
    await until(() => debugLines().length > 0);
    for (let i = 0; i < 4; i++) expect(await allocated("loud")).toBe(486);

    write({ "log-level": "warn", "max-allocations-per-user": "many" });
    const kept = await hup();
    expect(kept).toContain("ERROR reload: kept the previous configuration");
    expect(kept).toContain(
      `error="\\"max-allocations-per-user\\" in ${file} must be 1..10000000, got \\"many\\""`,
    );
    const readyz = JSON.parse((await httpGet(relay!.healthPort, "/readyz")).body);
    expect(readyz).toMatchObject({ configGeneration: 2, lastReload: "refused" });
    // Still debug, still one allocation per user.
    const seen = debugLines().length;
    expect(await allocated("other")).toBe(0);
    await until(() => debugLines().length > seen);
    expect(await allocated("other")).toBe(486);
  });
});

async function until(check: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("condition not met within 5 s");
    await sleep(20);
  }
}
