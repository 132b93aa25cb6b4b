// Runs the echo peer (echo-peer.ts) as a child process and talks to it over IPC.
import { type ChildProcess, fork } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Address } from "./stun-lite.js";

export interface EchoPeer {
  pid: number;
  addresses: Address[];
  /** datagrams and bytes the peer has received (and echoed) so far */
  stats(): Promise<{ received: number; bytes: number }>;
  stop(): Promise<void>;
}

const here = path.dirname(fileURLToPath(import.meta.url));

export async function startEchoPeer(sockets = 4): Promise<EchoPeer> {
  // Ports below 12000: outside the kernel's ephemeral range and the relay range.
  const base = 10000 + Math.floor(Math.random() * 1500);
  const child: ChildProcess = fork(
    path.join(here, "echo-peer.js"),
    [String(sockets), String(base)],
    {
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    },
  );
  const ready = await new Promise<{ ports: number[]; pid: number }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("echo peer did not start")), 10000);
    child.once("message", (m: { type: string; ports: number[]; pid: number }) => {
      clearTimeout(t);
      resolve(m);
    });
    child.once("exit", (code) => reject(new Error(`echo peer exited with ${code}`)));
  });
  let exited = false;
  child.once("exit", () => {
    exited = true;
  });
  return {
    pid: ready.pid,
    addresses: ready.ports.map((port) => ({ address: "127.0.0.1", port })),
    stats: () =>
      new Promise((resolve) => {
        if (exited) {
          resolve({ received: 0, bytes: 0 });
          return;
        }
        const onMsg = (m: { type: string; received: number; bytes: number }) => {
          if (m.type !== "stats") return;
          child.off("message", onMsg);
          resolve({ received: m.received, bytes: m.bytes });
        };
        child.on("message", onMsg);
        child.send({ type: "stats" });
      }),
    stop: () =>
      new Promise<void>((resolve) => {
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
        child.send({ type: "stop" });
      }),
  };
}
