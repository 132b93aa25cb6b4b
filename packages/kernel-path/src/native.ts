// The loader addon (native/) and the BPF object, found next to this package's dist/. Loading
// never throws: a missing or broken part is a reason, said in one line, and so is an addon whose
// map layout (bpf/layout.h, handed over at load) differs from the one layout.ts compiles in.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { checkLayout } from "./layout.js";

/** The compiled BPF program (built at install with clang, or shipped in the npm tarball). */
export const OBJECT_PATH = fileURLToPath(new URL("../bpf/kernel_path.bpf.o", import.meta.url));

/** A handle of the addon (an external): the loaded program and maps, or a view of them. */
export type NativeHandle = object;

export interface NativeBinding {
  /** The map layout (bpf/layout.h), checked by checkLayout at load. */
  readonly layout: unknown;
  verify(objectPath: string, program: string): string | null;
  tcxSupport(ifindex: number): string | null;
  tcxPrograms(ifindex: number): number;
  open(
    objectPath: string,
    interfaces: readonly string[],
    xdp: boolean,
    maxBindings: number,
    maxBuckets: number,
  ): NativeHandle;
  attach(c2p: number, p2c: number, slots: number, buckets: number, stats: number): NativeHandle;
  fds(h: NativeHandle): number[];
  close(h: NativeHandle): void;
  bind(
    h: NativeHandle,
    family: number,
    client: string,
    clientPort: number,
    listener: string,
    listenerPort: number,
    channel: number,
    relayed: string,
    relayedPort: number,
    peer: string,
    peerPort: number,
    deadlineMs: number,
    bucket0: number,
    bucket1: number,
  ): number;
  setDeadline(h: NativeHandle, slot: number, deadlineMs: number): void;
  setBuckets(h: NativeHandle, slot: number, bucket0: number, bucket1: number): void;
  counters(h: NativeHandle, slot: number, out: Float64Array): void;
  unbind(h: NativeHandle, slot: number, out: Float64Array): boolean;
  liveSlots(h: NativeHandle): number[];
  stats(h: NativeHandle, out: Float64Array): void;
  setBucket(h: NativeHandle, bucket: number, bytesPerSecond: number, burstBytes: number): void;
  bucketDrops(h: NativeHandle, bucket: number, out: Float64Array): void;
  nowMs(): number;
  ifindex(name: string): number;
}

type Loaded =
  | { readonly ok: true; readonly binding: NativeBinding }
  | { readonly ok: false; readonly reason: string };
let loaded: Loaded | undefined;

/** Why require() of the addon failed, for an operator: not built, or libbpf missing. */
function loadFailure(err: NodeJS.ErrnoException): string {
  if (err.code === "MODULE_NOT_FOUND") {
    return "the loader addon was not built at install (it needs libbpf-dev and a C compiler; see the install log)";
  }
  const first = err.message.split("\n")[0] ?? "";
  return first.includes("libbpf")
    ? `the loader addon cannot load libbpf (install libbpf1): ${first}`
    : `the loader addon failed to load: ${first}`;
}

export function loadNative(): Loaded {
  if (loaded === undefined) {
    if (process.platform !== "linux") {
      loaded = { ok: false, reason: `${process.platform} is not Linux` };
    } else {
      try {
        const binding = createRequire(import.meta.url)(
          "../build/Release/kernel_path.node",
        ) as NativeBinding;
        const layout = checkLayout(binding.layout);
        loaded = layout.ok ? { ok: true, binding } : { ok: false, reason: layout.reason };
      } catch (err) {
        loaded = { ok: false, reason: loadFailure(err as NodeJS.ErrnoException) };
      }
    }
  }
  return loaded;
}

export function objectPresent(): boolean {
  return existsSync(OBJECT_PATH);
}
