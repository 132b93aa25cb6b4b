// The command line of turnpike-bench: its options, and the plan they make (which columns, which
// generator, which floors), checked before anything starts (also before the bench enters its
// network namespace, so a mistyped option fails at once).
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { defaultUdpIo } from "./floor/start.js";
import { GENERATOR_KINDS, type GeneratorKind } from "./load/generator.js";
import { nativeUnavailable } from "./load/native.js";
import { BENCH_LOCAL_PORTS } from "./ports.js";
import { defaultScenarios, scenarios } from "./scenarios/index.js";
import type { BenchOptions, FloorKind } from "./scenarios/types.js";
import {
  defaultSettings,
  KERNEL_PATHS,
  type KernelPath,
  type ServerSettings,
  type TurnpikeVariant,
  turnpikeName,
  UDP_IO,
  type UdpIo,
} from "./servers.js";

/** What the bench starts for one column. */
export type Target =
  | ({ kind: "turnpike" } & TurnpikeVariant)
  | { kind: "coturn" }
  | { kind: "external" }
  | { kind: "floor"; udpIo: UdpIo }
  | { kind: "no-relay" };

/** A comma-separated list of `allowed` words, in the order given, without repeats. */
function parseList<T extends string>(text: string, allowed: readonly T[], error: string): T[] {
  const list: T[] = [];
  for (const part of text.split(",")) {
    const word = part.trim() as T;
    if (!allowed.includes(word)) throw new Error(`${error}, got "${text}"`);
    if (!list.includes(word)) list.push(word);
  }
  return list;
}

/** "1", "2" or a list of worker counts (1,2), in the order given, without repeats. */
function parseWorkersList(text: string): number[] {
  const list: number[] = [];
  for (const part of text.split(",")) {
    const n = Number(part.trim());
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new Error(`--workers wants a worker count or a list of them (1,2), got "${text}"`);
    }
    if (!list.includes(n)) list.push(n);
  }
  return list;
}

/** The column a target fills (for rows that could not start). */
export function targetName(t: Target): string {
  if (t.kind === "floor") return `floor (${t.udpIo})`;
  if (t.kind === "turnpike") return turnpikeName(t);
  if (t.kind === "no-relay") return "no relay";
  return t.kind;
}

/** The command line (parsed the same way by the outer process and, under root, the inner). */
export function parseArgs() {
  return yargs(hideBin(process.argv))
    .scriptName("turnpike-bench")
    .usage(
      "$0 [scenario...] [options]\n\nScenarios: relay, allocations, churn, tunnel, micro.\nDefault: relay allocations churn tunnel.",
    )
    .option("server", {
      choices: ["turnpike", "coturn", "both"] as const,
      default: "both" as const,
      describe: "which relay(s) the bench starts on loopback",
    })
    .option("external", {
      type: "string",
      describe: "measure a relay already running at HOST:PORT (token from TURNPIKE_TOKEN)",
    })
    .option("quick", {
      type: "boolean",
      default: false,
      describe: "every scenario briefly (< 60 s in all)",
    })
    .option("json", { type: "string", describe: "write every figure and the machine info to FILE" })
    .option("out", {
      type: "string",
      default: "bench/results",
      describe: "directory for the HTML report",
    })
    .option("duration", {
      type: "number",
      describe: "seconds of load per scenario (per ramp step); default 10, --quick 2",
    })
    .option("allocations", {
      type: "number",
      describe: "allocations (relay 100, allocations 10000/--quick 1000, churn clients 64/16)",
    })
    .option("rate", { type: "number", default: 20000, describe: "offered packets/s (relay)" })
    .option("size", { type: "number", default: 100, describe: "payload bytes per packet (>= 16)" })
    .option("transport", {
      choices: ["udp", "tcp"] as const,
      default: "udp" as const,
      describe: "client <-> relay transport",
    })
    .option("mode", {
      choices: ["channel", "send"] as const,
      default: "channel" as const,
      describe: "ChannelData or Send/Data indications",
    })
    .option("ramp", {
      type: "boolean",
      default: false,
      describe: "relay: raise the rate until loss >= 0.1 %",
    })
    .option("coturn-threads", {
      type: "number",
      describe:
        "coturn --relay-threads (default: coturn's own default, one per CPU; 0 = single-threaded)",
    })
    .option("min-port", {
      type: "number",
      default: 49152,
      describe: "relay port range start (both servers)",
    })
    .option("max-port", {
      type: "number",
      default: 65535,
      describe: "relay port range end (both servers)",
    })
    .option("udp-io", {
      type: "string",
      describe:
        "Turnpike's UDP data path: batch or dgram, or a list (batch,dgram) for one Turnpike column each; default: the relay's own choice (auto)",
    })
    .option("workers", {
      type: "string",
      describe:
        "Turnpike's worker threads: a count, or a list (1,2) for one Turnpike column each; default: the relay's own (auto = 1 up to two cores, else cores - 1)",
    })
    .option("kernel-path", {
      type: "string",
      describe:
        "Turnpike's kernel data path: off or tc, or a list (off,tc) for one Turnpike column each, passed as --kernel-path; default: not passed",
    })
    .option("floor", {
      type: "string",
      default: "auto",
      describe:
        "relay: floor columns: batch, dgram (userspace forwarders), no-relay (generator <-> echo peer directly), a list, or none; auto = a forwarder per Turnpike I/O plus no-relay",
    })
    .option("generator", {
      choices: GENERATOR_KINDS,
      default: "native" as GeneratorKind,
      describe:
        "relay, allocations, churn: the load and setup generators: native (C, bench/native: UDP ChannelData; TURN setups over UDP) or js (the bench process)",
    })
    .option("netns", {
      choices: ["auto", "off"] as const,
      default: "auto" as const,
      describe:
        "auto: as root, run everything in a private network namespace deleted at the end; off: the host's loopback",
    })
    .strictOptions()
    .help()
    .parse();
}

export type Args = Awaited<ReturnType<typeof parseArgs>>;

/** What a run does: every option checked and resolved, before anything starts. */
export interface Plan {
  argv: Args;
  /** `micro` asked (it runs first, on its own) */
  micro: boolean;
  /** the scenarios besides micro, in order */
  chosen: string[];
  opts: BenchOptions;
  base: ServerSettings;
  relays: Target[];
  floors: Target[];
  /** the relays the tunnel scenario goes through: the first target of each kind */
  kinds: ("turnpike" | "coturn" | "external")[];
}

/**
 * The relay port range both servers get: a valid range clear of the bench's own local ports.
 * One that overlapped them was measured to cost Turnpike 40-50 % of its setups/s (an EADDRINUSE
 * and a retry for more than one setup in two) and to stall coturn's setups altogether: a figure
 * of the bench's making, not the server's.
 */
export function checkRelayPortRange(min: number, max: number): void {
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max > 65535 || min > max) {
    throw new Error(`--min-port/--max-port want 1 <= min <= max <= 65535, got ${min}-${max}`);
  }
  const { first, last } = BENCH_LOCAL_PORTS;
  if (min <= last && first <= max) {
    throw new Error(
      `--min-port/--max-port ${min}-${max} overlaps the bench's own local ports ${first}-${last} (its generators and services): pick a relay range outside them`,
    );
  }
}

/** Checks and resolves the command line; throws a one-line error naming the option. */
export function plan(argv: Args): Plan {
  const names = argv._.map(String);
  const list = names.filter((n) => n !== "micro");
  const chosen = list.length ? list : defaultScenarios;
  for (const n of chosen) {
    if (!scenarios[n] && n !== "tunnel")
      throw new Error(`unknown scenario "${n}" (relay, allocations, churn, tunnel, micro)`);
  }
  const ioList = (text: string, flag: string) =>
    parseList(text, UDP_IO, `${flag} wants batch, dgram or a list of them (batch,dgram)`);
  const udpIo = argv["udp-io"] === undefined ? [] : ioList(argv["udp-io"], "--udp-io");
  const workers = argv.workers === undefined ? [] : parseWorkersList(argv.workers);
  const kernelPath =
    argv["kernel-path"] === undefined
      ? []
      : parseList(
          argv["kernel-path"],
          KERNEL_PATHS,
          "--kernel-path wants off, tc or a list of them (off,tc)",
        );
  checkRelayPortRange(argv["min-port"], argv["max-port"]);
  const measuresTurnpike = !argv.external && argv.server !== "coturn";
  if (kernelPath.length > 0 && !measuresTurnpike) {
    throw new Error(
      "--kernel-path sets Turnpike's kernel data path: use it with --server turnpike or both",
    );
  }
  if (workers.length > 0 && !measuresTurnpike) {
    throw new Error(
      "--workers sets Turnpike's worker threads: use it with --server turnpike or both",
    );
  }
  if (udpIo.length > 0 && !measuresTurnpike) {
    throw new Error("--udp-io picks Turnpike's data path: use it with --server turnpike or both");
  }
  // --floor auto: one forwarder per Turnpike I/O, and no relay (the round trip's floor) next
  // to any relay the bench starts itself.
  const turnpikePaths = !measuresTurnpike ? [] : udpIo.length > 0 ? udpIo : [defaultUdpIo()];
  const floor: FloorKind[] =
    argv.floor === "none"
      ? []
      : argv.floor === "auto"
        ? [...turnpikePaths, ...(argv.external ? [] : ["no-relay" as const])]
        : parseList<FloorKind>(
            argv.floor,
            [...UDP_IO, "no-relay"],
            "--floor wants batch, dgram, no-relay, a list of them, auto or none",
          );
  // The native generator, unless it cannot run here (then the JavaScript one, and the report
  // says why).
  const generatorFallback =
    argv.generator === "native" && chosen.some((c) => ["relay", "allocations", "churn"].includes(c))
      ? nativeUnavailable()
      : undefined;
  const generator: GeneratorKind = generatorFallback ? "js" : argv.generator;
  const opts: BenchOptions = {
    quick: argv.quick,
    duration: argv.duration ?? (argv.quick ? 2 : 10),
    allocations: argv.allocations,
    rate: argv.rate,
    size: Math.max(16, argv.size),
    transport: argv.transport,
    mode: argv.mode,
    ramp: argv.ramp,
    udpIo,
    workers,
    kernelPath,
    floor,
    generator,
    ...(generatorFallback ? { generatorFallback } : {}),
  };
  const base: ServerSettings = {
    ...defaultSettings(),
    minPort: argv["min-port"],
    maxPort: argv["max-port"],
    coturnThreads: argv["coturn-threads"],
  };
  // One Turnpike column per (UDP path, worker count, kernel path) asked for.
  const each = <T>(list: T[]) => (list.length > 0 ? list : [undefined]);
  const turnpikes: Target[] = each(udpIo).flatMap((io) =>
    each(workers).flatMap((n) =>
      each<KernelPath>(kernelPath).map(
        (kp): Target => ({ kind: "turnpike", udpIo: io, workers: n, kernelPath: kp }),
      ),
    ),
  );
  const relays: Target[] = argv.external
    ? [{ kind: "external" }]
    : argv.server === "both"
      ? [...turnpikes, { kind: "coturn" }]
      : argv.server === "turnpike"
        ? turnpikes
        : [{ kind: "coturn" }];
  const floors: Target[] = floor.map((f) =>
    f === "no-relay" ? { kind: "no-relay" } : { kind: "floor", udpIo: f },
  );
  // The tunnel carries TCP only (RFC 6062 on both sides of the relay): one Turnpike path,
  // the first asked, is enough there.
  const kinds = [...new Set(relays.map((t) => t.kind))] as ("turnpike" | "coturn" | "external")[];
  return {
    argv,
    micro: names.includes("micro"),
    chosen: names.length === 1 && names[0] === "micro" ? [] : chosen,
    opts,
    base,
    relays,
    floors,
    kinds,
  };
}
