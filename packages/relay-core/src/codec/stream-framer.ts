/**
 * Splits a TCP/TLS byte stream into STUN messages and ChannelData frames (RFC 8656 §12.5,
 * RFC 8489 §6.2.2), across arbitrary partial reads.
 *
 * Zero-copy when a frame lies inside one chunk (the usual case): the frame is a subarray of it.
 * Only a frame split across reads is copied into a buffer of exactly its size. At most one
 * frame is ever buffered (<= 65,559 bytes), so a slow or hostile sender cannot make us hold
 * more than that (the bound h11 keeps for incomplete input).
 */
import { HEADER_LENGTH } from "./constants.js";

export type StreamFrameKind = "stun" | "channel-data";

export type StreamFramerError = "invalid-frame";

/** The largest frame: a STUN header plus a 65,535-byte body; ChannelData 4 + 65,535 + 1 padding. */
export const MAX_STREAM_FRAME = HEADER_LENGTH + 0xffff;

export class StreamFramer {
  private chunk: Uint8Array = EMPTY;
  private pos = 0;
  /** A frame being assembled across chunks. */
  private partial: Uint8Array | undefined;
  private partialFilled = 0;
  /** How many bytes of the frame are the frame proper (the rest is ChannelData padding). */
  private partialFrameLength = 0;
  private header = new Uint8Array(4);
  private headerFilled = 0;
  /** Set once the stream carries something that is neither STUN nor ChannelData: close it. */
  error: StreamFramerError | undefined;

  /** Feed the next chunk read from the socket. Call `next()` until it returns undefined. */
  push(chunk: Uint8Array): void {
    // Once the stream is broken nothing more is framed, and a runtime that drained with
    // `next()` (which answers undefined from then on) must not be thrown at for reading on.
    if (this.error) return;
    if (this.pos < this.chunk.length) {
      throw new Error("StreamFramer.push called before the previous chunk was drained");
    }
    this.chunk = chunk;
    this.pos = 0;
  }

  /** The next complete frame (header included, padding excluded), or undefined for "need more". */
  next(): Uint8Array | undefined {
    if (this.error) return undefined;
    if (this.partial) return this.continuePartial();
    const available = this.chunk.length - this.pos;
    if (available === 0) return undefined;
    if (this.headerFilled > 0 || available < 4) return this.collectHeader();
    const c = this.chunk;
    const p = this.pos;
    const sizes = frameSizes(c[p]!, c[p + 2]!, c[p + 3]!);
    if (!sizes) return this.fail();
    const [frameLength, totalLength] = sizes;
    if (available >= totalLength) {
      this.pos = p + totalLength;
      return c.subarray(p, p + frameLength);
    }
    this.startPartial(frameLength, totalLength);
    this.partial!.set(c.subarray(p), 0);
    this.partialFilled = available;
    this.pos = c.length;
    return undefined;
  }

  /**
   * Stop framing and hand back every byte received but not yet returned as a frame. RFC 6062
   * §5.4: once ConnectionBind succeeds the connection carries raw peer data, which may already
   * sit behind the request in the same read.
   */
  takeRemaining(): Uint8Array {
    const parts: Uint8Array[] = [];
    if (this.partial) parts.push(this.partial.subarray(0, this.partialFilled));
    else if (this.headerFilled > 0) parts.push(this.header.slice(0, this.headerFilled));
    if (this.pos < this.chunk.length) parts.push(this.chunk.subarray(this.pos));
    this.partial = undefined;
    this.partialFilled = 0;
    this.headerFilled = 0;
    this.chunk = EMPTY;
    this.pos = 0;
    if (parts.length === 1) return parts[0]!;
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Bytes held for an incomplete frame: what an idle-timeout or memory check may look at. */
  get bufferedBytes(): number {
    return this.partial ? this.partialFilled : this.headerFilled;
  }

  private collectHeader(): Uint8Array | undefined {
    while (this.headerFilled < 4 && this.pos < this.chunk.length) {
      this.header[this.headerFilled++] = this.chunk[this.pos++]!;
    }
    if (this.headerFilled < 4) return undefined;
    const h = this.header;
    const sizes = frameSizes(h[0]!, h[2]!, h[3]!);
    this.headerFilled = 0;
    if (!sizes) return this.fail();
    this.startPartial(sizes[0], sizes[1]);
    this.partial!.set(h, 0);
    this.partialFilled = 4;
    return this.continuePartial();
  }

  private startPartial(frameLength: number, totalLength: number): void {
    this.partial = new Uint8Array(totalLength);
    this.partialFrameLength = frameLength;
  }

  private continuePartial(): Uint8Array | undefined {
    const frame = this.partial!;
    const take = Math.min(frame.length - this.partialFilled, this.chunk.length - this.pos);
    frame.set(this.chunk.subarray(this.pos, this.pos + take), this.partialFilled);
    this.partialFilled += take;
    this.pos += take;
    if (this.partialFilled < frame.length) return undefined;
    this.partial = undefined;
    this.partialFilled = 0;
    return frame.subarray(0, this.partialFrameLength);
  }

  private fail(): undefined {
    this.error = "invalid-frame";
    this.chunk = EMPTY;
    this.pos = 0;
    this.partial = undefined;
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
