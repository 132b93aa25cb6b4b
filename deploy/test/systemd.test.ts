// deploy/systemd, without a running systemd (none runs here). The unit and its TLS drop-in pass
// `systemd-analyze verify`; then what systemd does at start is done by hand as systemd.exec(5)
// describes it (systemd-unit.ts), against the relay installed by the README's commands and
// configured by the "Runbook: one VM" commands, with /opt and /etc mapped into a scratch
// directory: the relay runs as `nobody`, which like the unit's dynamic user owns none of the
// files. It must read what the runbook means it to read (the revocation list, re-read on
// ExecReload) and serve TURNS from the credentials the drop-in has systemd copy for it; the
// unit's KillSignal drains it.
import { execFile } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { promisify } from "node:util";
import { freePort, type PortRange, reservePortRange } from "@turnpike/test-support/ports";
import { sleep } from "@turnpike/test-support/process";
import { selfSignedCert } from "@turnpike/test-support/tls";
import { requireTool, skipUnlessTools } from "@turnpike/test-support/tools";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandLines, markdownSection, repoText, runShell, shellBlocks } from "./docs.js";
import { busyPorts, killLeftovers, outsideEnv, type Started, signalAndWait } from "./launch.js";
import { INSTALL_PREFIX, packAll, readmeInstallBlock, runInstall } from "./readme-install.js";
import { setting, startAsSystemd, unitSection } from "./systemd-unit.js";

const run = promisify(execFile);
const UNIT = repoText("deploy/systemd/turnpike-relay.service");
const TLS_DROP_IN = repoText("deploy/systemd/turnpike-relay-tls.conf");
const KERNEL_PATH_DROP_IN = repoText("deploy/systemd/turnpike-relay-kernel-path.conf");
const OPT = INSTALL_PREFIX["turnpike-relay"];
const ETC = "/etc/turnpike";
/** `nobody`: no file here is its own and it is in none of their groups, like a dynamic user. */
const NOBODY = 65534;
const TOKEN = "systemd-test-token";

let scratch: string;
let range: PortRange;

beforeAll(async () => {
  // Traversable by `nobody`, as / and /etc are (mkdtemp makes 0700).
  scratch = mkdtempSync(join(tmpdir(), "turnpike-systemd-"));
  chmodSync(scratch, 0o755);
  range = reservePortRange(20);
  await packAll(join(scratch, "tarballs"));
  const r = await runInstall(
    readmeInstallBlock("turnpike-relay"),
    join(scratch, "tarballs"),
    scratch,
  );
  expect(r.code, r.output).toBe(0);
});

afterAll(() => {
  range?.release();
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
});

/** A unit or drop-in text as installed here: /opt and /etc/turnpike mapped into scratch. */
const mapped = (text: string): string =>
  text.replaceAll(OPT, join(scratch, OPT)).replaceAll(ETC, join(scratch, ETC));

describe("deploy/systemd/turnpike-relay.service", () => {
  const service = unitSection([UNIT], "Service");

  it("sandboxes the relay: dynamic user, no new privileges, no capabilities, read-only system", () => {
    expect(setting(service, "DynamicUser")).toBe("yes");
    expect(setting(service, "NoNewPrivileges")).toBe("yes");
    // Empty: the relay's ports are all above 1023 (3478, the relay range, 8080, 5349).
    expect(setting(service, "CapabilityBoundingSet")).toBe("");
    expect(setting(service, "AmbientCapabilities")).toBe("");
    expect(setting(service, "ProtectSystem")).toBe("strict");
    expect(setting(service, "Restart")).toBe("on-failure");
    expect(setting(service, "EnvironmentFile")).toMatch(/^\/etc\/turnpike\//);
    // Longer than the default --drain-timeout (30 s) plus the relay's 10 s shutdown guard.
    expect(Number.parseInt(setting(service, "TimeoutStopSec") ?? "0", 10)).toBeGreaterThan(40);
    expect(setting(service, "ExecStart")?.startsWith(`${OPT}/`)).toBe(true);
    expect(setting(service, "ExecReload")).toBe("/bin/kill -HUP $MAINPID");
  });

  it("with the kernel path's drop-in: exactly CAP_BPF and CAP_NET_ADMIN, bpf() allowed, tc asked for", () => {
    const withKernel = unitSection([UNIT, KERNEL_PATH_DROP_IN], "Service");
    // The user the relay tests run as with just these (e2e-kernel-path-lifecycle.test.ts).
    expect(setting(withKernel, "AmbientCapabilities")).toBe("CAP_BPF CAP_NET_ADMIN");
    expect(setting(withKernel, "CapabilityBoundingSet")).toBe("CAP_BPF CAP_NET_ADMIN");
    // systemd merges allow-lists: @system-service plus bpf.
    expect(withKernel.get("SystemCallFilter")).toEqual(["@system-service", "bpf"]);
    expect(setting(withKernel, "Environment")).toBe("TURNPIKE_KERNEL_PATH=tc");
    expect(setting(withKernel, "DynamicUser")).toBe("yes");
    expect(setting(withKernel, "NoNewPrivileges")).toBe("yes");
  });

  it.skipIf(skipUnlessTools("systemd-analyze"))(
    "passes systemd-analyze verify, alone and with the TLS and kernel path drop-ins",
    async () => {
      requireTool("systemd-analyze");
      const dir = join(scratch, "units");
      mkdirSync(join(dir, "turnpike-relay.service.d"), { recursive: true });
      // verify checks that ExecStart exists: /opt is this test's npm install.
      const unitPath = join(dir, "turnpike-relay.service");
      writeFileSync(unitPath, mapped(UNIT));
      const verify = async () =>
        run("systemd-analyze", ["verify", unitPath]).then(
          (r) => `${r.stdout}${r.stderr}`.trim(),
          (e: { stdout: string; stderr: string }) => `${e.stdout}${e.stderr}`.trim(),
        );
      expect(await verify()).toBe("");
      // A drop-in next to the unit, as in /etc/systemd/system/turnpike-relay.service.d/.
      writeFileSync(join(dir, "turnpike-relay.service.d/tls.conf"), mapped(TLS_DROP_IN));
      expect(await verify()).toBe("");
      writeFileSync(join(dir, "turnpike-relay.service.d/kernel-path.conf"), KERNEL_PATH_DROP_IN);
      expect(await verify()).toBe("");
    },
  );
});

describe("the relay started as systemd starts the unit, configured by the One VM runbook", () => {
  let etc: string;
  let port: number;
  let health: number;
  let started: Started | undefined;

  beforeAll(async () => {
    // The runbook's commands that write /etc/turnpike (the others install the unit and the
    // sysctl file on the host and start the service: done here by startAsSystemd).
    const runbook = commandLines(
      shellBlocks(markdownSection(repoText("README.md"), "Runbook: one VM")).flat(),
    ).filter((l) => l.includes(ETC) && !/\bsystemctl\b|\bsysctl\b/.test(l));
    expect(runbook.join("\n")).toContain("TURNPIKE_REVOKE_FILE=");
    etc = join(scratch, ETC);
    mkdirSync(join(etc, ".."), { recursive: true });
    const r = await runShell(runbook, { cwd: scratch, env: outsideEnv(), paths: { [ETC]: etc } });
    expect(r.code, r.output).toBe(0);
    port = await freePort();
    health = await freePort();
    // This machine's settings (the runbook's relay.env holds the token and the revocation list).
    const env = readFileSync(join(etc, "relay.env"), "utf8");
    expect(env).toMatch(/^TURNPIKE_TOKEN=\S{40,}$/m);
    writeFileSync(
      join(etc, "relay.env"),
      `${env}TURNPIKE_TOKEN=${TOKEN}\nTURNPIKE_LISTEN=127.0.0.1:${port}\n` +
        `TURNPIKE_HEALTH_LISTEN=127.0.0.1:${health}\n` +
        `TURNPIKE_MIN_PORT=${range.min}\nTURNPIKE_MAX_PORT=${range.min + 9}\n`,
    );
  });
  afterAll(() => killLeftovers(started));

  const start = (units: string[]): Promise<Started> =>
    startAsSystemd({
      service: unitSection(units.map(mapped), "Service"),
      etc: join(scratch, "etc"),
      run: mkdtempSync(join(scratch, "run-")),
      uid: NOBODY,
      gid: NOBODY,
      healthPort: health,
    });

  it("reads the revocation list as the dynamic user, also where /etc/turnpike was made 0700", async () => {
    // As the runbook of earlier versions left it: the unit's ConfigurationDirectoryMode opens it.
    chmodSync(etc, 0o700);
    started = await start([UNIT]);
    expect(started.proc.stderr).toMatch(/ INFO ready .*\budpIo=batch\b/);
  });

  it("re-reads it on ExecReload (systemctl reload)", async () => {
    writeFileSync(join(etc, "revoked"), "alice\nbob\n");
    const [command, ...args] = (setting(unitSection([UNIT], "Service"), "ExecReload") ?? "")
      .replace("$MAINPID", String(started!.proc.pid))
      .split(/\s+/);
    await run(command!, args);
    for (let i = 0; i < 50 && !started!.proc.stderr.includes("reload: applied"); i++) {
      await sleep(100);
    }
    expect(started!.proc.stderr).toMatch(/reload: applied .*revocationEntries=2/);
  });

  it("drains and exits 0 on its KillSignal (systemctl stop)", async () => {
    const service = unitSection([UNIT], "Service");
    const stopped = await signalAndWait(
      started!,
      (setting(service, "KillSignal") ?? "SIGTERM") as NodeJS.Signals,
      { timeoutMs: Number.parseInt(setting(service, "TimeoutStopSec") ?? "90", 10) * 1000 },
    );
    expect(stopped.exit).toEqual({ code: 0, signal: null });
    expect(stopped.output).toContain("SIGTERM received: draining");
    expect(await busyPorts({ tcp: [port, health], udp: [port] })).toEqual([]);
  });

  it.skipIf(skipUnlessTools("openssl"))(
    "serves TURNS with the TLS drop-in from the copies systemd makes of a key it cannot read",
    async () => {
      requireTool("openssl");
      // The chain and key where the drop-in's header puts them, 0600 root.
      const made = selfSignedCert(mkdtempSync(join(scratch, "cert-")));
      writeFileSync(join(etc, "tls.crt"), readFileSync(made.cert), { mode: 0o600 });
      writeFileSync(join(etc, "tls.key"), readFileSync(made.key), { mode: 0o600 });
      const tls = await freePort();
      const env = readFileSync(join(etc, "relay.env"), "utf8");
      writeFileSync(join(etc, "relay.env"), `${env}TURNPIKE_TLS_LISTEN=127.0.0.1:${tls}\n`);
      started = await start([UNIT, TLS_DROP_IN]);
      try {
        const subject = await new Promise<string>((resolve, reject) => {
          const socket = tlsConnect(
            { host: "127.0.0.1", port: tls, rejectUnauthorized: false, servername: "localhost" },
            () => {
              resolve(String(socket.getPeerCertificate().subject?.CN));
              socket.end();
            },
          );
          socket.once("error", reject);
        });
        expect(subject).toBe("localhost");
        const stopped = await signalAndWait(started, "SIGINT");
        expect(stopped.exit).toEqual({ code: 0, signal: null });
      } finally {
        killLeftovers(started);
      }
    },
  );
});
