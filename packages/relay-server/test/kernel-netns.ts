// What the kernel data path's suites of the real relay share: the three namespaces of
// test-support's topology (client, relay, peer joined by veths, IPv4 and IPv6), an agent in
// each (fixtures/ns-agent.mjs: a TURN client, echo peers, HTTP and TCX inside), the real
// turnpike-relay started in the relay's namespace, and what the suites read back: the relay's
// Prometheus counters (userspace vs kernel), the kernel's own maps (bpftool), log lines.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  inNs,
  makeTopology,
  NamespaceAgent,
  relayedPacketsIn,
  type Topology,
} from "@turnpike/test-support/netns";
import {
  type ManagedProcess,
  spawnInNamespace,
  spawnManaged,
} from "@turnpike/test-support/process";
import { countersBy } from "@turnpike/test-support/prometheus";
import { startTurnpike, TURNPIKE_BIN, type TurnpikeHandle } from "@turnpike/test-support/turnpike";

const NS_AGENT = fileURLToPath(new URL("./fixtures/ns-agent.mjs", import.meta.url));

export const TOKEN = "kernel-path-token";
export const LISTEN_PORT = 3478;
export const METRICS_PORT = 9464;
export const USERS = { alice: "alice-secret", bob: "bob-secret" } as const;

export interface KernelNet {
  readonly t: Topology;
  readonly client: NamespaceAgent;
  readonly peer: NamespaceAgent;
  /** In the relay's namespace: HTTP to the relay's listeners, TCX questions. */
  readonly observer: NamespaceAgent;
  /** The peer's echo sockets: `peer4`, `peer6`, and `forbidden4` (an address the policy denies). */
  readonly peerPorts: Record<string, number>;
}

/** The forbidden peer: a private address the relay's --allow-peer does not name. */
export const FORBIDDEN_PEER = "10.201.2.3";

export async function makeKernelNet(
  tag: string,
  options: { xdpTargets?: boolean } = {},
): Promise<KernelNet> {
  const t = makeTopology(tag, options);
  inNs(t.peer, "ip", "addr", "add", `${FORBIDDEN_PEER}/24`, "dev", `${tag}pr`);
  const [client, peer, observer] = await Promise.all([
    NamespaceAgent.start(NS_AGENT, t.client),
    NamespaceAgent.start(NS_AGENT, t.peer),
    NamespaceAgent.start(NS_AGENT, t.relay),
  ]);
  const peerPorts: Record<string, number> = {};
  for (const f of [4, 6] as const) {
    peerPorts[`peer${f}`] = await peer.call<number>("socket", {
      name: `peer${f}`,
      address: t.addresses[f].peer,
      port: 0,
      echo: true,
    });
  }
  peerPorts.forbidden4 = await peer.call<number>("socket", {
    name: "forbidden4",
    address: FORBIDDEN_PEER,
    port: 0,
    echo: true,
  });
  return { t, client, peer, observer, peerPorts };
}

/**
 * turnpike-relay in the relay's namespace, as an operator runs it: listening on the client-side
 * addresses, relaying from the peer-side ones, the peers allowed by name, the kernel path asked
 * for explicitly; `extra` adds to (or, for a later flag, overrides) the command line.
 */
export async function startRelayIn(
  net: KernelNet,
  extra: readonly string[] = [],
  ports: { listen?: number; metrics?: number; loopback?: number } = {},
): Promise<TurnpikeHandle> {
  const a = net.t.addresses;
  const listen = ports.listen ?? LISTEN_PORT;
  spawnInNamespace(net.t.relay);
  try {
    return await startTurnpike({
      // The harness's own listener on the namespace's loopback (its readiness and log lines):
      // a free port unless given.
      ...(ports.loopback !== undefined ? { port: ports.loopback } : {}),
      minPort: 49152,
      maxPort: 65535,
      token: TOKEN,
      // The same-host case: a client and a peer on the relay's own loopback.
      allowLoopbackPeers: true,
      logLevel: "debug",
      extraArgs: [
        "--listen",
        `${a[4].listener}:${listen}`,
        "--listen",
        `[${a[6].listener}]:${listen}`,
        "--relay-ip",
        a[4].relayed,
        "--relay-ip",
        a[6].relayed,
        "--allow-peer",
        a[4].peer,
        "--allow-peer",
        a[6].peer,
        "--user",
        `alice:${USERS.alice}`,
        "--user",
        `bob:${USERS.bob}`,
        "--prometheus-listen",
        `127.0.0.1:${ports.metrics ?? METRICS_PORT}`,
        "--kernel-path",
        "tc",
        ...extra,
      ],
    });
  } finally {
    spawnInNamespace(undefined);
  }
}

/** A datagram an agent received: its bytes, and the generator's stamp when it carries one. */
export interface Received {
  hex: string;
  stamp?: { at: number; seq: number };
}

/** What `read` returns once it holds `count` items, or what it holds after `ms`. */
export async function waitFor<T>(read: () => Promise<T[]>, count: number, ms = 5000): Promise<T[]> {
  const end = Date.now() + ms;
  for (;;) {
    const list = await read();
    if (list.length >= count || Date.now() > end) return list;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** What the relay says of the path it runs: /readyz (parsed) and /metrics (text). */
export async function pathReport(
  net: KernelNet,
  relay: TurnpikeHandle,
): Promise<{ readyz: unknown; metrics: string }> {
  const readyz = await net.observer.call<{ body: string }>("http", {
    port: relay.healthPort,
    path: "/readyz",
  });
  const metrics = await net.observer.call<{ body: string }>("http", {
    port: METRICS_PORT,
    path: "/metrics",
  });
  return { readyz: JSON.parse(readyz.body), metrics: metrics.body };
}

/**
 * A TURN client in the client's namespace with an allocation of `family` on the relay: its
 * relayed address, and the client's own (the socket it talks to the relay from).
 */
export async function allocateIn(
  net: KernelNet,
  name: string,
  family: 4 | 6,
  user: keyof typeof USERS = "alice",
  port = LISTEN_PORT,
): Promise<{
  relayed: { address: string; port: number };
  local: { address: string; port: number };
}> {
  const a = net.t.addresses[family];
  const local = await net.client.call<{ address: string; port: number }>("turn", {
    name,
    host: a.listener,
    port,
    localAddress: a.client,
    username: user,
    password: USERS[user],
  });
  const r = await net.client.call<{ code: number; relayed: { address: string; port: number }[] }>(
    "allocate",
    { name, family },
  );
  if (r.code !== 0 || r.relayed[0] === undefined) throw new Error(`Allocate failed: ${r.code}`);
  return { relayed: r.relayed[0], local };
}

export type Relayed = ReturnType<typeof relayedPacketsIn>;

/** turn.relayed.packets of UDP clients, by path, from the relay's /metrics. */
export async function relayedPackets(net: KernelNet): Promise<Relayed> {
  const r = await net.observer.call<{ status: number; body: string }>("http", {
    port: METRICS_PORT,
    path: "/metrics",
  });
  return relayedPacketsIn(r.body);
}

/**
 * turn.relay.kernel_path.datagrams by outcome from a /metrics text: what the kernel program
 * relayed, dropped, and left to userspace and why (pass-*).
 */
export function kernelOutcomesIn(prometheus: string): Map<string, number> {
  return countersBy(prometheus, /^turn_relay_kernel_path_datagrams(_total)?$/, "outcome");
}

/** The same from the relay's /metrics on `port` (the suite's relay by default). */
export async function kernelOutcomes(
  net: KernelNet,
  port = METRICS_PORT,
): Promise<Map<string, number>> {
  const r = await net.observer.call<{ status: number; body: string }>("http", {
    port,
    path: "/metrics",
  });
  return kernelOutcomesIn(r.body);
}

/** The outcomes that grew from `before` to `after`, and by how much (for a failure's message). */
export function grownOutcomes(
  before: Map<string, number>,
  after: Map<string, number>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [outcome, n] of after) {
    const d = n - (before.get(outcome) ?? 0);
    if (d !== 0) out[outcome] = d;
  }
  return out;
}

/** The BPF maps process `pid` holds, by name, with their ids (from /proc/PID/fdinfo). */
export function mapsOf(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const fd of readdirSync(`/proc/${pid}/fdinfo`)) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, "utf8");
    } catch {
      continue;
    }
    const id = /^map_id:\s*(\d+)/m.exec(info)?.[1];
    if (id === undefined) continue;
    const shown = JSON.parse(
      execFileSync("bpftool", ["-j", "map", "show", "id", id], { timeout: 10_000 }).toString(),
    ) as { name?: string };
    if (shown.name !== undefined) out.set(shown.name, Number(id));
  }
  return out;
}

/** How many entries map `name` of process `pid` holds (bpftool reads it: the kernel's view). */
export function mapEntries(pid: number, name: string): number {
  const id = mapsOf(pid).get(name);
  if (id === undefined) throw new Error(`process ${pid} holds no map ${name}`);
  const dump = JSON.parse(
    execFileSync("bpftool", ["-j", "map", "dump", "id", String(id)], {
      timeout: 10_000,
    }).toString(),
  ) as unknown[];
  return dump.length;
}

/** Programs at the TCX ingress of each of the relay's interfaces (and its loopback). */
export async function tcxPrograms(net: KernelNet): Promise<number[]> {
  return Promise.all(
    ["lo", ...net.t.relayInterfaces].map((name) =>
      net.observer.call<number | null>("tcxPrograms", { name }).then((n) => n ?? -1),
    ),
  );
}

/** capsh: root without CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN (gone from the bounding set). */
export const WITHOUT_CAPABILITIES = ["--drop=cap_bpf,cap_net_admin,cap_sys_admin"];
/**
 * capsh: user nobody with CAP_BPF and CAP_NET_ADMIN as ambient capabilities and nothing else,
 * as the systemd drop-in (deploy/systemd/turnpike-relay-kernel-path.conf) starts the relay.
 */
export const AMBIENT_ONLY = [
  "--caps=cap_bpf,cap_net_admin+eip cap_setpcap,cap_setuid,cap_setgid+ep",
  "--keep=1",
  "--user=nobody",
  "--addamb=cap_bpf,cap_net_admin",
];

/**
 * turnpike-relay in the relay's namespace under capsh with `capsh` (WITHOUT_CAPABILITIES,
 * AMBIENT_ONLY): resolves once it listens or has exited.
 */
export async function startUnderCapsh(
  net: KernelNet,
  capsh: readonly string[],
  kernelPath: "auto" | "tc",
  port: number,
): Promise<ManagedProcess> {
  const a = net.t.addresses;
  const argv = [
    process.execPath,
    TURNPIKE_BIN,
    "--listen",
    `${a[4].listener}:${port}`,
    "--relay-ip",
    a[4].relayed,
    "--health-listen",
    "off",
    "--log-level",
    "info",
    "--kernel-path",
    kernelPath,
  ];
  spawnInNamespace(net.t.relay);
  const proc = spawnManaged("capsh", [...capsh, "--", "-c", `exec ${argv.join(" ")}`], {
    env: { ...process.env, TURNPIKE_TOKEN: TOKEN },
  });
  spawnInNamespace(undefined);
  const end = Date.now() + 15_000;
  while (!proc.exited && !/ INFO listening /.test(proc.stderr) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}
