// Who sets allocations up for the allocations and churn scenarios: the native setup generator
// (bench/native/turnpike-setupgen.c, its own process) where asked and where it fits (UDP to an
// IPv4 relay), else the bench's JavaScript TURN client in the bench process. Both send the same
// requests; what differs is what they cost, and so whether setups/s measures the relay or them.
import type { GeneratorKind } from "../load/generator.js";
import { NativeSetupGenerator } from "../load/native-setup.js";
import { TurnLoadClient } from "../load/turn-load-client.js";
import { cpuMicros } from "../proc.js";
import { SATURATION } from "./relay-metrics.js";
import { closeAll, type OpenedAllocation, openAllocations } from "./setup.js";
import type { ScenarioContext } from "./types.js";

/** A run of setups or churn cycles, with the generator's own CPU over it. */
export interface GeneratorRun {
  /** setups opened, or churn cycles completed */
  done: number;
  failures: number;
  firstError: string | undefined;
  elapsedMs: number;
  generatorCpuMicros: number;
}

export interface OpenRun {
  count: number;
  userPrefix: string;
  /** a warm-up: each allocation is deleted (Refresh 0) once set up, so none holds a port */
  deleteEach?: boolean;
  onProgress?: (done: number) => void;
}

export interface ChurnRun {
  workers: number;
  seconds: number;
  /** a warm-up of this many cycles per worker (bounded at 30 s), or 0: cycles until `seconds` */
  warmUpCycles: number;
  onProgress?: (cycles: number) => void;
}

export interface SetupGenerator {
  readonly kind: GeneratorKind;
  /** what ran, for the scenario's notes */
  readonly note: string;
  /** the label of the generator CPU row: whose CPU it is */
  readonly cpuLabel: string;
  /** Allocate + CreatePermission + ChannelBind to `peer`, 64 in flight; all kept open. */
  open(o: OpenRun): Promise<GeneratorRun>;
  /**
   * Deletes every allocation open() kept (Refresh 0), 64 at a time, and closes their sockets:
   * the allocations scenario's rounds start from the same state.
   */
  deleteAll(): Promise<GeneratorRun>;
  /** Closes every allocation open() kept open (the relay lets them expire). */
  closeAll(): Promise<void>;
  churn(o: ChurnRun): Promise<GeneratorRun>;
  stop(): Promise<void>;
}

/** 64 setups in flight: as many as the JavaScript generator has always run. */
export const CONCURRENCY = 64;
/** A fixed peer address: permissions and channels need not reach anything here. */
export const SETUP_PEER = { address: "127.0.0.1", port: 9 };

/** The generator for this column, and why when it is not the one asked for. */
export function setupGenerator(ctx: ScenarioContext): SetupGenerator {
  const { opts, server } = ctx;
  if (opts.generator === "native" && !opts.generatorFallback) {
    const unfit = NativeSetupGenerator.unfit(opts.transport, server.host);
    if (!unfit) return new NativeSetups(NativeSetupGenerator.start(server));
    return new JsSetups(ctx, `; ${unfit}`);
  }
  const why = opts.generatorFallback
    ? `; the native generator is not available: ${opts.generatorFallback}`
    : "";
  return new JsSetups(ctx, why);
}

/**
 * What limited a rate: a generator near a whole core (SATURATION, as in the relay scenario) is
 * the limit, and then the figure is a lower bound for the server. Otherwise the server is: its
 * CPU, or, when it is not busy either, the round trips of the setups in flight (and a machine
 * the two share).
 */
export function limitNote(
  gen: SetupGenerator,
  run: GeneratorRun,
  serverCore: number | null,
): string {
  const g = (100 * run.generatorCpuMicros) / (run.elapsedMs * 1000);
  const s = serverCore === null ? "" : `, the server ${serverCore.toFixed(0)} % of a core`;
  if (g / 100 > SATURATION)
    return `limited by the generator (${gen.kind}): it used ${g.toFixed(0)} % of a core${s}; the rate is a lower bound for the server`;
  // Below saturation a busy generator still answers late: with a fixed number in flight its
  // queueing lengthens every round trip (the JavaScript one at 68 % of a core halved coturn's
  // setups/s against the native one at 31 %, bench/README "The setup generator").
  const busy =
    g >= 50 ? "; a generator this busy still adds its own queueing to every round trip" : "";
  return `not limited by the generator (${gen.kind}: ${g.toFixed(0)} % of a core${s}): the server's answers (its CPU, or the round trips of the ${CONCURRENCY} in flight) set the rate${busy}`;
}

class NativeSetups implements SetupGenerator {
  readonly kind = "native";
  readonly note =
    "generator: native (turnpike-setupgen: its own process, one UDP socket per setup on one epoll, the same requests as the JavaScript client)";
  readonly cpuLabel = "generator CPU (turnpike-setupgen, % of one core)";

  constructor(private readonly gen: NativeSetupGenerator) {}

  async open(o: OpenRun): Promise<GeneratorRun> {
    const r = await this.gen.open({
      count: o.count,
      concurrency: CONCURRENCY,
      userPrefix: o.userPrefix,
      bind: true,
      peer: SETUP_PEER,
      // Bounded in time too: no new setup starts after this (a relay slower than 50/s).
      boundSeconds: Math.max(60, o.count / 50),
      deleteEach: o.deleteEach ?? false,
      ...(o.onProgress ? { onProgress: (done: number) => o.onProgress?.(done) } : {}),
    });
    return { ...r, generatorCpuMicros: r.cpuMicros };
  }

  async deleteAll(): Promise<GeneratorRun> {
    const r = await this.gen.deleteAll({ concurrency: CONCURRENCY, boundSeconds: 120 });
    return { ...r, generatorCpuMicros: r.cpuMicros };
  }

  async closeAll(): Promise<void> {
    await this.gen.closeAll();
  }

  async churn(o: ChurnRun): Promise<GeneratorRun> {
    const r = await this.gen.churn({
      workers: o.workers,
      // A warm-up is bounded at 30 s.
      seconds: o.warmUpCycles > 0 ? 30 : o.seconds,
      cyclesPerWorker: o.warmUpCycles,
      userPrefix: "churn",
      ...(o.onProgress ? { onProgress: (done: number) => o.onProgress?.(done) } : {}),
    });
    return { ...r, generatorCpuMicros: r.cpuMicros };
  }

  async stop(): Promise<void> {
    await this.gen.stop();
  }
}

/** The bench's JavaScript TURN client, in the bench process (its CPU is the bench's). */
class JsSetups implements SetupGenerator {
  readonly kind = "js";
  readonly note: string;
  readonly cpuLabel = "generator CPU (the bench process, % of one core)";
  private opened: OpenedAllocation[] = [];

  constructor(
    private readonly ctx: ScenarioContext,
    why: string,
  ) {
    this.note = `generator: JavaScript (TurnLoadClient in the bench process)${why}`;
  }

  async open(o: OpenRun): Promise<GeneratorRun> {
    const { opts, server } = this.ctx;
    const cpu0 = cpuMicros(process.pid) ?? 0;
    const r = await openAllocations({
      server,
      transport: opts.transport,
      count: o.count,
      peers: [SETUP_PEER],
      bind: true,
      concurrency: CONCURRENCY,
      userPrefix: o.userPrefix,
      stopOnError: false,
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
    if (o.deleteEach) {
      // RFC 8656 §7.3: lifetime 0 deletes. A warm-up's failures here do not matter.
      await Promise.all(r.opened.map((a) => a.client.refresh(0).catch(() => {})));
      await closeAll(r.opened);
    } else {
      this.opened.push(...r.opened);
    }
    const cpu1 = cpuMicros(process.pid) ?? 0;
    return {
      done: r.opened.length,
      failures: r.failures,
      firstError: r.firstError,
      elapsedMs: r.elapsedMs,
      generatorCpuMicros: cpu1 - cpu0,
    };
  }

  async deleteAll(): Promise<GeneratorRun> {
    const list = this.opened;
    this.opened = [];
    const cpu0 = cpuMicros(process.pid) ?? 0;
    const t0 = performance.now();
    let next = 0;
    let done = 0;
    let failures = 0;
    let firstError: string | undefined;
    const worker = async () => {
      for (let i = next++; i < list.length; i = next++) {
        try {
          await list[i]!.client.refresh(0); // RFC 8656 §7.3: lifetime 0 deletes
          done++;
        } catch (e) {
          failures++;
          firstError ??= e instanceof Error ? e.message : String(e);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, list.length) }, worker));
    await closeAll(list);
    return {
      done,
      failures,
      firstError,
      elapsedMs: performance.now() - t0,
      generatorCpuMicros: (cpuMicros(process.pid) ?? 0) - cpu0,
    };
  }

  async closeAll(): Promise<void> {
    const list = this.opened;
    this.opened = [];
    await closeAll(list);
  }

  async churn(o: ChurnRun): Promise<GeneratorRun> {
    const { opts, server } = this.ctx;
    const connect = (i: number) =>
      TurnLoadClient.connect({
        server: { address: server.host, port: server.port },
        transport: opts.transport,
        token: server.token,
        user: `churn${i}`,
      });
    const cpu0 = cpuMicros(process.pid) ?? 0;
    const t0 = performance.now();
    const deadline = t0 + (o.warmUpCycles > 0 ? 30_000 : o.seconds * 1000);
    let cycles = 0;
    let failures = 0;
    let firstError: string | undefined;
    // Each cycle uses a fresh client socket (a new 5-tuple), as a reconnecting client does:
    // coturn answers 437 (allocation mismatch) to a new Allocate on a 5-tuple whose
    // allocation was just deleted.
    const worker = async (i: number) => {
      let done = 0;
      while (performance.now() < deadline && (o.warmUpCycles === 0 || done < o.warmUpCycles)) {
        let c: TurnLoadClient | undefined;
        try {
          c = await connect(i);
          await c.allocate(600);
          await c.refresh(600);
          await c.refresh(0); // RFC 8656 §7.3: lifetime 0 deletes
          cycles++;
          done++;
          o.onProgress?.(cycles);
        } catch (e) {
          failures++;
          firstError ??= e instanceof Error ? e.message : String(e);
          await new Promise((r) => setTimeout(r, 20));
        } finally {
          await c?.close();
        }
      }
    };
    await Promise.all(Array.from({ length: o.workers }, (_, i) => worker(i)));
    const elapsedMs = performance.now() - t0;
    return {
      done: cycles,
      failures,
      firstError,
      elapsedMs,
      generatorCpuMicros: (cpuMicros(process.pid) ?? 0) - cpu0,
    };
  }

  async stop(): Promise<void> {
    await this.closeAll();
  }
}
