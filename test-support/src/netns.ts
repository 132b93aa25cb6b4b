// Network namespaces the tests create themselves (never the host's interfaces), and agents
// running inside them: a Node script started with `ip netns exec NS node SCRIPT`, driven
// through JSON lines on stdin/stdout ({id, cmd, ...} -> {id, ok, result} or {id, ok: false,
// error}; first a {ready, pid} line). Every namespace is named with the test's tag and removed
// by deleteNamespaces(tag); the suites check nothing is left attached before that.
//
// The kernel data path's suites use them (packages/kernel-path: the program alone;
// packages/relay-server: the real turnpike-relay, and real clients through it).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createInterface } from "node:readline";

function run(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { stdio: "pipe", timeout: 20_000 }).toString();
}

export function ip(...args: string[]): string {
  return run("ip", args);
}

export function inNs(ns: string, ...args: string[]): string {
  return run("ip", ["netns", "exec", ns, ...args]);
}

function have(tool: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${tool} || test -x /usr/sbin/${tool}`], {
      stdio: "ignore",
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * Why these tests cannot run here, or undefined. Under CI=true a missing tool is an error
 * (the suite must not skip silently there); otherwise the suite skips and says why.
 */
export function netnsUnavailable(
  tools: readonly string[],
  suite = "kernel-path tests",
): string | undefined {
  let reason: string | undefined;
  if (process.platform !== "linux") reason = "not Linux";
  else if (process.getuid?.() !== 0) reason = "not root (network namespaces and BPF need it)";
  else {
    const missing = ["ip", ...tools].filter((t) => !have(t));
    if (missing.length > 0) reason = `missing ${missing.join(", ")} (scripts/ensure-tools.sh)`;
  }
  if (reason && process.env.CI === "true") throw new Error(`${suite}: ${reason}`);
  if (reason) console.warn(`${suite} skipped: ${reason}`);
  return reason;
}

export function uniqueTag(prefix: string): string {
  return `${prefix}${process.pid.toString(36)}${Math.floor(Math.random() * 1296).toString(36)}`;
}

/** Namespaces with `tag` in their name that still exist. */
export function leftoverNamespaces(tag: string): string[] {
  return ip("netns", "list")
    .split("\n")
    .map((l) => l.split(" ")[0] ?? "")
    .filter((n) => n.startsWith(tag));
}

export function addNamespace(name: string): void {
  ip("netns", "add", name);
  inNs(name, "ip", "link", "set", "lo", "up");
}

export function deleteNamespaces(tag: string): void {
  for (const ns of leftoverNamespaces(tag)) {
    try {
      ip("netns", "del", ns);
    } catch {
      // already gone
    }
  }
}

/** The program's route lookups need forwarding on the loopback (see README). */
export function enableLoopbackForwarding(ns: string): void {
  inNs(ns, "sysctl", "-qw", "net.ipv4.conf.lo.forwarding=1", "net.ipv6.conf.lo.forwarding=1");
}

/** UDP checksum errors the namespace's stack counted (IPv4 and IPv6). */
export function checksumErrors(ns: string): number {
  const out = inNs(ns, "cat", "/proc/net/snmp", "/proc/net/snmp6");
  const udp = out.split("\n").filter((l) => l.startsWith("Udp:"));
  const names = udp[0]?.split(/\s+/) ?? [];
  const values = udp[1]?.split(/\s+/) ?? [];
  const v4 = Number(values[names.indexOf("InCsumErrors")] ?? 0);
  const v6 = /^Udp6InCsumErrors\s+(\d+)/m.exec(out);
  return v4 + Number(v6?.[1] ?? 0);
}

/**
 * Client, relay and peer namespaces joined by two veth pairs (IPv4 and IPv6):
 *
 *   client 10.201.1.2 fd20:1::2 --- 10.201.1.1 fd20:1::1  relay  10.201.2.1 fd20:2::1 --- 10.201.2.2 fd20:2::2 peer
 *
 * The relay listens on its client-side address and relays from its peer-side address, so a
 * relayed datagram leaves by the other interface (FIB lookup + redirect). The client's and the
 * peer's veths compute UDP checksums in software unless `offload` (as datagrams from another
 * host arrive: complete, and checked by the receiving stack). `xdpTargets`: the client's and
 * the peer's veths accept frames an XDP program on the relay's side transmits (GRO on).
 */
export interface Topology {
  readonly tag: string;
  readonly client: string;
  readonly relay: string;
  readonly peer: string;
  /** The relay's interfaces: towards the client, towards the peer. */
  readonly relayInterfaces: readonly [string, string];
  readonly addresses: {
    readonly 4: { client: string; listener: string; relayed: string; peer: string };
    readonly 6: { client: string; listener: string; relayed: string; peer: string };
  };
}

export function makeTopology(
  tag: string,
  options: { offload?: boolean; xdpTargets?: boolean } = {},
): Topology {
  const t: Topology = {
    tag,
    client: `${tag}c`,
    relay: `${tag}r`,
    peer: `${tag}p`,
    relayInterfaces: [`${tag}rc`, `${tag}rp`],
    addresses: {
      4: {
        client: "10.201.1.2",
        listener: "10.201.1.1",
        relayed: "10.201.2.1",
        peer: "10.201.2.2",
      },
      6: { client: "fd20:1::2", listener: "fd20:1::1", relayed: "fd20:2::1", peer: "fd20:2::2" },
    },
  };
  for (const ns of [t.client, t.relay, t.peer]) addNamespace(ns);
  const pair = (a: string, aNs: string, b: string, bNs: string) => {
    ip("link", "add", a, "netns", aNs, "type", "veth", "peer", "name", b, "netns", bNs);
    inNs(aNs, "ip", "link", "set", a, "up");
    inNs(bNs, "ip", "link", "set", b, "up");
  };
  pair(`${tag}cr`, t.client, `${tag}rc`, t.relay);
  pair(`${tag}pr`, t.peer, `${tag}rp`, t.relay);
  const addr = (ns: string, dev: string, a4: string, a6: string) => {
    inNs(ns, "ip", "addr", "add", `${a4}/24`, "dev", dev);
    inNs(ns, "ip", "-6", "addr", "add", `${a6}/64`, "dev", dev, "nodad");
  };
  addr(t.client, `${tag}cr`, "10.201.1.2", "fd20:1::2");
  addr(t.relay, `${tag}rc`, "10.201.1.1", "fd20:1::1");
  addr(t.relay, `${tag}rp`, "10.201.2.1", "fd20:2::1");
  addr(t.peer, `${tag}pr`, "10.201.2.2", "fd20:2::2");
  inNs(t.client, "ip", "route", "add", "default", "via", "10.201.1.1");
  inNs(t.client, "ip", "-6", "route", "add", "default", "via", "fd20:1::1");
  inNs(t.peer, "ip", "route", "add", "default", "via", "10.201.2.1");
  inNs(t.peer, "ip", "-6", "route", "add", "default", "via", "fd20:2::1");
  enableLoopbackForwarding(t.relay);
  if (!options.offload) {
    inNs(t.client, "ethtool", "-K", `${tag}cr`, "tx", "off");
    inNs(t.peer, "ethtool", "-K", `${tag}pr`, "tx", "off");
  }
  if (options.xdpTargets) {
    // A frame an XDP program sends out of a veth (XDP_TX, bpf_redirect) is received by the
    // veth's other end through NAPI, which a veth runs only with XDP or GRO on there.
    inNs(t.client, "ethtool", "-K", `${tag}cr`, "gro", "on");
    inNs(t.peer, "ethtool", "-K", `${tag}pr`, "gro", "on");
  }
  return t;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
}

/** An agent script in a namespace; `prefix` runs it under e.g. capsh. */
export class NamespaceAgent {
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  readonly exited: Promise<void>;
  pid = 0;

  private constructor(child: ChildProcess) {
    this.#child = child;
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
    child.once("exit", () => {
      for (const p of this.#pending.values()) p.reject(new Error("agent exited"));
      this.#pending.clear();
    });
  }

  static async start(
    script: string,
    ns: string,
    prefix: readonly string[] = [],
  ): Promise<NamespaceAgent> {
    const cmd = [process.execPath, script];
    const args =
      prefix.length > 0
        ? ["netns", "exec", ns, ...prefix, "--", "-c", `exec ${cmd.join(" ")}`]
        : ["netns", "exec", ns, ...cmd];
    const child = spawn("ip", args, { stdio: ["pipe", "pipe", "inherit"] });
    const agent = new NamespaceAgent(child);
    const lines = createInterface({ input: child.stdout! });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent in ${ns} did not start`)), 10_000);
      lines.on("line", (line) => {
        const msg = JSON.parse(line) as {
          ready?: boolean;
          pid?: number;
          id?: number;
          ok?: boolean;
          result?: unknown;
          error?: string;
        };
        if (msg.ready) {
          agent.pid = msg.pid ?? 0;
          clearTimeout(timer);
          resolve();
          return;
        }
        const p = agent.#pending.get(msg.id ?? -1);
        if (!p) return;
        agent.#pending.delete(msg.id!);
        if (msg.ok) p.resolve(msg.result);
        else p.reject(new Error(msg.error));
      });
      child.once("exit", () => reject(new Error(`agent in ${ns} exited`)));
    });
    return agent;
  }

  call<T = unknown>(cmd: string, params: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`agent: ${cmd} timed out`));
      }, 15_000);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.#child.stdin!.write(`${JSON.stringify({ id, cmd, ...params })}\n`);
    });
  }

  /** SIGKILL to the node process itself (not to `ip`, which exec'd into it). */
  async kill9(): Promise<void> {
    process.kill(this.pid, "SIGKILL");
    await this.exited;
  }

  async stop(): Promise<void> {
    this.#child.stdin!.end();
    await this.exited;
  }
}

export interface Datagram {
  readonly hex: string;
  readonly address: string;
  readonly port: number;
}

export async function eventually<T>(
  read: () => Promise<T>,
  done: (v: T) => boolean,
  ms = 3000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (done(v) || Date.now() > deadline) return v;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * GET http://127.0.0.1:port/path inside namespace `ns` (a relay's /metrics or /readyz there),
 * through a short-lived node process: this process's sockets live in its own namespace.
 */
export function nsHttpGet(
  ns: string,
  port: number,
  path: string,
): { status: number; body: string } {
  const script = `fetch("http://127.0.0.1:${port}${path}", { signal: AbortSignal.timeout(5000) }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stderr.write(String(e)); process.exit(1); })`;
  return JSON.parse(inNs(ns, process.execPath, "-e", script)) as { status: number; body: string };
}

/** turn.relayed.packets of UDP clients in a relay's Prometheus text, by path and direction. */
export function relayedPacketsIn(prometheus: string): {
  readonly userspace: { toPeer: number; toClient: number };
  readonly kernel: { toPeer: number; toClient: number };
} {
  const value = (direction: string, path: string): number => {
    const line = prometheus
      .split("\n")
      .find(
        (l) =>
          l.startsWith("turn_relayed_packets") &&
          l.includes(`direction="${direction}"`) &&
          l.includes('transport="udp"') &&
          l.includes(`path="${path}"`),
      );
    return line === undefined ? 0 : Number(line.split(" ").at(-1));
  };
  return {
    userspace: {
      toPeer: value("client_to_peer", "userspace"),
      toClient: value("peer_to_client", "userspace"),
    },
    kernel: {
      toPeer: value("client_to_peer", "kernel"),
      toClient: value("peer_to_client", "kernel"),
    },
  };
}
