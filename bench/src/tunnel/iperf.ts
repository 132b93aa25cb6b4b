// iperf3 as the private service behind each tunnel path, and the client that measures through it.
import { execFile } from "node:child_process";
import { type Child, startChild, trackPid, waitForOutput } from "../children.js";
import { freeTcpPort } from "../ports.js";

export interface IperfServer {
  port: number;
  child: Child;
}

/**
 * `iperf3 -s` on 127.0.0.1. Not `-1` (one test, then exit): readiness probes through a tunnel
 * reach the server too, and a persistent server shrugs them off ("unable to receive
 * parameters") and keeps serving. One fresh server per path, stopped by PID afterwards.
 */
export async function startIperfServer(iperf: string): Promise<IperfServer> {
  const port = await freeTcpPort();
  // --forceflush: the "Server listening" line must arrive through a pipe, not sit in a buffer.
  const child = startChild("iperf3 server", iperf, [
    "-s",
    "-B",
    "127.0.0.1",
    "-p",
    String(port),
    "--forceflush",
  ]);
  try {
    await waitForOutput(child, /Server listening/, 5000);
  } catch (e) {
    await child.stop();
    throw e;
  }
  return { port, child };
}

export interface IperfResult {
  /** sender-side goodput, Mbit/s */
  sentMbps: number;
  /** receiver-side goodput, Mbit/s (what actually crossed the path) */
  receivedMbps: number;
  retransmits: number | null;
  seconds: number;
  bytesReceived: number;
  /** iperf3's own CPU, % of one core (client = sender, server = receiver) */
  clientCpuPct: number | null;
  serverCpuPct: number | null;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bits_per_second?: number; retransmits?: number; seconds?: number };
    sum_received?: { bits_per_second?: number; bytes?: number; seconds?: number };
    cpu_utilization_percent?: { host_total?: number; remote_total?: number };
  };
}

/** The iperf3 arguments every path uses, so the report can print them. */
export function iperfClientArgs(host: string, port: number, seconds: number): string[] {
  return [
    "-c",
    host,
    "-p",
    String(port),
    "-t",
    String(seconds),
    "--bind",
    "127.0.0.1",
    "--connect-timeout",
    "5000",
    "-J",
  ];
}

/** Runs one iperf3 TCP test (client -> server, one stream) and parses its JSON. */
export function runIperfClient(
  iperf: string,
  host: string,
  port: number,
  seconds: number,
): Promise<IperfResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      iperf,
      iperfClientArgs(host, port, seconds),
      { timeout: (seconds + 20) * 1000, maxBuffer: 16 << 20, killSignal: "SIGKILL" },
      (err, stdout, stderr) => {
        let j: IperfJson | undefined;
        try {
          j = JSON.parse(stdout) as IperfJson;
        } catch {
          // reported below
        }
        if (!j || j.error || !j.end?.sum_received) {
          const why = j?.error ?? (err ? err.message : "no JSON result");
          reject(new Error(`iperf3 -c ${host}:${port}: ${why} ${stderr.trim()}`.trim()));
          return;
        }
        const sent = j.end.sum_sent ?? {};
        const recv = j.end.sum_received;
        const cpu = j.end.cpu_utilization_percent;
        resolve({
          sentMbps: (sent.bits_per_second ?? 0) / 1e6,
          receivedMbps: (recv.bits_per_second ?? 0) / 1e6,
          retransmits: sent.retransmits ?? null,
          seconds: recv.seconds ?? sent.seconds ?? seconds,
          bytesReceived: recv.bytes ?? 0,
          clientCpuPct: cpu?.host_total ?? null,
          serverCpuPct: cpu?.remote_total ?? null,
        });
      },
    );
    trackPid(child);
  });
}
