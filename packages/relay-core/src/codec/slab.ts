// Memory for the messages StunMessageBuilder writes: views carved from a shared 16 KiB slab
// instead of one ArrayBuffer per message.
//
// Why: every response is a message of ~100 bytes, and a fresh ArrayBuffer costs a malloc, a
// backing store V8 tracks and sweeps, and external-memory accounting that brings garbage
// collections forward; measured on the bench's setup path these were a visible share of a
// request (bench/README.md, "Setup and churn profile"). Node's own Buffer pool does the same.
//
// A builder takes a view of its capacity and gives back what it did not use when it builds
// (only when it was the last one taken, so views never overlap). A message that is kept
// holds its slab: the response cache (RFC 8489 §6.3.1) keeps ~40 s of responses, written one
// after another, so the slabs they hold are the bytes they hold, rounded up to one slab.

const SLAB_BYTES = 16 * 1024;
/** Larger messages (Data indications with big payloads) get a buffer of their own. */
const MAX_FROM_SLAB = 2048;
/** Views start 8-byte aligned, as Node's Buffer pool keeps them. */
const ALIGN = 8;

let slab = new ArrayBuffer(SLAB_BYTES);
let used = 0;

/** `size` writable bytes (their content unspecified: the builder writes every byte it uses). */
export function takeBytes(size: number): Uint8Array {
  if (size > MAX_FROM_SLAB) return new Uint8Array(size);
  if (used + size > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    used = 0;
  }
  const view = new Uint8Array(slab, used, size);
  used = align(used + size);
  return view;
}

/** The view keeps only its first `keep` bytes: the rest goes back to the slab if it can. */
export function keepBytes(view: Uint8Array, keep: number): void {
  if (view.buffer === slab && align(view.byteOffset + view.length) === used) {
    used = align(view.byteOffset + keep);
  }
}

function align(n: number): number {
  return (n + ALIGN - 1) & ~(ALIGN - 1);
}
