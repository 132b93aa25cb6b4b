// Micro-benchmarks: ns per operation, with warm-up and several rounds (median reported).
// Rows that need parts of relay-core that are not there yet print "not available".
import stun from "stun";
import {
  Attr,
  bindingRequest,
  Class,
  decode,
  encode,
  Method,
  messageType,
} from "./load/stun-lite.js";

export interface MicroRow {
  name: string;
  nsPerOp: number | null;
  note: string;
}

/** Runs fn in rounds of `iterations`, returns the median ns/op over the rounds. */
export function measure(fn: () => unknown, iterations: number, rounds = 7): number {
  let sink = 0;
  for (let i = 0; i < Math.min(iterations, 20000); i++) if (fn()) sink++; // warm-up / JIT
  const perOp: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) if (fn()) sink++;
    perOp.push(Number(process.hrtime.bigint() - t0) / iterations);
  }
  perOp.sort((a, b) => a - b);
  if (sink === -1) console.log(sink); // keeps the calls observable to the optimiser
  return perOp[Math.floor(perOp.length / 2)]!;
}

type CoreModule = Record<string, unknown>;

async function loadCore(): Promise<CoreModule | undefined> {
  try {
    return (await import("@turnpike/relay-core")) as CoreModule;
  } catch {
    return undefined;
  }
}

export async function microRows(quick: boolean): Promise<MicroRow[]> {
  const n = quick ? 20000 : 200000;
  // A Binding request as browsers send it: SOFTWARE + FINGERPRINT.
  const binding = encode(
    messageType(Method.Binding, Class.Request),
    bindingRequest().subarray(8, 20),
    [[Attr.Software, Buffer.from("turnpike-bench micro")]],
    { fingerprint: true },
  );
  const rows: MicroRow[] = [];
  const core = await loadCore();
  const decodeStun = core?.decodeStun;
  if (typeof decodeStun === "function") {
    rows.push({
      name: "decode STUN Binding request: relay-core",
      nsPerOp: measure(() => decodeStun(binding), n),
      note: "decodeStun",
    });
  } else {
    rows.push({
      name: "decode STUN Binding request: relay-core",
      nsPerOp: null,
      note: "not available (no decodeStun export yet)",
    });
  }
  rows.push({
    name: "decode STUN Binding request: stun (npm)",
    nsPerOp: measure(() => stun.decode(binding), n),
    note: "stun 2.1.0 decode()",
  });
  rows.push({
    name: "decode STUN Binding request: bench stun-lite",
    nsPerOp: measure(() => decode(binding), n),
    note: "the generator's own minimal decoder, for scale",
  });
  // Server-level rows: need relay-core's server state machine (feature check on exports).
  const serverCtor = core?.TurnServer ?? core?.RelayServer ?? core?.Server;
  if (typeof serverCtor !== "function") {
    rows.push({
      name: "route 100-byte ChannelData through relay-core server",
      nsPerOp: null,
      note: "not available (no server export yet)",
    });
    rows.push({
      name: "handle authenticated Refresh in relay-core server",
      nsPerOp: null,
      note: "not available (no server export yet)",
    });
  } else {
    // TODO(micro): drive the server once its input/output API is settled.
    rows.push({
      name: "route 100-byte ChannelData through relay-core server",
      nsPerOp: null,
      note: "server export found; driver not written yet",
    });
    rows.push({
      name: "handle authenticated Refresh in relay-core server",
      nsPerOp: null,
      note: "server export found; driver not written yet",
    });
  }
  return rows;
}

export async function runMicro(quick: boolean): Promise<MicroRow[]> {
  const rows = await microRows(quick);
  const w = Math.max(...rows.map((r) => r.name.length));
  process.stdout.write(
    `\n## micro (ns/op, median of 7 rounds)\n| ${"benchmark".padEnd(w)} |     ns/op | note\n|${"-".repeat(w + 2)}|----------:|------\n`,
  );
  for (const r of rows) {
    const v = r.nsPerOp === null ? "n/a" : r.nsPerOp.toFixed(0);
    process.stdout.write(`| ${r.name.padEnd(w)} | ${v.padStart(9)} | ${r.note}\n`);
  }
  return rows;
}
