// coturn's command-line clients, driven from tests with hard timeouts:
//   turnutils_uclient     TURN load client (allocations, permissions, channels, RFC 6062)
//   turnutils_peer        UDP echo peer (listens on PORT and PORT+1, the "RTCP" peer port)
//   turnutils_stunclient  one STUN Binding, prints the reflexive address
// Quirks seen with coturn 4.6.1: uclient writes every summary line to both stdout and stderr
// (we de-duplicate); it waits ~2-3 s before sending and ~1-2 s after, so a run costs >= 3 s no
// matter how few messages; RTT is reported in whole milliseconds (0 on loopback); a failed
// allocation prints "ERROR: Cannot complete Allocation" and exits 255 within milliseconds.
import { createSocket } from "node:dgram";
import { freePort } from "./ports.js";
import { type ManagedProcess, spawnManaged, spawnNamespace } from "./process.js";

export interface UclientOptions {
  host?: string;
  port: number;
  /** "tcp" = client<->server over TCP (-t). Default "udp". */
  transport?: "udp" | "tcp";
  /** RFC 6062 TCP relaying (-T: implies -t -y -c; no peer). */
  tcpRelay?: boolean;
  /** Send/Data indications instead of ChannelData (-s). */
  sendIndications?: boolean;
  /** Client-to-client through two relays instead of an external peer (-y). */
  clientToClient?: boolean;
  /** Allocations in RTP/RTCP pairs (omit -c). Default false. */
  rtcp?: boolean;
  /** -m number of allocations (default 1). */
  clients?: number;
  /** -n messages per allocation (default 5). */
  messages?: number;
  /** -l payload bytes (default 100). */
  messageSize?: number;
  /** -z per-allocation send interval in ms (default 20). */
  intervalMs?: number;
  /** TURN REST API secret (-W); `user` then becomes the name part of "<expiry>:<user>". */
  secret?: string;
  user?: string;
  password?: string;
  /** Echo peer (-e / -r); required unless tcpRelay or clientToClient. */
  peer?: { host?: string; port: number };
  /** -L local address (default 127.0.0.1). */
  localAddress?: string;
  extraArgs?: string[];
  /** Hard kill after this many ms (default 30 000). */
  timeoutMs?: number;
}

export interface UclientResult {
  sentMsgs: number;
  recvMsgs: number;
  lostPackets: number;
  avgRttMs: number;
  avgJitterMs: number;
  /** De-duplicated lines mentioning ERROR or a STUN error code. */
  errors: string[];
  exitCode: number | null;
  timedOut: boolean;
  durationMs: number;
  args: string[];
  log: string;
}

export function uclientArgs(o: UclientOptions): string[] {
  const args = ["-p", String(o.port), "-L", o.localAddress ?? "127.0.0.1"];
  args.push("-m", String(o.clients ?? 1), "-n", String(o.messages ?? 5));
  args.push("-l", String(o.messageSize ?? 100), "-z", String(o.intervalMs ?? 20));
  if (o.secret !== undefined) args.push("-W", o.secret);
  if (o.user !== undefined) args.push("-u", o.user);
  if (o.password !== undefined) args.push("-w", o.password);
  if (o.tcpRelay) {
    args.push("-T");
  } else {
    if (o.transport === "tcp") args.push("-t");
    if (o.sendIndications) args.push("-s");
    if (o.clientToClient) args.push("-y");
    if (!o.rtcp) args.push("-c");
    if (o.peer) args.push("-e", o.peer.host ?? "127.0.0.1", "-r", String(o.peer.port));
  }
  args.push(...(o.extraArgs ?? []), o.host ?? "127.0.0.1");
  return args;
}

function lastNumber(log: string, re: RegExp): number {
  const all = [...log.matchAll(re)];
  const m = all[all.length - 1];
  return m?.[1] !== undefined ? Number(m[1]) : Number.NaN;
}

/** Parses uclient's closing summary; fields it did not print come back as NaN. */
export function parseUclientSummary(
  log: string,
): Omit<UclientResult, "exitCode" | "timedOut" | "durationMs" | "args" | "log"> {
  // The closing totals are the "tot_send_msgs=S, tot_recv_msgs=R" line WITHOUT "msz=" (the
  // per-second progress lines carry msz= and per-allocation numbers).
  const totals = [...log.matchAll(/^(?!.*msz=).*tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$/gm)];
  const last = totals[totals.length - 1];
  const errors = [
    ...new Set(
      log
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => /ERROR|error \d{3}|Unauthorized|cannot/i.test(l)),
    ),
  ];
  return {
    sentMsgs: last ? Number(last[1]) : Number.NaN,
    recvMsgs: last ? Number(last[2]) : Number.NaN,
    lostPackets: lastNumber(log, /Total lost packets (\d+)/g),
    avgRttMs: lastNumber(log, /Average round trip delay ([\d.]+) ms/g),
    avgJitterMs: lastNumber(log, /Average jitter ([\d.]+) ms/g),
    errors,
  };
}

/** Runs turnutils_uclient to completion (or its hard timeout) and parses the summary. */
export async function runUclient(opts: UclientOptions): Promise<UclientResult> {
  const args = uclientArgs(opts);
  const t0 = performance.now();
  const proc = spawnManaged("turnutils_uclient", args);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.child.kill("SIGKILL");
  }, opts.timeoutMs ?? 30_000);
  const exit = await proc.waitExit();
  clearTimeout(timer);
  // stdout and stderr carry the same lines; keep stdout's order and add stderr-only lines.
  const seen = new Set(proc.stdout.split("\n"));
  const extra = proc.stderr.split("\n").filter((l) => l && !seen.has(l));
  const log = [proc.stdout, ...extra].join("\n");
  return {
    ...parseUclientSummary(log),
    exitCode: exit.code,
    timedOut,
    durationMs: Math.round(performance.now() - t0),
    args,
    log,
  };
}

export interface PeerHandle {
  host: string;
  port: number;
  pid: number;
  process: ManagedProcess;
  stop(): Promise<void>;
}

/** Starts turnutils_peer (UDP echo) on 127.0.0.1:port (a free port with port+1 free by default). */
export async function startPeer(opts: { port?: number } = {}): Promise<PeerHandle> {
  const host = "127.0.0.1";
  const port = opts.port ?? (await freePort({ alsoNext: true }));
  const proc = spawnManaged("turnutils_peer", ["-L", host, "-p", String(port)]);
  const stop = async () => {
    await proc.stop("SIGTERM", 2000);
  };
  try {
    await waitForUdpEcho(host, port, 5000);
  } catch (e) {
    await stop();
    throw new Error(`turnutils_peer not echoing on ${host}:${port}: ${(e as Error).message}`);
  }
  return { host, port, pid: proc.pid, process: proc, stop };
}

/**
 * Resolves once `host:port` echoes a UDP datagram back (retried every 100 ms); inside the
 * namespace processes are spawned in (process.ts), asked from a probe process there.
 */
export function waitForUdpEcho(host: string, port: number, totalMs: number): Promise<void> {
  if (spawnNamespace() !== undefined) return waitForUdpEchoInNamespace(host, port, totalMs);
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    const probe = Buffer.from("turnpike-echo-probe");
    const done = (err?: Error) => {
      clearInterval(resend);
      clearTimeout(timer);
      sock.close();
      if (err) reject(err);
      else resolve();
    };
    const resend = setInterval(() => sock.send(probe, port, host), 100);
    const timer = setTimeout(() => done(new Error(`no echo within ${totalMs} ms`)), totalMs);
    sock.on("message", (msg) => {
      if (msg.equals(probe)) done();
    });
    sock.on("error", (e) => done(e));
    sock.send(probe, port, host);
  });
}

async function waitForUdpEchoInNamespace(host: string, port: number, totalMs: number) {
  const probe = `const s = require("node:dgram").createSocket("udp4");
    const p = Buffer.from("turnpike-echo-probe");
    s.on("message", (m) => { if (m.equals(p)) process.exit(0); });
    setInterval(() => s.send(p, ${port}, "${host}"), 100);
    setTimeout(() => process.exit(1), ${totalMs});
    s.send(p, ${port}, "${host}");`;
  const exit = await spawnManaged(process.execPath, ["-e", probe]).waitExit();
  if (exit.code !== 0) throw new Error(`no echo within ${totalMs} ms`);
}

export interface StunclientResult {
  exitCode: number | null;
  timedOut: boolean;
  /** "IPv4. UDP reflexive addr: 127.0.0.1:PORT" parsed; undefined when none was printed. */
  reflexive?: { address: string; port: number };
  log: string;
}

/** One Binding with turnutils_stunclient (bounded; `-f` RFC 5780 mode is not used: it hangs on one-IP servers). */
export async function runStunclient(
  host: string,
  port: number,
  opts: { timeoutMs?: number } = {},
): Promise<StunclientResult> {
  const proc = spawnManaged("turnutils_stunclient", ["-p", String(port), "-L", "127.0.0.1", host]);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.child.kill("SIGKILL");
  }, opts.timeoutMs ?? 10_000);
  const exit = await proc.waitExit();
  clearTimeout(timer);
  const log = `${proc.stdout}${proc.stderr}`;
  const m = /reflexive addr: ([0-9.]+|\[?[0-9a-fA-F:]+\]?):(\d+)/.exec(log);
  return {
    exitCode: exit.code,
    timedOut,
    reflexive: m ? { address: m[1]!.replace(/^\[|\]$/g, ""), port: Number(m[2]) } : undefined,
    log,
  };
}
