// The echo peer, a child process of its own so its CPU stays apart from the generator's: the
// native one (bench/native/turnpike-echo.c, a batch per system call) or the JavaScript one
// (echo-peer.ts, node:dgram), over IPC.
import { type ChildProcess, fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { live, type Stoppable, trackPid } from "../children.js";
import type { GeneratorKind } from "./generator.js";
import { LineProcess } from "./native.js";
import type { Address } from "./stun-lite.js";

export interface EchoPeer {
  kind: GeneratorKind;
  pid: number;
  addresses: Address[];
  /** datagrams and bytes the peer has received (and echoed) so far */
  stats(): Promise<{ received: number; bytes: number }>;
  stop(): Promise<void>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const STATS_TIMEOUT_MS = 5000;

/** The echo peer that goes with a generator: native with the native one, else JavaScript. */
export function startEchoPeer(kind: GeneratorKind, sockets = 4): Promise<EchoPeer> {
  // Ports below 12000: outside the kernel's ephemeral range and the relay range.
  const base = 10000 + Math.floor(Math.random() * 1500);
  return kind === "native" ? startNativeEchoPeer(sockets, base) : startJsEchoPeer(sockets, base);
}

async function startNativeEchoPeer(sockets: number, base: number): Promise<EchoPeer> {
  const p = new LineProcess("echo peer", "turnpike-echo", [
    "127.0.0.1",
    String(sockets),
    String(base),
  ]);
  try {
    const ready = await p.expect("ready", 10_000);
    return {
      kind: "native",
      pid: p.pid,
      addresses: ready.slice(1).map((port) => ({ address: "127.0.0.1", port: Number(port) })),
      stats: async () => {
        const [received, bytes] = await p.request("stats", "stats", STATS_TIMEOUT_MS);
        return { received: Number(received), bytes: Number(bytes) };
      },
      stop: () => p.stop(),
    };
  } catch (e) {
    await p.stop();
    throw e;
  }
}

async function startJsEchoPeer(sockets: number, base: number): Promise<EchoPeer> {
  const child: ChildProcess = fork(
    path.join(here, "echo-peer.js"),
    [String(sockets), String(base)],
    {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    },
  );
  trackPid(child);
  const ready = await new Promise<{ ports: number[]; pid: number }>((resolve, reject) => {
    const fail = (e: Error) => {
      clearTimeout(t);
      try {
        if (child.pid !== undefined) process.kill(child.pid, "SIGKILL");
      } catch {
        // gone
      }
      reject(e);
    };
    const t = setTimeout(() => fail(new Error("echo peer did not start")), 10000);
    child.once("message", (m: { type: string; ports: number[]; pid: number }) => {
      clearTimeout(t);
      resolve(m);
    });
    child.once("error", (e) => fail(new Error(`echo peer: ${e.message}`)));
    child.once("exit", (code) => fail(new Error(`echo peer exited with ${code}`)));
  });
  let exited = false;
  let exitReason = "";
  child.once("exit", (code, sig) => {
    exited = true;
    exitReason = `echo peer exited (code ${code}, signal ${sig})`;
    live.delete(peer);
  });
  // Sending to a child that just died emits 'error' (ERR_IPC_CHANNEL_CLOSED) on it: without a
  // listener that would crash the bench. The exit handler above reports the death instead.
  child.on("error", () => {});
  /** Sends over IPC if the channel is still open; false when the peer is gone. */
  const send = (m: { type: string }): boolean => {
    if (exited || !child.connected) return false;
    // With a callback a failed delivery is reported there, not as an 'error' event; the
    // peer's 'exit' then settles whatever waits on it.
    child.send(m, () => {});
    return true;
  };
  const peer: EchoPeer & Stoppable = {
    kind: "js",
    pid: ready.pid,
    addresses: ready.ports.map((port) => ({ address: "127.0.0.1", port })),
    stats: () =>
      new Promise((resolve, reject) => {
        if (exited) {
          reject(new Error(exitReason));
          return;
        }
        // Settled by the answer, the peer's exit or a timeout, whichever comes first.
        const done = () => {
          clearTimeout(timer);
          child.off("message", onMsg);
          child.off("exit", onExit);
        };
        const onMsg = (m: { type: string; received: number; bytes: number }) => {
          if (m.type !== "stats") return;
          done();
          resolve({ received: m.received, bytes: m.bytes });
        };
        const onExit = () => {
          done();
          reject(new Error(`${exitReason} while asked for its counters`));
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(`echo peer did not answer for its counters within ${STATS_TIMEOUT_MS} ms`),
          );
        }, STATS_TIMEOUT_MS);
        child.on("message", onMsg);
        child.once("exit", onExit);
        if (!send({ type: "stats" })) onExit();
      }),
    stop: () =>
      new Promise<void>((resolve) => {
        live.delete(peer);
        if (exited || child.pid === undefined) {
          resolve();
          return;
        }
        const t = setTimeout(() => {
          try {
            process.kill(child.pid!, "SIGKILL");
          } catch {
            // gone
          }
          resolve();
        }, 2000);
        child.once("exit", () => {
          clearTimeout(t);
          resolve();
        });
        if (!send({ type: "stop" })) {
          try {
            process.kill(child.pid, "SIGTERM");
          } catch {
            // gone
          }
        }
      }),
  };
  live.add(peer);
  return peer;
}
