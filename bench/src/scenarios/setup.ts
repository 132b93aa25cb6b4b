// Shared setup: open many allocations with bounded concurrency, each bound to an echo peer.

import type { Address } from "../load/stun-lite.js";
import { type Transport, TurnLoadClient } from "../load/turn-load-client.js";
import type { RunningServer } from "../servers.js";

export const FIRST_CHANNEL = 0x4000; // RFC 8656 §12: channel numbers 0x4000-0x4FFF

export interface OpenedAllocation {
  client: TurnLoadClient;
  peer: Address;
  channel: number;
  index: number;
}

export interface OpenOptions {
  server: RunningServer;
  transport: Transport;
  count: number;
  peers: Address[];
  /** also CreatePermission + ChannelBind towards the peer */
  bind: boolean;
  concurrency: number;
  /** per-allocation user names spread the load over users like real clients */
  userPrefix?: string;
  onProgress?: (done: number) => void;
  /** stop early at the first failure and return what was opened (max-live search) */
  stopOnError?: boolean;
}

export interface OpenResult {
  opened: OpenedAllocation[];
  failures: number;
  firstError: string | undefined;
  elapsedMs: number;
}

export async function openAllocations(o: OpenOptions): Promise<OpenResult> {
  const opened: OpenedAllocation[] = [];
  let next = 0;
  let failures = 0;
  let firstError: string | undefined;
  let stop = false;
  const t0 = performance.now();
  const worker = async () => {
    while (!stop) {
      const index = next++;
      if (index >= o.count) return;
      const peer = o.peers[index % o.peers.length]!;
      const channel = FIRST_CHANNEL + (index % 0x1000);
      let client: TurnLoadClient | undefined;
      // With no relay the client talks to its echo peer socket itself.
      const direct = o.server.kind === "no-relay";
      // The floor speaks no TURN: the connected socket is the "allocation", and the channel
      // number in its first ChannelData picks the echo peer (src/floor/floor.ts).
      const turn = !direct && o.server.kind !== "floor";
      try {
        client = await TurnLoadClient.connect({
          server: direct ? peer : { address: o.server.host, port: o.server.port },
          transport: o.transport,
          token: o.server.token,
          user: `${o.userPrefix ?? "bench"}${index % 1000}`,
          raw: direct,
        });
        if (turn) await client.allocate();
        if (o.bind && turn) {
          await client.createPermission(peer);
          await client.channelBind(peer, channel);
        }
        opened.push({ client, peer, channel, index });
        o.onProgress?.(opened.length);
      } catch (e) {
        failures++;
        firstError ??= e instanceof Error ? e.message : String(e);
        await client?.close();
        if (o.stopOnError) stop = true;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.count) }, worker));
  opened.sort((a, b) => a.index - b.index);
  return { opened, failures, firstError, elapsedMs: performance.now() - t0 };
}

export async function closeAll(list: { client: TurnLoadClient }[]): Promise<void> {
  await Promise.all(list.map((a) => a.client.close()));
}
