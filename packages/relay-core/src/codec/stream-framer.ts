/**
 * Splits a TCP/TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5,
 * RFC 8489 §6.2.2), across arbitrary partial reads.
 *
 * Zero-copy when a frame lies inside one chunk (the usual case): the frame is a subarray of it.
 * Only a frame split across reads is copied. At most one frame is ever buffered, and its buffer
 * grows with the bytes that actually arrived (doubling, up to the frame's size): a 4-byte header
 * claiming 65 KB followed by silence costs a few hundred bytes, not 65 KB. `maxFrameLength`
 * caps the frames a connection may send at all: the runtime keeps it small until the
 * connection has authenticated (h11 likewise caps how much incomplete input it buffers).
 */
import { HEADER_LENGTH } from "./constants.js";

export type StreamFrameKind = "stun" | "channel-data";

/** "invalid-frame": neither STUN nor ChannelData; "oversized-frame": over maxFrameLength. */
export type StreamFramerError = "invalid-frame" | "oversized-frame";

/** The largest frame: a STUN header plus a 65,535-byte body; ChannelData 4 + 65,535 + 1 padding. */
export const MAX_STREAM_FRAME = HEADER_LENGTH + 0xffff;

/**
 * The largest frame worth accepting from a connection that has not authenticated: a Binding,
 * an Allocate or a ConnectionBind. Their variable parts are bounded by RFC 8489 §14: USERNAME
 * under 509 bytes, REALM, NONCE and SOFTWARE under 763 each, plus fixed-size attributes
 * (integrity, fingerprint, transport, lifetime, families, tokens) of a few hundred bytes in all.
 * ChannelData without an allocation is dropped anyway.
 */
export const MAX_UNAUTHENTICATED_STREAM_FRAME = 4096;

/** First buffer for a frame split across reads; it doubles as more of the frame arrives. */
const INITIAL_PARTIAL_CAPACITY = 256;

export class StreamFramer {
  /** Frames (header included, padding excluded) longer than this break the stream. */
  maxFrameLength: number;
  #chunk: Uint8Array = EMPTY;
  #pos = 0;
  /** A frame being assembled across chunks: `partialFilled` bytes of `partialTotal`. */
  #partial: Uint8Array | undefined;
  #partialFilled = 0;
  #partialTotal = 0;
  /** How many bytes of the frame are the frame proper (the rest is ChannelData padding). */
  #partialFrameLength = 0;
  #header = new Uint8Array(4);
  #headerFilled = 0;
  /** Set once the stream carries something that is neither STUN nor ChannelData: close it. */
  error: StreamFramerError | undefined;

  constructor(options: { maxFrameLength?: number } = {}) {
    this.maxFrameLength = options.maxFrameLength ?? MAX_STREAM_FRAME;
  }

  /** Feed the next chunk read from the socket. Call `next()` until it returns undefined. */
  push(chunk: Uint8Array): void {
    // Once the stream is broken nothing more is framed, and a runtime that drained with
    // `next()` (which answers undefined from then on) must not be thrown at for reading on.
    if (this.error) return;
    if (this.#pos < this.#chunk.length) {
      throw new Error("StreamFramer.push called before the previous chunk was drained");
    }
    this.#chunk = chunk;
    this.#pos = 0;
  }

  /** The next complete frame (header included, padding excluded), or undefined for "need more". */
  next(): Uint8Array | undefined {
    if (this.error) return undefined;
    if (this.#partial) return this.#continuePartial();
    const available = this.#chunk.length - this.#pos;
    if (available === 0) return undefined;
    if (this.#headerFilled > 0 || available < 4) return this.#collectHeader();
    const c = this.#chunk;
    const p = this.#pos;
    const sizes = frameSizes(c[p]!, c[p + 2]!, c[p + 3]!);
    if (!sizes) return this.#fail("invalid-frame");
    const [frameLength, totalLength] = sizes;
    if (frameLength > this.maxFrameLength) return this.#fail("oversized-frame");
    if (available >= totalLength) {
      this.#pos = p + totalLength;
      return c.subarray(p, p + frameLength);
    }
    this.#startPartial(frameLength, totalLength, available);
    this.#partial!.set(c.subarray(p), 0);
    this.#partialFilled = available;
    this.#pos = c.length;
    return undefined;
  }

  /**
   * Stop framing and hand back every byte received but not yet returned as a frame. RFC 6062
   * §5.4: once ConnectionBind succeeds the connection carries raw peer data, which may already
   * sit behind the request in the same read.
   */
  takeRemaining(): Uint8Array {
    const parts: Uint8Array[] = [];
    if (this.#partial) parts.push(this.#partial.subarray(0, this.#partialFilled));
    else if (this.#headerFilled > 0) parts.push(this.#header.slice(0, this.#headerFilled));
    if (this.#pos < this.#chunk.length) parts.push(this.#chunk.subarray(this.#pos));
    this.#partial = undefined;
    this.#partialFilled = 0;
    this.#headerFilled = 0;
    this.#chunk = EMPTY;
    this.#pos = 0;
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Bytes received for an incomplete frame: what an idle-timeout or memory check may look at. */
  get bufferedBytes(): number {
    return this.#partial ? this.#partialFilled : this.#headerFilled;
  }

  /** Bytes allocated for the incomplete frame: under twice bufferedBytes (or 256), never its claim. */
  get bufferCapacity(): number {
    return this.#partial ? this.#partial.length : 0;
  }

  #collectHeader(): Uint8Array | undefined {
    while (this.#headerFilled < 4 && this.#pos < this.#chunk.length) {
      this.#header[this.#headerFilled++] = this.#chunk[this.#pos++]!;
    }
    if (this.#headerFilled < 4) return undefined;
    const h = this.#header;
    const sizes = frameSizes(h[0]!, h[2]!, h[3]!);
    this.#headerFilled = 0;
    if (!sizes) return this.#fail("invalid-frame");
    if (sizes[0] > this.maxFrameLength) return this.#fail("oversized-frame");
    this.#startPartial(sizes[0], sizes[1], 4 + this.#chunk.length - this.#pos);
    this.#partial!.set(h, 0);
    this.#partialFilled = 4;
    return this.#continuePartial();
  }

  /** `arrived`: bytes of the frame at hand now; the buffer starts there, not at the claim. */
  #startPartial(frameLength: number, totalLength: number, arrived: number): void {
    const capacity = Math.min(totalLength, Math.max(INITIAL_PARTIAL_CAPACITY, arrived));
    this.#partial = new Uint8Array(capacity);
    this.#partialTotal = totalLength;
    this.#partialFrameLength = frameLength;
  }

  #continuePartial(): Uint8Array | undefined {
    const take = Math.min(this.#partialTotal - this.#partialFilled, this.#chunk.length - this.#pos);
    const needed = this.#partialFilled + take;
    let frame = this.#partial!;
    if (needed > frame.length) {
      // Double (at least to what is needed now), never past the frame's size: the buffer
      // that completes the frame is exactly its size.
      const grown = new Uint8Array(
        Math.min(this.#partialTotal, Math.max(needed, frame.length * 2)),
      );
      grown.set(frame.subarray(0, this.#partialFilled), 0);
      frame = grown;
      this.#partial = grown;
    }
    frame.set(this.#chunk.subarray(this.#pos, this.#pos + take), this.#partialFilled);
    this.#partialFilled = needed;
    this.#pos += take;
    if (this.#partialFilled < this.#partialTotal) return undefined;
    this.#partial = undefined;
    this.#partialFilled = 0;
    return frame.subarray(0, this.#partialFrameLength);
  }

  #fail(error: StreamFramerError): undefined {
    this.error = error;
    this.#chunk = EMPTY;
    this.#pos = 0;
    this.#partial = undefined;
    return undefined;
  }
}

const EMPTY = new Uint8Array(0);

/** [frame length, frame length with stream padding], or undefined when the bytes are neither. */
function frameSizes(b0: number, b2: number, b3: number): [number, number] | undefined {
  const top = b0 & 0xc0;
  const length = (b2 << 8) | b3;
  if (top === 0x00) {
    // STUN: the length is already a multiple of 4 (RFC 8489 §5).
    if (length % 4 !== 0) return undefined;
    return [HEADER_LENGTH + length, HEADER_LENGTH + length];
  }
  if (top === 0x40) {
    // ChannelData over a stream is padded to a multiple of 4 (RFC 8656 §12.5).
    return [4 + length, 4 + ((length + 3) & ~3)];
  }
  return undefined;
}
