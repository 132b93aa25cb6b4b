// The approach users run today: `ssh -N -R` to a server, here a throwaway sshd on loopback with
// a generated host key and client key, started and stopped by the bench (by PID, always).
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { type Child, findExecutable, processTree, startChild, waitForOutput } from "../children.js";
import { freeTcpPort } from "../ports.js";

/** The tools this path needs (and /run/sshd), or the reason it must be skipped. */
export function sshTools(): { sshd: string; ssh: string; keygen: string } | string {
  const sshd = findExecutable("sshd");
  const ssh = findExecutable("ssh");
  const keygen = findExecutable("ssh-keygen");
  const missing = [!sshd && "sshd", !ssh && "ssh", !keygen && "ssh-keygen"].filter(Boolean);
  if (missing.length) return `missing tool(s): ${missing.join(", ")} (apt install openssh-server)`;
  // Privilege separation needs this directory even for a foreground, single-user sshd; only
  // root can usually create it, so without it the path is skipped, not failed.
  try {
    mkdirSync("/run/sshd", { recursive: true, mode: 0o755 });
  } catch (e) {
    if (!existsSync("/run/sshd"))
      return `sshd needs /run/sshd and it cannot be created (${(e as Error).message}): run as root or mkdir it`;
  }
  return { sshd: sshd!, ssh: ssh!, keygen: keygen! };
}

export interface SshReverse {
  sshd: Child;
  ssh: Child;
  /** sshd's listener plus its per-session children, for CPU accounting */
  sshdPids(): number[];
  forwardPort: number;
  /** e.g. "chacha20-poly1305@openssh.com MAC: <implicit> compression: none" */
  negotiated: string;
  /** "OpenSSH_9.2p1 Debian-2+deb12u10" */
  version: string;
  command: string;
  stop(): Promise<void>;
}

/** Key-only sshd on 127.0.0.1 and `ssh -N -R 127.0.0.1:FWD:127.0.0.1:target` to it. */
export async function startSshReverse(
  tools: { sshd: string; ssh: string; keygen: string },
  targetPort: number,
): Promise<SshReverse> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "turnpike-bench-ssh-"));
  let sshd: Child | undefined;
  let ssh: Child | undefined;
  let sshdTree: number[] = [];
  const stop = async () => {
    // The client first: its session child in sshd then ends on its own.
    await ssh?.stop();
    if (sshd?.pid !== undefined) sshdTree = processTree(sshd.pid);
    await sshd?.stop();
    for (const pid of sshdTree.slice(1)) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const key = (name: string) =>
      execFileSync(tools.keygen, ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, name)], {
        stdio: "ignore",
        timeout: 10000,
      });
    key("host");
    key("client");
    copyFileSync(path.join(dir, "client.pub"), path.join(dir, "authorized_keys"));
    const port = await freeTcpPort();
    const config = path.join(dir, "sshd_config");
    writeFileSync(
      config,
      [
        "ListenAddress 127.0.0.1",
        `Port ${port}`,
        `HostKey ${path.join(dir, "host")}`,
        `AuthorizedKeysFile ${path.join(dir, "authorized_keys")}`,
        `PidFile ${path.join(dir, "sshd.pid")}`,
        "StrictModes no",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "",
      ].join("\n"),
    );
    // -D foreground (its PID is ours to stop), -e log to stderr.
    sshd = startChild("sshd", tools.sshd, ["-D", "-e", "-f", config]);
    await waitForOutput(sshd, /Server listening on 127\.0\.0\.1/, 10000);
    const forwardPort = await freeTcpPort();
    const user = os.userInfo().username;
    const args = [
      "-N",
      "-v", // the negotiated cipher for the report ("kex: client->server cipher: ...")
      "-F",
      "/dev/null", // defaults, not the user's ~/.ssh/config
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "Compression=no",
      "-i",
      path.join(dir, "client"),
      "-p",
      String(port),
      "-R",
      `127.0.0.1:${forwardPort}:127.0.0.1:${targetPort}`,
      `${user}@127.0.0.1`,
    ];
    ssh = startChild("ssh", tools.ssh, args, {}, 60);
    const kex = waitForOutput(ssh, /kex: client->server cipher: [^\r\n]+/, 10000);
    kex.catch(() => {}); // awaited below; do not let an early failure go unhandled
    // Ready once sshd confirmed the forwarding (ssh -v says so). Not a probe connection: it
    // would travel to the iperf3 server and, arriving late through ssh, spoil the next test
    // ("control socket has closed unexpectedly" in 1 of 2 ten-second runs).
    await waitForOutput(ssh, /remote forward success for: listen 127\.0\.0\.1:\d+/, 10000);
    const negotiated = (await kex).replace(/^kex: client->server cipher: /, "");
    const sshdChild = sshd;
    let version = "OpenSSH";
    try {
      // `ssh -V` prints to stderr: "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 ..."
      const v = spawnSync(tools.ssh, ["-V"], { encoding: "utf8", timeout: 5000 });
      version = (v.stderr || v.stdout).split(",")[0]!.trim() || version;
    } catch {
      // the version is decoration
    }
    return {
      sshd,
      ssh,
      sshdPids: () => (sshdChild.pid === undefined ? [] : processTree(sshdChild.pid)),
      forwardPort,
      negotiated,
      version,
      command: `${tools.sshd} -D -e -f sshd_config; ssh ${args.map((a) => (a.startsWith(dir) ? path.basename(a) : a)).join(" ")}`,
      stop,
    };
  } catch (e) {
    const out = [...(sshd?.out.slice(-3) ?? []), ...(ssh?.out.slice(-3) ?? [])].join(" / ");
    await stop();
    throw new Error(`${(e as Error).message}${out ? ` (${out})` : ""}`);
  }
}
