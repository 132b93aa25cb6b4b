// Starts the floor forwarder (floor.ts) as a child process, the way the relays are started:
// its own process on loopback, CPU and RSS read from /proc by PID, stopped by PID.
import { type ChildProcess, fork } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { batchIoAvailability } from "@turnpike/udp-batch";
import { killByPid, live, tail, trackPid } from "../children.js";
import type { Address } from "../load/stun-lite.js";
import { freePort } from "../ports.js";
import { type RunningServer, repoRoot, type UdpIo } from "../servers.js";
import type { FloorStats } from "./floor.js";

/** The compiled forwarder (also when this module runs from source, as in the tests). */
const floorJs = path.join(repoRoot, "bench/dist/floor/floor.js");
const IPC_TIMEOUT_MS = 5000;

/** Why the floor cannot run on this I/O here, or undefined when it can. */
export function floorUnavailable(io: UdpIo): string | undefined {
  if (io === "dgram") return undefined;
  const a = batchIoAvailability();
  return a.available ? undefined : `@turnpike/udp-batch unavailable: ${a.reason}`;
}

/** The UDP path Turnpike takes by default here ("auto": batch when the native module loads). */
export function defaultUdpIo(): UdpIo {
  return batchIoAvailability().available ? "batch" : "dgram";
}

/** Waits for one IPC message of `type`; rejects when the child exits or does not answer. */
function answer<T>(child: ChildProcess, type: string, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      child.off("message", onMessage);
      child.off("exit", onExit);
    };
    const onMessage = (m: { type?: string }) => {
      if (m?.type !== type) return;
      done();
      resolve(m as T);
    };
    const onExit = (code: number | null, sig: string | null) => {
      done();
      reject(new Error(`floor exited (code ${code}, signal ${sig}) while ${what}`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`floor did not answer within ${IPC_TIMEOUT_MS} ms while ${what}`));
    }, IPC_TIMEOUT_MS);
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

export async function startFloor(io: UdpIo): Promise<RunningServer> {
  const why = floorUnavailable(io);
  if (why) throw new Error(why);
  if (!existsSync(floorJs)) {
    throw new Error(
      `the floor is not built (${path.relative(process.cwd(), floorJs)}): run pnpm exec tsc -b`,
    );
  }
  const port = await freePort(["udp"]);
  const args = [io, "127.0.0.1", String(port)];
  const child = fork(floorJs, args, { stdio: ["ignore", "pipe", "pipe", "ipc"] });
  trackPid(child);
  const out: string[] = [];
  tail(child, out);
  // Sending to a child that just died emits 'error' on it: its exit is reported instead.
  child.on("error", () => {});
  const send = (m: object) => {
    if (child.connected) child.send(m, () => {});
  };
  const server: RunningServer = {
    kind: "floor",
    name: `floor (${io})`,
    host: "127.0.0.1",
    port,
    pid: child.pid,
    token: "",
    realm: "",
    command: `node ${path.relative(repoRoot, floorJs)} ${args.join(" ")}`,
    notes: [
      `a forwarder on ${io === "batch" ? "@turnpike/udp-batch" : "node:dgram"} without TURN: client <-> socket A | socket B per client <-> echo peer; ChannelData length read, header written back, nothing else`,
    ],
    udpIo: io,
    floor: {
      setPeers: async (peers: Address[]) => {
        const ack = answer(child, "peers", "taking the echo peers");
        send({ type: "peers", peers });
        await ack;
      },
      stats: async () => {
        const reply = answer<{ stats: FloorStats }>(child, "stats", "asked for its counters");
        send({ type: "stats" });
        return (await reply).stats;
      },
    },
    stop: async () => {
      live.delete(server);
      await killByPid(child);
    },
  };
  live.add(server);
  try {
    await answer(child, "ready", "starting");
  } catch (e) {
    await server.stop();
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`${msg}: ${out.slice(-5).join(" / ") || "no output"}`);
  }
  return server;
}
